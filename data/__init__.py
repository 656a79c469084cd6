"""A prepared dataset (data/prepare.py), read through read_meta and open_tokens (a missing or damaged file: one error
naming it), batched by sample_batch or windows, scored by estimate_loss: the project's one val loop."""
import math
import os
from contextlib import nullcontext

import numpy as np

import files


def read_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: prepare it with data/prepare.py first, or pass --data_dir=DIR")
    meta = files.read_json(path, ('tokenizer', 'vocab_size', 'dtype'), 'dataset')
    if meta['dtype'] not in ('uint16', 'uint32') or not isinstance(meta['vocab_size'], int) or meta['vocab_size'] < 1:
        raise ValueError(f"{path} has a bad dtype or vocab_size: not written by data/prepare.py; prepare it again")
    return meta


def open_tokens(data_dir, split, meta):
    """split.bin as a read-only memmap, checked to hold a whole number of tokens (at least one)."""
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: prepare the dataset again (meta.json is there, the tokens not)")
    if (size := os.path.getsize(path)) == 0 or size % np.dtype(meta['dtype']).itemsize:
        raise ValueError(f"{path} has {size} bytes, not a whole positive number of {meta['dtype']} tokens (truncated "
                         f"or empty): prepare the dataset again")
    return np.memmap(path, dtype=meta['dtype'], mode='r')


def sample_batch(data, seed, key, batch_size, block_size):
    """(batch_size, block_size + 1) int64 windows at offsets drawn from np.random.default_rng([seed, *key]): a batch is
    a function of its key alone, so a resume replays the same tokens (key (iter, micro-step)) and every run and script
    scores the same val batches (seed 0, key (k,))."""
    ix = np.random.default_rng([seed, *key]).integers(0, len(data) - block_size, size=batch_size)
    return np.stack([data[i:i + block_size + 1] for i in ix]).astype(np.int64)


def windows(data, block_size, batch_size):
    """The whole split once: windows overlapping by one token, so every token after the first is a target exactly once
    (a last partial window is dropped)."""
    n = (len(data) - 1) // block_size
    for b in range(0, n, batch_size):
        yield np.stack([data[i * block_size:(i + 1) * block_size + 1] for i in range(b, min(n, b + batch_size))]
                       ).astype(np.int64)


def estimate_loss(model, batches, nbytes_of=None, autocast=None):
    """(loss, bits per byte, tokens) of model over batches of (x, y): loss the training loss's mean (summed per-token
    nll over model.loss_units: tokens, or target bytes for byte_pool), bits per byte the summed nll over the targets'
    UTF-8 bytes (nbytes_of[id]; None: unmeasured), comparable across tokenizations. Float64; eval mode, then back."""
    import torch
    training, total, units, nbytes, tokens = model.training, 0.0, 0, 0.0, 0
    try:
        for x, y in batches:
            with torch.no_grad(), autocast or nullcontext():
                total += model.eval()(x, y, reduction='none')[1].double().sum().item()
            units, tokens = units + model.loss_units(y), tokens + y.numel()
            nbytes += 0.0 if nbytes_of is None else nbytes_of[y.cpu()].sum().item()
    finally:
        model.train(training)
    return total / units, total / nbytes / math.log(2) if nbytes else None, tokens
