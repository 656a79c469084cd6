"""Tokenize a corpus into out_dir/train.bin, val.bin (test.bin): token ids back to back, each document ending with
end-of-text (uint16 below 65536 ids, else uint32), then meta.json, which marks a complete dataset (only --overwrite=True
replaces one). input: 'pydoc', or comma-separated paths or globs of *.txt (a document each), *.jsonl[.gz|.xz] (one a
line) and *.parquet. Val: val_input, or every round(1/val_fraction)-th document; test_fraction of those go to test.bin.
  python data/prepare.py --input='../shared/data/enwiki/enwiki_train_*.jsonl.xz' --out_dir=data/enwiki"""
import ast
import contextlib
import gzip
import itertools
import json
import lzma
import os
import sys
import sysconfig
from glob import glob
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import configurator  # noqa: E402,F401  (first: from here on Ctrl-C is one line and status 130)
import files  # noqa: E402
from data.tokenizer import TOKENIZERS, get_tokenizer  # noqa: E402


def iter_documents(spec, text_key='text'):
    """The documents (str) of local files in order, or the pydoc corpus (offline in every CPython, ~1.9 M characters:
    the topics help() shows, then the stdlib's docstrings read by ast). A bad file: one line naming it and the line."""
    if spec == 'pydoc':
        from pydoc_data.topics import topics
        yield from (topics[k] for k in sorted(topics))
        skip = {'test', 'tests', 'idlelib', 'site-packages', 'dist-packages', '__pycache__', 'lib2to3', 'turtledemo'}
        for root, dirs, names in os.walk(sysconfig.get_paths()['stdlib']):
            dirs[:] = sorted(d for d in dirs if d not in skip)
            for name in sorted(n for n in names if n.endswith('.py')):
                try:
                    tree = ast.parse(Path(root, name).read_text(encoding='utf-8'))
                except (SyntaxError, UnicodeDecodeError, ValueError):
                    continue
                yield from (d for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                            ast.AsyncFunctionDef)) and len(d := ast.get_docstring(node) or '') >= 80)
        return
    for p in (p for part in spec.split(',') for p in sorted(glob(os.path.expanduser(part))) or [part]):
        n = 0
        try:
            if p.endswith('.txt'):
                yield Path(p).read_text(encoding='utf-8')
            elif p.endswith('.parquet'):
                import pyarrow.parquet as pq
                for batch in pq.ParquetFile(p).iter_batches(columns=[text_key]):
                    yield from batch.column(0).to_pylist()
            elif not p.endswith(('.jsonl', '.jsonl.gz', '.jsonl.xz')):
                raise ValueError("is not a .txt, .jsonl[.gz|.xz] or .parquet file")
            else:
                with {'.gz': gzip.open, '.xz': lzma.open}.get(p[-3:], open)(p, 'rt', encoding='utf-8') as f:
                    for n, line in ((n, line) for n, line in enumerate(f, 1) if line.strip()):
                        row = json.loads(line)
                        if not isinstance(row, dict) or text_key not in row:
                            raise ValueError(f"has no field {text_key!r} (it has: " + (', '.join(row) if isinstance(
                                row, dict) else type(row).__name__) + "); pass --text_key=...")
                        if not isinstance(row[text_key], str):
                            raise ValueError(f"has field {text_key!r} of {type(row[text_key]).__name__}, not text")
                        yield row[text_key]
        except Exception as e:  # our own ValueErrors say what is wrong; the rest by their kind
            why = str(e) if type(e) is ValueError else next(w for kind, w in (
                (FileNotFoundError, 'matches no file'), (UnicodeDecodeError, 'is not UTF-8 text'),
                (json.JSONDecodeError, 'is not JSON lines'), (Exception, 'is unreadable, damaged or truncated'))
                if isinstance(e, kind)) + f" ({type(e).__name__}: {str(e)[:200]})"
            raise ValueError(f"{p}{f':{n}' if n else ''} {why}") from None


def write_dataset(out_dir, docs, tok, source, val_docs=None, val_fraction=0.005, num_proc=None, chunk_chars=1_000_000,
                  test_fraction=0.0, overwrite=False):
    """Tokenize docs with tok into out_dir (see the top). Val: val_docs, else document i where every(i, val_fraction);
    test: val document j where every(j, test_fraction). Written whole into a temporary folder in out_dir, then renamed
    in, meta.json last: a failure before that leaves out_dir as it was, one after it no dataset (no meta.json)."""
    why = f"{out_dir} holds a prepared dataset: pass --overwrite=True to replace it, or choose another out_dir" if \
        os.path.exists(os.path.join(out_dir, 'meta.json')) and not overwrite else files.check_dest(out_dir)
    if why:
        raise files.FileError(why)
    every = lambda i, f: int((i + 1) * f) > int(i * f)  # item i belongs to an evenly spread fraction f
    held = itertools.count()
    labelled = itertools.chain(((0, d) for d in docs), ((1, d) for d in val_docs)) if val_docs is not None else \
        ((int(every(i, val_fraction)), d) for i, d in enumerate(docs))
    # tokenized a batch at a time: the documents whose last character falls in the same chunk_chars of the stream
    chunks = ([sd for _, sd in g] for _, g in itertools.groupby(itertools.accumulate((
        (len(d), (2 if s == 1 and test_fraction and every(next(held), test_fraction) else s, d)) for s, d in labelled),
        lambda a, b: (a[0] + b[0], b[1])), lambda end_sd: (end_sd[0] - 1) // chunk_chars))
    names, dtype = ('train', 'val', 'test')[:3 if test_fraction else 2], 'uint16' if tok.vocab_size < 1 << 16 else \
        'uint32'
    counts = {f'{s}_{k}': 0 for s in names for k in ('tokens', 'docs')}
    path, made, replacing = lambda *parts: os.path.join(out_dir, *parts), not os.path.isdir(out_dir), False
    try:
        os.makedirs(tmp := path(f'.tmp{os.getpid()}'), exist_ok=True)
        with contextlib.ExitStack() as stack:
            outs = [stack.enter_context(open(os.path.join(tmp, f'{s}.bin'), 'wb')) for s in names]
            from tqdm import tqdm
            for chunk in tqdm(chunks, f'tokenizing ({tok.name})', unit=' chunks', disable=None):
                for (s, _), ids in zip(chunk, tok.encode_batch([d for _, d in chunk], num_proc)):
                    outs[s].write(np.array(ids + [tok.eot], dtype=dtype).tobytes())
                    counts[f'{names[s]}_tokens'] += len(ids) + 1
                    counts[f'{names[s]}_docs'] += 1
            for f in outs:
                f.flush(), os.fsync(f.fileno())
        if empty := [s for s in names if not counts[f'{s}_docs']]:
            raise ValueError(f"the {empty[0]} split came out empty ({counts}): pass more documents, a larger "
                             f"val_fraction or test_fraction, or a separate val_input")
        files.remove(path('meta.json'))  # the old dataset stops being one before its files change
        replacing = True  # from here a failure takes the new .bin files too
        for name in ('train.bin', 'val.bin', 'test.bin'):  # an old test.bin must not pass for this dataset's
            os.replace(new, path(name)) if os.path.exists(new := os.path.join(tmp, name)) else files.remove(path(name))
        files.write_json(path('meta.json'), meta := dict(tok.meta(), dtype=dtype, source=source, **counts))
        replacing = False
    except OSError as e:
        raise files.os_error(out_dir, e) from None
    finally:
        for p in [path(f'.tmp{os.getpid()}')] + [path(f'{s}.bin') for s in names if replacing]:
            files.remove(p)
        if made and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
    print(f"wrote {out_dir}: " + ', '.join(f"{counts[s + '_tokens']:,} {s} tokens ({counts[s + '_docs']:,} docs)"
                                           for s in names) + f", {dtype}")
    return meta


def char_alphabet(texts):
    return ''.join(sorted(set().union(*map(set, texts))))


if __name__ == '__main__':
    # -----------------------------------------------------------------------------
    input = None              # 'pydoc', or files: paths or globs, comma-separated
    val_input = None          # a separate validation source; None: val_fraction of the documents
    val_fraction = 0.005      # this share of the documents (every round(1/val_fraction)-th) goes to val
    test_fraction = 0.0       # this share of the val documents goes to test.bin instead
    out_dir = None            # where the dataset is written
    overwrite = False         # True: replace the dataset already in out_dir
    tokenizer = 'gpt2'        # 'gpt2' | 'gpt-neox-20b' | 'char'
    tokenizer_path = None     # a local tokenizer.json for gpt-neox-20b (else the hub's)
    text_key = 'text'         # the jsonl field or parquet column holding the text
    # -----------------------------------------------------------------------------
    from configurator import CONFIG_ERROR, between, configure, fail, non_empty, one_of
    configure(globals(), rules=dict(
        input=non_empty, val_input=non_empty, out_dir=non_empty, val_fraction=between(0, 1, lo_open=True, hi_open=True),
        test_fraction=between(0, 1, hi_open=True), tokenizer=one_of(*TOKENIZERS), text_key=non_empty))
    if input is None or out_dir is None:
        fail("pass --input=FILES (or pydoc) and --out_dir=DIR", CONFIG_ERROR)
    try:
        docs, val_docs = iter_documents(input, text_key), val_input and iter_documents(val_input, text_key)
        if tokenizer == 'char':  # the alphabet is the corpus's: read everything first
            docs, val_docs = list(docs), val_docs and list(val_docs)
        source = {'pydoc': f"pydoc_data.topics + stdlib docstrings (Python {sys.version.split()[0]})"}.get(
            input, input) + (f' (val: {val_input})' if val_input else '')
        write_dataset(out_dir, docs, get_tokenizer(tokenizer, tokenizer_path, tokenizer == 'char' and char_alphabet(
            docs + (val_docs or []))), source, val_docs, val_fraction, test_fraction=test_fraction, overwrite=overwrite)
    except (OSError, ValueError) as e:
        fail(e)
