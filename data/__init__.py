import numpy as np


def sample_batch(data, seed, key, batch_size, block_size):
    """(batch_size, block_size + 1) int64 windows of a token array at offsets drawn from
    np.random.default_rng([seed, *key]). A batch is a function of its key alone: that makes train.py's resume exact
    (key = (iter_num, micro_step)) and val losses comparable across runs and scripts (seed 0, key = (k,))."""
    ix = np.random.default_rng([seed, *key]).integers(0, len(data) - block_size, size=batch_size)
    return np.stack([data[i:i + block_size + 1] for i in ix]).astype(np.int64)
