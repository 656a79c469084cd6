"""
sample.py run as a script on tiny models: its stdout must equal, character for character, what
model.generate produces in-process with the same prompt, seed and filters; the tokenizer is the one the
model's metadata names; bad combinations fail with one clear line.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.abspath(os.environ.get('SHARED_DATA', os.path.join(REPO, '..', 'shared', 'data')))

from model import GPT, GPTConfig  # noqa: E402
from data.tokenizer import get_tokenizer  # noqa: E402

SEP = '---------------'
CHARS = "\n !',.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40
ENV = {**os.environ, 'TIKTOKEN_CACHE_DIR': os.path.join(SHARED, 'tiktoken_cache'), 'HF_HUB_OFFLINE': '1',
       'TRANSFORMERS_VERBOSITY': 'error', 'OMP_NUM_THREADS': '1'}  # tiny models: threads only add overhead


def run_sample(*args, ok=True):
    p = subprocess.run([sys.executable, 'sample.py', '--device=cpu', '--dtype=float32', *args], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert (p.returncode == 0) == ok, p.stderr
    return p.stdout if ok else p.stderr


def expected(model, tok, start, num_samples, max_new_tokens, seed=1337, **kw):
    """What sample.py must print: num_samples draws in a row from one generator seeded once."""
    x = torch.tensor([tok.encode(start) or [tok.eot]])
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocess, so that even float summation order is the same
    try:
        with torch.no_grad():
            outs = [model.generate(x, max_new_tokens, generator=g, **kw)[0].tolist() for _ in range(num_samples)]
    finally:
        torch.set_num_threads(threads)
    return ''.join(f'{tok.decode(y)}\n{SEP}\n' for y in outs)


def tiny_model(arch='gpt_neox', vocab_size=64, seed=0, **kw):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(arch=arch, n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_size, block_size=32, **kw))
    with torch.no_grad():  # logits of std ~2: neither uniform nor one-hot, so top_p and the seed matter
        model.lm_head.weight.mul_(3)
    return model.eval()


@pytest.fixture
def char_dir(tmp_path):
    """A model directory whose config.json records its char tokenizer (save_pretrained's extra_meta)."""
    tok = get_tokenizer('char', chars=CHARS)
    model = tiny_model(vocab_size=tok.vocab_size)  # no padding ids: any sample decodes
    model.save_pretrained(str(tmp_path / 'm'), extra_meta={'tokenizer': tok.meta()})
    return tmp_path / 'm', model, tok


def test_greedy_equals_generate_in_process(char_dir):
    d, model, tok = char_dir
    # prompt + 40 new tokens > block_size 32: the window slides, still identical
    out = run_sample(f'--init_from={d}', '--start=Before we', '--temperature=0', '--num_samples=2',
                     '--max_new_tokens=40')
    want = expected(model, tok, 'Before we', 2, 40, temperature=0)
    assert out == want
    samples = out.split(f'\n{SEP}\n')
    assert samples[0] == samples[1] and samples[0].startswith('Before we') and len(samples[0]) == 9 + 40


def test_seeded_sampling_reproducible(char_dir, tmp_path):
    d, model, tok = char_dir
    (tmp_path / 'prompt.txt').write_text('Speak, speak.\n')
    out = run_sample(f'--init_from={d}', f'--start=FILE:{tmp_path / "prompt.txt"}', '--num_samples=3',
                     '--max_new_tokens=25', '--temperature=1.0', '--top_k=None', '--top_p=0.9', '--seed=7')
    want = expected(model, tok, 'Speak, speak.\n', 3, 25, seed=7, temperature=1.0, top_p=0.9)
    assert out == want  # another process, the same seed: the same text
    assert want != expected(model, tok, 'Speak, speak.\n', 3, 25, seed=8, temperature=1.0, top_p=0.9)
    assert len(set(out.split(f'\n{SEP}\n')[:3])) == 3  # one generator for all samples: each sample differs


def test_empty_prompt_starts_a_document(char_dir):
    d, model, tok = char_dir
    out = run_sample(f'--init_from={d}', '--start=', '--temperature=0', '--num_samples=1', '--max_new_tokens=10')
    assert out == expected(model, tok, '', 1, 10, temperature=0) and len(out) == 10 + len(SEP) + 2


def test_train_checkpoint(tmp_path):
    """A train.py out_dir: the model from ckpt.pt, the tokenizer from its dataset's meta.json; and the
    Hugging Face directory train.py writes next to it (save_hf=True)."""
    data, out = tmp_path / 'data', tmp_path / 'out'
    data.mkdir()
    tok = get_tokenizer('char', chars=CHARS)
    ids = np.array(tok.encode(TEXT), dtype=np.uint16)
    ids[:3000].tofile(data / 'train.bin')
    ids[3000:].tofile(data / 'val.bin')
    (data / 'meta.json').write_text(json.dumps({**tok.meta(), 'dtype': 'uint16'}))
    p = subprocess.run([sys.executable, 'train.py', f'--data_dir={data}', f'--out_dir={out}', '--device=cpu',
                        '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=4',
                        '--max_iters=30', '--eval_interval=30', '--eval_iters=1', '--log_interval=30',
                        '--warmup_iters=0', '--learning_rate=1e-2', '--save_hf=True'], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    model.eval()
    assert model.config.vocab_size == 64 > tok.vocab_size  # padded vocab: the decode check must not trip on it
    # trained for 30 steps, the 2 padding ids are far down: top_k=10 never reaches them
    got = run_sample(f'--init_from={out}', '--start=All:', '--num_samples=2', '--max_new_tokens=12', '--seed=3',
                     '--top_k=10')
    assert got == expected(model, tok, 'All:', 2, 12, seed=3, temperature=0.8, top_k=10)
    # its save_hf directory records the dataset's tokenizer (alphabet included): it samples without the dataset
    with open(out / 'model' / 'config.json') as f:
        assert json.load(f)['growing_sparse']['tokenizer']['chars'] == tok.meta()['chars']
    shutil.rmtree(data)
    assert run_sample(f'--init_from={out / "model"}', '--start=All:', '--num_samples=2', '--max_new_tokens=12',
                      '--seed=3', '--top_k=10') == got


def test_tokenizer_name_completed_from_data_dir(tmp_path):
    """A record that names its tokenizer only ('char') and its dataset: the alphabet comes from data_dir/meta.json.
    Without that meta.json the name alone is not enough, and sample.py says so instead of guessing."""
    tok = get_tokenizer('char', chars=CHARS)
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'meta.json').write_text(json.dumps({**tok.meta(), 'dtype': 'uint16'}))
    model = tiny_model(vocab_size=tok.vocab_size)
    model.save_pretrained(str(tmp_path / 'm'), extra_meta={'tokenizer': 'char', 'data_dir': str(data)})
    out = run_sample(f'--init_from={tmp_path / "m"}', '--start=Speak', '--temperature=0', '--num_samples=1',
                     '--max_new_tokens=20')
    assert out == expected(model, tok, 'Speak', 1, 20, temperature=0)
    shutil.rmtree(data)
    err = run_sample(f'--init_from={tmp_path / "m"}', '--start=Speak', ok=False)
    assert "names tokenizer 'char' but not its alphabet" in err and len(err.strip().splitlines()) == 1


def test_tokenizer_by_arch(tmp_path):
    """No metadata: gpt2 -> GPT-2 BPE (tiktoken); gpt_neox -> GPT-NeoX-20B (tokenizer_path, or a tokenizer.json
    next to the weights)."""
    neox_json = os.path.join(SHARED, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')
    if not os.path.exists(neox_json):
        pytest.skip(f'shared data not found at {SHARED}')
    os.environ['TIKTOKEN_CACHE_DIR'] = ENV['TIKTOKEN_CACHE_DIR']
    g2 = tiny_model('gpt2', vocab_size=50257)
    g2.save_pretrained(str(tmp_path / 'g2'))
    out = run_sample(f'--init_from={tmp_path / "g2"}', '--start=hello world', '--temperature=0', '--num_samples=1',
                     '--max_new_tokens=8')
    assert out == expected(g2, get_tokenizer('gpt2'), 'hello world', 1, 8, temperature=0)

    nx = tiny_model('gpt_neox', vocab_size=50304)
    nx.save_pretrained(str(tmp_path / 'nx'))
    want = expected(nx, get_tokenizer('gpt-neox-20b', path=neox_json), 'hello world', 1, 8, temperature=0)
    assert want != expected(nx, get_tokenizer('gpt2'), 'hello world', 1, 8, temperature=0)  # the choice matters
    args = ['--start=hello world', '--temperature=0', '--num_samples=1', '--max_new_tokens=8']
    assert run_sample(f'--init_from={tmp_path / "nx"}', f'--tokenizer_path={neox_json}', *args) == want
    shutil.copy(neox_json, tmp_path / 'nx' / 'tokenizer.json')
    assert run_sample(f'--init_from={tmp_path / "nx"}', *args) == want


def test_error_tokenizer_larger_than_model(tmp_path):
    tok = get_tokenizer('char', chars=CHARS)  # 61 characters + end-of-text
    tiny_model(vocab_size=32).save_pretrained(str(tmp_path / 'm'), extra_meta={'tokenizer': tok.meta()})
    err = run_sample(f'--init_from={tmp_path / "m"}', ok=False)
    assert 'char tokenizer has 62 ids but the model only 32' in err and 'Traceback' not in err


def test_padded_ids_are_never_sampled(tmp_path):
    """A vocabulary padded past the tokenizer (64 for 62 ids): the padding ids are masked out of the distribution,
    so even a model that puts almost all its probability on padding id 63 samples only decodable ids."""
    tok = get_tokenizer('char', chars=CHARS)
    model = tiny_model(vocab_size=64)
    with torch.no_grad():  # logits = W b with ln_f's output b = 1: padding id 63 gets 30, 'x' 1, every other id 0
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[63] = 30.0 / model.config.n_embd
        model.lm_head.weight[tok.encode('x')[0]] = 1.0 / model.config.n_embd
    model.save_pretrained(str(tmp_path / 'm'), extra_meta={'tokenizer': tok.meta()})
    out = run_sample(f'--init_from={tmp_path / "m"}', '--temperature=0', '--max_new_tokens=5', '--start=a')
    assert out.split('\n')[0] == 'axxxxx'  # greedy: the best decodable id, never 63
    run_sample(f'--init_from={tmp_path / "m"}', '--temperature=1', '--top_k=None', '--max_new_tokens=50',
               '--start=a', '--num_samples=4')  # sampling: exit 0, every id decoded
    y = model.generate(torch.zeros(8, 1, dtype=torch.long), 50, temperature=1.0, vocab_size=tok.vocab_size,
                       generator=torch.Generator().manual_seed(0))
    assert int(y.max()) < tok.vocab_size
    assert int(model.generate(torch.zeros(1, 1, dtype=torch.long), 1, temperature=0)[0, -1]) == 63  # unmasked


def test_error_missing_model_and_bad_prompt(char_dir, tmp_path):
    err = run_sample(f'--init_from={tmp_path / "nothing"}', ok=False)
    assert 'no such model directory' in err and 'Traceback' not in err
    d, _, _ = char_dir
    err = run_sample(f'--init_from={d}', '--start=hello #1', ok=False)
    assert "cannot encode the prompt: character '#'" in err and 'Traceback' not in err
    err = run_sample(f'--init_from={d}', f'--start=FILE:{tmp_path / "missing.txt"}', ok=False)
    assert 'cannot read the prompt file' in err and 'No such file' in err and 'Traceback' not in err
