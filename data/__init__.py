"""A prepared dataset (data/prepare.py): train.bin, val.bin (test.bin), token ids back to back, and meta.json naming the
tokenizer. Every script reads it through read_meta and open_tokens (a missing or damaged file: one error naming it),
batches it with sample_batch or windows, and scores a model on it with estimate_loss, the project's one val loop."""
import json
import math
import os
from contextlib import nullcontext

import numpy as np


def read_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: run a data/*/prepare.py script first, or pass --data_dir=DIR")
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({getattr(e, 'msg', e)}): prepare the dataset again") from None
    missing = [k for k in ('tokenizer', 'vocab_size', 'dtype') if not isinstance(meta, dict) or k not in meta]
    if missing or meta['dtype'] not in ('uint16', 'uint32') or not isinstance(meta['vocab_size'], int) or \
            meta['vocab_size'] < 1:
        raise ValueError(f"{path} {'lacks ' + ', '.join(missing) if missing else 'has a bad dtype or vocab_size'}: "
                         f"not written by data/prepare.py; prepare the dataset again")
    return meta


def open_tokens(data_dir, split, meta):
    """split.bin as a read-only memmap, checked to hold a whole number of tokens (at least one)."""
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: prepare the dataset again (meta.json is there, the tokens not)")
    if os.path.getsize(path) == 0 or os.path.getsize(path) % np.dtype(meta['dtype']).itemsize:
        raise ValueError(f"{path} has {os.path.getsize(path)} bytes, not a whole positive number of {meta['dtype']} "
                         f"tokens (truncated or empty): prepare the dataset again")
    return np.memmap(path, dtype=meta['dtype'], mode='r')


def sample_batch(data, seed, key, batch_size, block_size):
    """(batch_size, block_size + 1) int64 windows at offsets drawn from np.random.default_rng([seed, *key]): a batch is
    a function of its key alone, so a resume replays the same tokens (key (iter, micro-step)) and every run and script
    scores the same val batches (seed 0, key (k,))."""
    ix = np.random.default_rng([seed, *key]).integers(0, len(data) - block_size, size=batch_size)
    return np.stack([data[i:i + block_size + 1] for i in ix]).astype(np.int64)


def windows(data, block_size, batch_size):
    """The whole split once: (batch, block_size + 1) int64 windows overlapping by one token, so every token after the
    first is a target exactly once (a last partial window is dropped)."""
    n = (len(data) - 1) // block_size
    for b in range(0, n, batch_size):
        yield np.stack([data[i * block_size:(i + 1) * block_size + 1] for i in range(b, min(n, b + batch_size))]
                       ).astype(np.int64)


def estimate_loss(model, batches, nbytes_of=None, autocast=None):
    """(loss, bits per byte, tokens) of model over batches of (x, y): loss is the training loss's mean (the summed
    per-token nll over model.loss_units: tokens, or target bytes for byte_pool), bits per byte the summed nll over the
    UTF-8 bytes the targets spell (nbytes_of[id]; None: not measured), comparable across tokenizations. Sums in
    float64; the model runs in eval mode and gets its mode back."""
    import torch
    training, total, units, nbytes, tokens = model.training, 0.0, 0, 0.0, 0
    try:
        with torch.no_grad():
            for x, y in batches:
                with autocast or nullcontext():
                    total += model.eval()(x, y, reduction='none')[1].double().sum().item()
                units, tokens = units + model.loss_units(y), tokens + y.numel()
                nbytes += 0.0 if nbytes_of is None else nbytes_of[y.cpu()].sum().item()
    finally:
        model.train(training)
    return total / units, total / nbytes / math.log(2) if nbytes else None, tokens
