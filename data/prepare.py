"""
Tokenize a corpus into what train.py and sample.py read, in out_dir:
  train.bin, val.bin   token ids back to back, every document followed by the tokenizer's end-of-text id;
                       uint16 when vocab_size < 65536, else uint32 (np.memmap-able, no header)
  meta.json            the tokenizer's meta (name, vocab_size, eot, alphabet or tokenizer path), dtype,
                       source, token and document counts
Sources (input=...; a path, a glob, or several separated by commas):
  *.txt                one document per file
  *.jsonl[.gz|.xz]     one document per line, field text_key
  *.parquet            column text_key
  anything else        a Hugging Face hub dataset id, streamed through `datasets` (hf_name, hf_split, max_docs)
Validation: val_input=... (same kinds), or else every round(1/val_fraction)-th document goes to val; with
test_fraction, that share of the val documents goes to test.bin instead (scored once, by no choice).
  python data/prepare.py --input='../shared/data/enwiki/enwiki_train_*.jsonl.xz' \
      --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --out_dir=data/enwiki
  python data/prepare.py --input=HuggingFaceFW/fineweb-edu --hf_name=sample-10BT --max_docs=1000000 \
      --tokenizer=gpt-neox-20b --out_dir=data/fineweb-edu
The other prepare scripts (data/*/prepare.py) import write_dataset from here.
"""
import glob
import gzip
import itertools
import json
import lzma
import os
import signal
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from data.tokenizer import NEOX_HUB_ID, get_tokenizer  # noqa: E402


def token_dtype(vocab_size):
    return 'uint16' if vocab_size < 2 ** 16 else 'uint32'


def iter_documents(spec, text_key='text', hf_name=None, hf_split='train', max_docs=None):
    """Yield the documents (str) of local files or a streamed hub dataset, in a fixed order."""
    paths = []
    for part in spec.split(','):
        matches = sorted(glob.glob(os.path.expanduser(part)))
        if not matches and (os.path.sep in part or part.endswith(('.txt', '.jsonl', '.gz', '.xz', '.parquet'))):
            raise FileNotFoundError(f"input {part!r} matches no file")
        paths += matches
    if not paths:
        yield from itertools.islice(_hub_documents(spec, text_key, hf_name, hf_split), max_docs)
        return
    for p in paths:
        if not p.endswith(('.txt', '.jsonl', '.jsonl.gz', '.jsonl.xz', '.parquet')):
            raise ValueError(f"{p}: unsupported file type; use .txt, .jsonl[.gz|.xz] or .parquet")
    yield from itertools.islice(_file_documents(paths, text_key), max_docs)


def _file_documents(paths, text_key):
    """Every input error is a ValueError naming the file (and the line of a jsonl file)."""
    for p in paths:
        n = 0
        try:
            if p.endswith('.txt'):
                with open(p, encoding='utf-8') as f:
                    yield f.read()
            elif p.endswith('.parquet'):
                import pyarrow.parquet as pq
                for batch in pq.ParquetFile(p).iter_batches(columns=[text_key]):
                    yield from batch.column(0).to_pylist()
            else:
                opener = {'.gz': gzip.open, '.xz': lzma.open}.get(os.path.splitext(p)[1], open)
                with opener(p, 'rt', encoding='utf-8') as f:
                    for n, line in enumerate(f, 1):
                        if not line.strip():
                            continue
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise ValueError(f"{p}:{n}: not valid JSON ({e.msg}); every line must be one JSON "
                                             f"object") from None
                        if not isinstance(row, dict) or text_key not in row:
                            fields = ', '.join(row) if isinstance(row, dict) else type(row).__name__
                            raise ValueError(f"{p}:{n} has no field {text_key!r} (it has: {fields}); pass "
                                             f"--text_key=...")
                        if not isinstance(row[text_key], str):
                            raise ValueError(f"{p}:{n}: field {text_key!r} is {type(row[text_key]).__name__}, "
                                             f"not text")
                        yield row[text_key]
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}{f':{n}' if n else ''}: not UTF-8 text (byte {e.start}): convert it to UTF-8") \
                from None
        except (lzma.LZMAError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise ValueError(f"{p}: damaged or truncated compressed file ({type(e).__name__}: {e}): fetch it "
                             f"again") from None
        except ImportError:
            raise ValueError(f"{p}: reading parquet needs pyarrow: pip install pyarrow") from None
        except ValueError:
            raise
        except Exception as e:  # pyarrow's own errors for a damaged parquet file
            if not p.endswith('.parquet'):
                raise
            raise ValueError(f"{p}: not a readable parquet file with column {text_key!r} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]})") from None


def _hub_documents(name, text_key, hf_name, hf_split):
    from datasets import load_dataset
    try:
        ds = load_dataset(name, hf_name, split=hf_split, streaming=True)
    except Exception as e:
        raise FileNotFoundError(f"{name!r} is neither a local file nor a loadable hub dataset "
                                f"({type(e).__name__}: {e})") from None
    for row in ds:
        yield row[text_key]


# ----------------------------------------------------------------------------- multiprocess tokenization
_tok = None


def _init_worker(name, path, chars):
    global _tok
    _tok = get_tokenizer(name, path=None if path == NEOX_HUB_ID else path, chars=chars)


def _init_pool_worker(*args):
    # Ctrl-C reaches the whole process group: the main process reports it once, the workers stay quiet
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(*args)


def _encode_chunk(chunk):
    """chunk: [(split, text), ...] (split 0 train, 1 val, 2 test) -> ([ids of each split], [documents of each]);
    each document ends with eot."""
    out, n = ([], [], []), [0, 0, 0]
    for split, text in chunk:
        out[split].extend(_tok.encode(text))
        out[split].append(_tok.eot)
        n[split] += 1
    return [np.array(o, dtype=np.uint32) for o in out], n


def _ordered_map(fn, items, num_proc, init_args):
    """fn over items in num_proc processes, results in order, at most 2*num_proc chunks in flight
    (Pool.imap would read a streamed corpus into memory as fast as it can)."""
    if num_proc <= 1:
        _init_worker(*init_args)
        yield from map(fn, items)
        return
    import collections
    import multiprocessing
    with multiprocessing.Pool(num_proc, _init_pool_worker, init_args) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _chunks(labelled_docs, chunk_chars):
    chunk, size = [], 0
    for item in labelled_docs:
        chunk.append(item)
        size += len(item[1])
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def every(i, f):
    """Whether item i belongs to an evenly spread fraction f: floor((i+1)*f) > floor(i*f)."""
    return int((i + 1) * f) > int(i * f)


def write_dataset(out_dir, docs, tok, source, val_docs=None, val_fraction=0.005, num_proc=None,
                  chunk_chars=1_000_000, test_fraction=0.0):
    """Tokenize docs (and val_docs) with tok into out_dir/{train,val}.bin + meta.json.
    Without val_docs, an evenly spread fraction val_fraction of the documents goes to val (see every). With
    test_fraction > 0, that fraction of the val documents goes to test.bin instead: held-out documents that no run
    trains on or is chosen by. Outputs are written to .tmp files and renamed at the end, meta.json last: a
    meta.json means a complete dataset."""
    if val_docs is not None:
        labelled = itertools.chain(((0, d) for d in docs), ((1, d) for d in val_docs))
    else:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must lie in (0, 1)")
        labelled = ((int(every(i, val_fraction)), d) for i, d in enumerate(docs))
    if test_fraction:
        held_out = itertools.count()
        labelled = ((2 if s == 1 and every(next(held_out), test_fraction) else s, d) for s, d in labelled)
    dtype = token_dtype(tok.vocab_size)
    made_dir = not os.path.exists(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    splits = ('train', 'val', 'test') if test_fraction else ('train', 'val')
    paths = {s: os.path.join(out_dir, f'{s}.bin') for s in splits}
    counts = {f'{s}_{k}': 0 for s in splits for k in ('tokens', 'docs')}
    files = {s: open(p + '.tmp', 'wb') for s, p in paths.items()}
    t0, complete = time.time(), False
    try:
        from tqdm import tqdm
        init_args = (tok.name, tok.extra.get('tokenizer_path'), tok.extra.get('chars'))
        results = _ordered_map(_encode_chunk, _chunks(labelled, chunk_chars), num_proc or os.cpu_count(), init_args)
        with tqdm(desc=f'tokenizing ({tok.name})', unit='tok', unit_scale=True, disable=None) as bar:
            for ids, n in results:
                for s, a, k in zip(splits, ids, n):
                    counts[f'{s}_tokens'] += len(a)
                    counts[f'{s}_docs'] += k
                    files[s].write(a.astype(dtype).tobytes())
                bar.update(sum(len(a) for a in ids))
        complete = all(counts[f'{s}_docs'] > 0 for s in splits)
    finally:
        for f in files.values():
            f.close()
        if not complete:  # an exception or an empty split: leave nothing half-written
            for p in paths.values():
                os.remove(p + '.tmp')
            if made_dir and not os.listdir(out_dir):
                os.rmdir(out_dir)
    if not complete:
        empty = next(s for s in splits if counts[f'{s}_docs'] == 0)
        raise ValueError(f"the {empty} split came out empty ({counts}): pass more documents, a larger "
                         f"val_fraction or test_fraction, or a separate val_input")
    for p in paths.values():
        os.replace(p + '.tmp', p)
    meta = dict(tok.meta(), dtype=dtype, source=source, **counts)
    with open(os.path.join(out_dir, 'meta.json.tmp'), 'w') as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(out_dir, 'meta.json.tmp'), os.path.join(out_dir, 'meta.json'))
    print(f"wrote {out_dir}: " + ', '.join(f"{counts[s + '_tokens']:,} {s} tokens ({counts[s + '_docs']:,} docs)"
                                           for s in splits) + f", {dtype}, {time.time() - t0:.1f} s")
    return meta


def split_text(text, val_fraction):
    """One long text -> (train part, val part), cut at the first line break after the (1 - val_fraction) point."""
    cut = text.find('\n', int(len(text) * (1 - val_fraction)))
    cut = len(text) - 1 if cut < 0 else cut + 1
    return text[:cut], text[cut:]


def char_alphabet(texts):
    return ''.join(sorted(set().union(*map(set, texts))))


if __name__ == '__main__':
    # -----------------------------------------------------------------------------
    input = None              # files (path, glob, comma-separated) or a hub dataset id
    val_input = None          # a separate validation source; else val_fraction of the documents
    val_fraction = 0.005
    test_fraction = 0.0       # this fraction of the val documents goes to test.bin (held out from every choice)
    out_dir = None
    tokenizer = 'gpt2'        # 'gpt2' | 'gpt-neox-20b' | 'char'
    tokenizer_path = None     # a local tokenizer.json for gpt-neox-20b (else fetched from the hub)
    text_key = 'text'         # the jsonl field / parquet column / dataset column holding the text
    hf_name = None            # hub dataset config, e.g. 'sample-10BT'
    hf_split = 'train'
    max_docs = None           # stop after this many documents (of input)
    num_proc = os.cpu_count()
    chunk_chars = 1_000_000   # documents per worker task, in characters
    # -----------------------------------------------------------------------------
    from configurator import configure
    from configurator import fail, CONFIG_ERROR, between, one_of, positive, non_empty
    configure(globals(), rules=dict(input=non_empty, val_input=non_empty, out_dir=non_empty,
                                    val_fraction=between(0, 1, lo_open=True, hi_open=True),
                                    test_fraction=between(0, 1, hi_open=True),
                                    tokenizer=one_of('gpt2', 'gpt-neox-20b', 'char'), text_key=non_empty,
                                    max_docs=positive, num_proc=positive, chunk_chars=positive))
    if input is None or out_dir is None:
        fail("pass --input=FILES_OR_HUB_ID and --out_dir=DIR", CONFIG_ERROR)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        fail(f"out_dir {out_dir} is a file: choose a directory", CONFIG_ERROR)
    try:
        docs = iter_documents(input, text_key, hf_name, hf_split, max_docs)
        val_docs = iter_documents(val_input, text_key, hf_name, hf_split) if val_input else None
        chars = None
        if tokenizer == 'char':  # the alphabet is the corpus's: read everything first
            docs, val_docs = list(docs), list(val_docs) if val_docs is not None else None
            chars = char_alphabet(docs + (val_docs or []))
        tok = get_tokenizer(tokenizer, path=tokenizer_path, chars=chars)
        write_dataset(out_dir, docs, tok, source=input + (f' (val: {val_input})' if val_input else ''),
                      val_docs=val_docs, val_fraction=val_fraction, num_proc=num_proc, chunk_chars=chunk_chars,
                      test_fraction=test_fraction)
    except (OSError, ValueError) as e:
        fail(e)
