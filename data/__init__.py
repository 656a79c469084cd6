"""A prepared dataset (data/*/prepare.py): train.bin and val.bin, token ids back to back, and meta.json naming the
tokenizer. Every script reads datasets through read_meta and open_tokens, so a missing or damaged file is one
clear error (ValueError / FileNotFoundError naming the file) wherever it is found."""
import json
import os

import numpy as np

META_KEYS = ('tokenizer', 'vocab_size', 'dtype')


def read_meta(data_dir):
    """The dataset's meta.json, checked."""
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: run a data/*/prepare.py script first, or pass --data_dir=DIR")
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({getattr(e, 'msg', e)}): prepare the dataset again") from None
    if not isinstance(meta, dict) or any(k not in meta for k in META_KEYS):
        missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
        raise ValueError(f"{path} lacks {', '.join(missing)}: not written by data/prepare.py; prepare the dataset again")
    if meta['dtype'] not in ('uint16', 'uint32') or not isinstance(meta['vocab_size'], int) or meta['vocab_size'] < 1:
        raise ValueError(f"{path}: dtype {meta['dtype']!r} / vocab_size {meta['vocab_size']!r} are not a token "
                         f"dtype (uint16, uint32) and a positive count: prepare the dataset again")
    return meta


def open_tokens(data_dir, split, meta):
    """split.bin as a read-only memmap, checked to hold a whole number of tokens (at least one)."""
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: prepare the dataset again (meta.json is there, the tokens not)")
    size, itemsize = os.path.getsize(path), np.dtype(meta['dtype']).itemsize
    if size == 0 or size % itemsize:
        raise ValueError(f"{path} has {size} bytes, not a whole positive number of {meta['dtype']} tokens "
                         f"(truncated or empty): prepare the dataset again")
    return np.memmap(path, dtype=meta['dtype'], mode='r')


def sample_batch(data, seed, key, batch_size, block_size):
    """(batch_size, block_size + 1) int64 windows of a token array at offsets drawn from
    np.random.default_rng([seed, *key]). A batch is a function of its key alone: that makes train.py's resume exact
    (key = (iter_num, micro_step)) and val losses comparable across runs and scripts (seed 0, key = (k,))."""
    ix = np.random.default_rng([seed, *key]).integers(0, len(data) - block_size, size=batch_size)
    return np.stack([data[i:i + block_size + 1] for i in ix]).astype(np.int64)


def windows(data, block_size, batch_size):
    """The whole token array once, as (batch, block_size + 1) int64 windows that overlap by one token, so that every
    token after the first is a target exactly once (a last partial window is dropped)."""
    n = (len(data) - 1) // block_size
    for b in range(0, n, batch_size):
        idx = range(b * block_size, min(n, b + batch_size) * block_size, block_size)
        yield np.stack([data[i:i + block_size + 1] for i in idx]).astype(np.int64)
