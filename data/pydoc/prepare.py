"""
The offline default corpus, in every CPython install (~1.9 M characters on 3.11): the language reference topics help()
shows (pydoc_data.topics) and the standard library's docstrings (read with ast, nothing imported), a document each.
Character-level by default: a small vocabulary trains fast on a CPU.
  python data/pydoc/prepare.py            # -> data/pydoc/{train,val}.bin, meta.json
"""
import ast
import os
import sys
import sysconfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.prepare import char_alphabet, write_dataset  # noqa: E402
from data.tokenizer import TOKENIZERS, get_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = os.path.dirname(os.path.abspath(__file__))  # where the dataset is written
overwrite = False         # True: replace the dataset already in out_dir
tokenizer = 'char'        # 'char' | 'gpt2' | 'gpt-neox-20b'
tokenizer_path = None     # a local tokenizer.json for gpt-neox-20b
val_fraction = 0.05       # every 20th document is validation
docstrings = True         # add the standard library's docstrings to the pydoc topics
min_doc_chars = 80        # skip shorter docstrings
# -----------------------------------------------------------------------------
from configurator import between, configure, fail, non_negative, one_of  # noqa: E402
configure(globals(), rules=dict(tokenizer=one_of(*TOKENIZERS), val_fraction=between(0, 1, lo_open=True, hi_open=True),
                                min_doc_chars=non_negative))


def stdlib_docstrings():
    skip = {'test', 'tests', 'idlelib', 'site-packages', 'dist-packages', '__pycache__', 'lib2to3', 'turtledemo'}
    for root, dirs, names in os.walk(sysconfig.get_paths()['stdlib']):
        dirs[:] = sorted(d for d in dirs if d not in skip)  # sorted: the same corpus on every run
        for name in sorted(n for n in names if n.endswith('.py')):
            try:
                with open(os.path.join(root, name), encoding='utf-8') as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= min_doc_chars:
                        yield doc


from pydoc_data.topics import topics  # noqa: E402
docs = [topics[k] for k in sorted(topics)] + (list(stdlib_docstrings()) if docstrings else [])
try:
    write_dataset(out_dir, docs, get_tokenizer(tokenizer, tokenizer_path, char_alphabet(docs)), num_proc=1,
                  source=f"pydoc_data.topics{' + stdlib docstrings' if docstrings else ''} (Python "
                  f"{sys.version.split()[0]})", val_fraction=val_fraction, overwrite=overwrite)
except (OSError, ValueError) as e:
    fail(e)
