"""Tokenize a corpus into out_dir/train.bin, val.bin (test.bin), token ids back to back, each document ending with
end-of-text (uint16 below 65536 ids, else uint32), then meta.json (tokenizer, dtype, source, counts): a meta.json means
a complete dataset, which only --overwrite=True replaces. input: comma-separated paths or globs of *.txt (a document
each), *.jsonl[.gz|.xz] (one a line) and *.parquet, or a hub dataset (streamed). Val: val_input, or every
round(1/val_fraction)-th document; test_fraction of the val documents go to test.bin, held out from every choice.
  python data/prepare.py --input='../shared/data/enwiki/enwiki_train_*.jsonl.xz' \\
      --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --out_dir=data/enwiki --tokenizer=gpt-neox-20b"""
import glob
import gzip
import itertools
import json
import lzma
import os
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import configurator  # noqa: E402,F401  (first: from here on Ctrl-C is one line and status 130)
import files  # noqa: E402
from data.tokenizer import TOKENIZERS, get_tokenizer  # noqa: E402

KINDS = ('.txt', '.jsonl', '.jsonl.gz', '.jsonl.xz', '.parquet')


def iter_documents(spec, text_key='text', hf_name=None, hf_split='train', max_docs=None):
    """The documents (str) of local files, in order, or of a streamed hub dataset."""
    paths = []
    for part in spec.split(','):
        found = sorted(glob.glob(os.path.expanduser(part)))
        if not found and (os.sep in part or part.endswith(KINDS + ('.gz', '.xz'))):
            raise FileNotFoundError(f"input {part!r} matches no file")
        paths += found
    for p in (p for p in paths if not p.endswith(KINDS)):
        raise ValueError(f"{p}: unsupported file type; use .txt, .jsonl[.gz|.xz] or .parquet")
    if paths:
        return itertools.islice(_file_documents(paths, text_key), max_docs)
    from datasets import load_dataset
    try:
        rows = load_dataset(spec, hf_name, split=hf_split, streaming=True)
    except Exception as e:
        raise FileNotFoundError(f"{spec!r} is neither a local file nor a loadable hub dataset ({type(e).__name__}: "
                                f"{e})") from None
    return itertools.islice((row[text_key] for row in rows), max_docs)


def _file_documents(paths, text_key):
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
                with {'.gz': gzip.open, '.xz': lzma.open}.get(p[-3:], open)(p, 'rt', encoding='utf-8') as f:
                    for n, line in ((n, line) for n, line in enumerate(f, 1) if line.strip()):
                        row = json.loads(line)
                        if not isinstance(row, dict) or text_key not in row:
                            raise ValueError(f"{p}:{n} has no field {text_key!r} (it has: "
                                             f"{', '.join(row) if isinstance(row, dict) else type(row).__name__}); "
                                             f"pass --text_key=...")
                        if not isinstance(row[text_key], str):
                            raise ValueError(f"{p}:{n}: field {text_key!r} is {type(row[text_key]).__name__}, not text")
                        yield row[text_key]
        except Exception as e:  # every fault of a file: one line naming it (and the line of a jsonl file)
            if str(e).startswith(p):
                raise
            why = ('not UTF-8 text: convert it to UTF-8' if isinstance(e, UnicodeDecodeError) else f"not valid JSON "
                   f"({e.msg}); every line must be one JSON object" if isinstance(e, json.JSONDecodeError) else
                   f"damaged or truncated ({type(e).__name__}: {e}): fetch it again" if isinstance(
                       e, (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)) else
                   f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}")
            raise ValueError(f"{p}{f':{n}' if n else ''}: {why}") from None


def write_dataset(out_dir, docs, tok, source, val_docs=None, val_fraction=0.005, num_proc=None, chunk_chars=1_000_000,
                  test_fraction=0.0, overwrite=False):
    """Tokenize docs with tok into out_dir (see the top). Val: val_docs, else document i where every(i, val_fraction);
    test: val document j where every(j, test_fraction). The .bin files are written beside their places and renamed in
    once every split is complete and non-empty, meta.json last; a failure leaves out_dir as it was."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise files.FileError(f"out_dir {out_dir} is a file: choose a folder")
    if os.path.exists(os.path.join(out_dir, 'meta.json')) and not overwrite:
        raise files.FileError(f"{out_dir} holds a prepared dataset: pass --overwrite=True to replace it, or choose "
                              f"another out_dir")
    if files.check_dest(out_dir):
        raise files.FileError(files.check_dest(out_dir))
    every = lambda i, f: int((i + 1) * f) > int(i * f)  # item i belongs to an evenly spread fraction f
    held = itertools.count()
    labelled = itertools.chain(((0, d) for d in docs), ((1, d) for d in val_docs)) if val_docs is not None else \
        ((int(every(i, val_fraction)), d) for i, d in enumerate(docs))
    labelled, sizes = itertools.tee((2 if s == 1 and test_fraction and every(next(held), test_fraction) else s, d)
                                    for s, d in labelled)
    # tokenized a batch at a time: the documents whose last character falls in the same chunk_chars of the stream
    chunks = ([item for item, _ in batch] for _, batch in itertools.groupby(
        zip(labelled, itertools.accumulate(len(d) for _, d in sizes)), lambda item_end: (item_end[1] - 1) // chunk_chars
    ))
    names = ('train', 'val', 'test')[:3 if test_fraction else 2]
    dtype = 'uint16' if tok.vocab_size < 1 << 16 else 'uint32'
    counts = {f'{s}_{k}': 0 for s in names for k in ('tokens', 'docs')}
    tmp = [os.path.join(out_dir, f'{s}.bin.tmp{os.getpid()}') for s in names]
    outs, made = [], not os.path.isdir(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        outs.extend(open(p, 'wb') for p in tmp)
        from tqdm import tqdm
        for chunk in tqdm(chunks, f'tokenizing ({tok.name})', unit=' chunks', disable=None):
            for (s, _), ids in zip(chunk, tok.encode_batch([d for _, d in chunk], num_proc)):
                outs[s].write(np.array(ids + [tok.eot], dtype=dtype).tobytes())
                counts[f'{names[s]}_tokens'] += len(ids) + 1
                counts[f'{names[s]}_docs'] += 1
        for f in outs:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        empty = [s for s in names if not counts[f'{s}_docs']]
        if empty:
            raise ValueError(f"the {empty[0]} split came out empty ({counts}): pass more documents, a larger "
                             f"val_fraction or test_fraction, or a separate val_input")
        files.remove(os.path.join(out_dir, 'meta.json'))  # the old dataset stops being one before its files change
        for s in ('train', 'val', 'test'):  # an old test.bin must not pass for this dataset's
            path = os.path.join(out_dir, f'{s}.bin')
            os.replace(tmp[names.index(s)], path) if s in names else files.remove(path)
    except OSError as e:
        raise files.os_error(out_dir, e) from None
    finally:
        for f in outs:
            f.close()
        for p in tmp:
            files.remove(p)
        if made and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
    meta = dict(tok.meta(), dtype=dtype, source=source, **counts)
    try:
        files.write_json(os.path.join(out_dir, 'meta.json'), meta)
    except BaseException:  # no meta.json: not a dataset, so its .bin files go too (a new folder with them)
        for s in names:
            files.remove(os.path.join(out_dir, f'{s}.bin'))
        if made and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    print(f"wrote {out_dir}: " + ', '.join(f"{counts[s + '_tokens']:,} {s} tokens ({counts[s + '_docs']:,} docs)"
                                           for s in names) + f", {dtype}")
    return meta


def char_alphabet(texts):
    return ''.join(sorted(set().union(*map(set, texts))))


if __name__ == '__main__':
    # -----------------------------------------------------------------------------
    input = None              # files (paths or globs, comma-separated) or a hub dataset id
    val_input = None          # a separate validation source; None: val_fraction of the documents
    val_fraction = 0.005      # this share of the documents (every round(1/val_fraction)-th) goes to val
    test_fraction = 0.0       # this share of the val documents goes to test.bin instead
    out_dir = None            # where the dataset is written
    overwrite = False         # True: replace the dataset already in out_dir
    tokenizer = 'gpt2'        # 'gpt2' | 'gpt-neox-20b' | 'char'
    tokenizer_path = None     # a local tokenizer.json for gpt-neox-20b (else the hub's)
    text_key = 'text'         # the jsonl field, parquet column or hub dataset column holding the text
    hf_name = None            # hub dataset config, e.g. 'sample-10BT'
    hf_split = 'train'        # hub dataset split
    max_docs = None           # stop after this many documents of input
    num_proc = os.cpu_count()  # tokenizer threads
    chunk_chars = 1_000_000   # characters tokenized as one batch
    # -----------------------------------------------------------------------------
    from configurator import CONFIG_ERROR, between, configure, fail, non_empty, one_of, positive
    configure(globals(), rules=dict(
        input=non_empty, val_input=non_empty, out_dir=non_empty, val_fraction=between(0, 1, lo_open=True, hi_open=True),
        test_fraction=between(0, 1, hi_open=True), tokenizer=one_of(*TOKENIZERS), text_key=non_empty,
        max_docs=positive, num_proc=positive, chunk_chars=positive))
    if input is None or out_dir is None:
        fail("pass --input=FILES_OR_HUB_ID and --out_dir=DIR", CONFIG_ERROR)
    try:
        docs = iter_documents(input, text_key, hf_name, hf_split, max_docs)
        val_docs = iter_documents(val_input, text_key, hf_name, hf_split) if val_input else None
        if tokenizer == 'char':  # the alphabet is the corpus's: read everything first
            docs, val_docs = list(docs), None if val_docs is None else list(val_docs)
        tok = get_tokenizer(tokenizer, tokenizer_path, char_alphabet(docs + (val_docs or [])) if tokenizer == 'char'
                            else None)
        write_dataset(out_dir, docs, tok, input + (f' (val: {val_input})' if val_input else ''), val_docs,
                      val_fraction, num_proc, chunk_chars, test_fraction, overwrite)
    except (OSError, ValueError) as e:
        fail(e)
