"""Shared test set-up: the offline data beside the repo, no hub access, and a tiny prepared dataset."""
import os
import random
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get('SHARED_DATA', os.path.join(os.path.dirname(REPO), 'shared', 'data'))
sys.path.insert(0, REPO)
if os.path.isdir(os.path.join(SHARED_DATA, 'tiktoken_cache')):
    os.environ.setdefault('TIKTOKEN_CACHE_DIR', os.path.join(SHARED_DATA, 'tiktoken_cache'))
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # a test that reaches for the hub fails fast instead of hanging
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
    """A prepared character-level dataset (train.bin, val.bin, meta.json) of 400 random sentences."""
    from data.prepare import char_alphabet, write_dataset
    from data.tokenizer import get_tokenizer
    rng = random.Random(0)
    words = ['the', 'sparse', 'model', 'grows', 'wider', 'and', 'deeper', 'while', 'pruning', 'weights']
    docs = [' '.join(rng.choice(words) for _ in range(rng.randint(20, 60))) + '.' for _ in range(400)]
    d = str(tmp_path_factory.mktemp('chars'))
    write_dataset(d, docs, get_tokenizer('char', chars=char_alphabet(docs)), source='test', val_fraction=0.1,
                  num_proc=1)
    return d


def train_patched(patch, *args, timeout=120):
    """train.py run as a user runs it, after `patch` (Python source) has run in the same process: how a test injects
    a crash mid-save, a full disk, a slow first step, or watches what train.py does."""
    import subprocess
    driver = (patch + "\nimport runpy, sys\nsys.argv = ['train.py'] + sys.argv[1:]\n"
              "runpy.run_path('train.py', run_name='__main__')\n")
    return subprocess.run([sys.executable, '-c', driver, *args], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS='1'),
                          capture_output=True, text=True, timeout=timeout)
