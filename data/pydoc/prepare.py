"""
The offline default corpus: documentation that ships inside every CPython install, so the quickstart
needs no download. ~1.9 M characters on CPython 3.11:
  - pydoc_data.topics: the language reference topics `help()` shows (~0.46 M chars)
  - the docstrings of the standard library's modules, classes and functions (read with ast, nothing imported)
Each topic and each docstring is one document. Character-level by default (a small vocabulary trains fast
on CPU); --tokenizer=gpt2 or gpt-neox-20b for BPE.
  python data/pydoc/prepare.py            # -> data/pydoc/{train,val}.bin, meta.json
"""
import ast
import os
import sys
import sysconfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.prepare import char_alphabet, write_dataset  # noqa: E402
from data.tokenizer import get_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = os.path.dirname(os.path.abspath(__file__))
tokenizer = 'char'        # 'char' | 'gpt2' | 'gpt-neox-20b'
tokenizer_path = None
val_fraction = 0.05       # every 20th document is validation
docstrings = True         # add the stdlib docstrings to the pydoc topics
min_doc_chars = 80        # skip one-line docstrings
num_proc = 1              # the corpus is small: a worker pool costs more than it saves
# -----------------------------------------------------------------------------
from configurator import configure, fail, between, one_of, positive, non_negative  # noqa: E402
configure(globals(), rules=dict(tokenizer=one_of('char', 'gpt2', 'gpt-neox-20b'),
                                val_fraction=between(0, 1, lo_open=True, hi_open=True),
                                min_doc_chars=non_negative, num_proc=positive))


def stdlib_docstrings():
    root = sysconfig.get_paths()['stdlib']
    skip = {'test', 'tests', 'idlelib', 'site-packages', 'dist-packages', '__pycache__', 'lib2to3', 'turtledemo'}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)  # sorted: the same corpus on every run
        for fn in sorted(filenames):
            if not fn.endswith('.py'):
                continue
            try:
                with open(os.path.join(dirpath, fn), encoding='utf-8') as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= min_doc_chars:
                        yield doc


from pydoc_data.topics import topics  # noqa: E402
docs = [topics[k] for k in sorted(topics)]
if docstrings:
    docs += list(stdlib_docstrings())
chars = char_alphabet(docs) if tokenizer == 'char' else None
try:
    tok = get_tokenizer(tokenizer, path=tokenizer_path, chars=chars)
    write_dataset(out_dir, docs, tok, source=f'pydoc_data.topics{" + stdlib docstrings" if docstrings else ""} '
                  f'(Python {sys.version.split()[0]})', val_fraction=val_fraction, num_proc=num_proc)
except (OSError, ValueError) as e:
    fail(e)
