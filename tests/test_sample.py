"""
sample.py on tiny models, run as a script (runpy, in this process: the same float summation order): its stdout equals,
character for character, what model.generate gives with the same prompt, seed and filters; the tokenizer is the one
the model's metadata names; bad input is one clear line.
"""
import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SHARED_DATA

import files
from data.tokenizer import get_tokenizer
from hf_io import save_pretrained
from model import GPT, GPTConfig

torch.set_num_threads(1)  # tiny models: threads only add overhead, on a busy machine a lot
SEP = '---------------'
CHARS = "\n !',.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
NEOX_JSON = os.path.join(SHARED_DATA, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')


def run_sample(capsys, *args, ok=True):
    """sample.py's stdout (ok) or stderr; its exit status is 0 exactly when ok."""
    argv, sys.argv = sys.argv, ['sample.py', '--device=cpu', '--dtype=float32', *args]
    try:
        runpy.run_path(os.path.join(REPO, 'sample.py'), run_name='__main__')
        status = 0
    except SystemExit as e:
        status = e.code
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    assert (status == 0) == ok, err
    return out if ok else err


def expected(model, tok, start, num_samples, max_new_tokens, seed=1337, **kw):
    """What sample.py must print: num_samples draws in a row from one generator seeded once, tokenizer ids only."""
    x, g = torch.tensor([tok.encode(start) or [tok.eot]]), torch.Generator().manual_seed(seed)
    outs = [model.generate(x, max_new_tokens, generator=g, vocab_size=tok.vocab_size, **kw)[0].tolist()
            for _ in range(num_samples)]
    return ''.join(f'{tok.decode(y)}\n{SEP}\n' for y in outs)


def tiny_model(arch='gpt_neox', vocab_size=64):
    torch.manual_seed(0)
    model = GPT(GPTConfig(arch=arch, n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_size, block_size=32))
    with torch.no_grad():  # logits of std ~2: neither uniform nor one-hot, so top_p and the seed matter
        model.lm_head.weight.mul_(3)
    return model.eval()


@pytest.fixture
def char_dir(tmp_path):
    """A model directory whose config.json records its char tokenizer (save_pretrained's extra_meta)."""
    tok = get_tokenizer('char', chars=CHARS)
    model = tiny_model(vocab_size=tok.vocab_size)
    save_pretrained(model, str(tmp_path / 'm'), extra_meta={'tokenizer': tok.meta()})
    return tmp_path / 'm', model, tok


def test_greedy_equals_generate_as_a_script(char_dir):
    """A subprocess, as a user runs it: prompt + 40 new tokens outgrow block_size 32 and the window slides; both
    greedy samples are that same text (a float32 model run on one thread either way)."""
    d, model, tok = char_dir
    p = subprocess.run([sys.executable, 'sample.py', f'--init_from={d}', '--start=Before we', '--temperature=0',
                        '--num_samples=2', '--max_new_tokens=40', '--device=cpu'], cwd=REPO, capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=120)
    want = expected(model, tok, 'Before we', 2, 40, temperature=0)
    assert p.returncode == 0 and p.stdout == want, p.stderr
    samples = want.split(f'\n{SEP}\n')
    assert samples[0] == samples[1] and samples[0].startswith('Before we') and len(samples[0]) == 9 + 40


def test_seeded_sampling_from_a_prompt_file(capsys, char_dir, tmp_path):
    """A FILE: prompt, top_p and the seed: the in-process draws; another seed another text; one generator for all
    samples, so each differs; an empty prompt starts a document."""
    d, model, tok = char_dir
    (tmp_path / 'prompt.txt').write_text('Speak, speak.\n')
    args = [f'--init_from={d}', f'--start=FILE:{tmp_path / "prompt.txt"}', '--num_samples=3', '--max_new_tokens=25',
            '--temperature=1.0', '--top_k=None', '--top_p=0.9', '--seed=7']
    out = run_sample(capsys, *args)
    want = expected(model, tok, 'Speak, speak.\n', 3, 25, seed=7, temperature=1.0, top_p=0.9)
    assert out == want
    assert want != expected(model, tok, 'Speak, speak.\n', 3, 25, seed=8, temperature=1.0, top_p=0.9)
    assert len(set(out.split(f'\n{SEP}\n')[:3])) == 3
    out = run_sample(capsys, f'--init_from={d}', '--start=', '--temperature=0', '--num_samples=1',
                     '--max_new_tokens=10')
    assert out == expected(model, tok, '', 1, 10, temperature=0) and len(out) == 10 + len(SEP) + 2


def test_train_checkpoint_reads_its_datasets_tokenizer(capsys, tmp_path):
    """A train.py out_dir: the model from ckpt.pt (a vocabulary padded past the tokenizer's: 64 for 62 ids), the
    tokenizer from the meta.json of the data_dir it was trained on."""
    tok, model = get_tokenizer('char', chars=CHARS), tiny_model(vocab_size=64)
    (tmp_path / 'data').mkdir()
    files.write_json(tmp_path / 'data' / 'meta.json', {**tok.meta(), 'dtype': 'uint16'})
    ckpt = dict(model_args=vars(model.config), model=model.state_dict(), config=dict(data_dir=str(tmp_path / 'data')))
    (tmp_path / 'out').mkdir()
    torch.save(dict(ckpt, checksum=files.checksum(ckpt)), tmp_path / 'out' / 'ckpt.pt')
    out = run_sample(capsys, f'--init_from={tmp_path / "out"}', '--start=All:', '--num_samples=2',
                     '--max_new_tokens=12', '--seed=3', '--top_k=10')
    assert out == expected(model, tok, 'All:', 2, 12, seed=3, temperature=0.8, top_k=10)


def test_tokenizer_name_completed_from_data_dir(capsys, tmp_path):
    """A record that names its tokenizer only ('char') and its dataset: the alphabet comes from data_dir/meta.json;
    without that meta.json the name alone is not enough, and sample.py says so instead of guessing."""
    tok, model = get_tokenizer('char', chars=CHARS), tiny_model(vocab_size=62)
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'meta.json').write_text(json.dumps({**tok.meta(), 'dtype': 'uint16'}))
    save_pretrained(model, str(tmp_path / 'm'), extra_meta={'tokenizer': 'char', 'data_dir': str(tmp_path / 'data')})
    args = [f'--init_from={tmp_path / "m"}', '--start=Speak', '--temperature=0', '--num_samples=1',
            '--max_new_tokens=20']
    assert run_sample(capsys, *args) == expected(model, tok, 'Speak', 1, 20, temperature=0)
    shutil.rmtree(tmp_path / 'data')
    err = run_sample(capsys, *args, ok=False)
    assert "names tokenizer 'char' but not its alphabet" in err and len(err.strip().splitlines()) == 1


def test_tokenizer_by_arch(capsys, tmp_path):
    """No metadata: gpt2 -> GPT-2 BPE (tiktoken); gpt_neox -> GPT-NeoX-20B, from tokenizer_path or a tokenizer.json
    next to the weights (and the choice matters: GPT-2's ids give another text)."""
    if not os.path.exists(NEOX_JSON):
        pytest.skip(f'shared data not found at {SHARED_DATA}')
    args = ['--start=hello world', '--temperature=0', '--num_samples=1', '--max_new_tokens=8']
    g2 = tiny_model('gpt2', vocab_size=50257)
    save_pretrained(g2, str(tmp_path / 'g2'))
    assert run_sample(capsys, f'--init_from={tmp_path / "g2"}', *args) == expected(
        g2, get_tokenizer('gpt2'), 'hello world', 1, 8, temperature=0)
    nx = tiny_model('gpt_neox', vocab_size=50304)
    save_pretrained(nx, str(tmp_path / 'nx'))
    want = expected(nx, get_tokenizer('gpt-neox-20b', path=NEOX_JSON), 'hello world', 1, 8, temperature=0)
    assert want != expected(nx, get_tokenizer('gpt2'), 'hello world', 1, 8, temperature=0)
    assert run_sample(capsys, f'--init_from={tmp_path / "nx"}', f'--tokenizer_path={NEOX_JSON}', *args) == want
    shutil.copy(NEOX_JSON, tmp_path / 'nx' / 'tokenizer.json')
    assert run_sample(capsys, f'--init_from={tmp_path / "nx"}', *args) == want


def test_padded_ids_are_never_sampled(capsys, tmp_path):
    """A vocabulary padded past the tokenizer (64 for 62 ids): even a model that puts almost all its probability
    on padding id 63 samples only ids the tokenizer decodes."""
    tok, model = get_tokenizer('char', chars=CHARS), tiny_model(vocab_size=64)
    with torch.no_grad():  # logits = W b with ln_f's output b = 1: padding id 63 gets 30, 'x' 1, every other id 0
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[63] = 30.0 / model.config.n_embd
        model.lm_head.weight[tok.encode('x')[0]] = 1.0 / model.config.n_embd
    save_pretrained(model, str(tmp_path / 'm'), extra_meta={'tokenizer': tok.meta()})
    out = run_sample(capsys, f'--init_from={tmp_path / "m"}', '--temperature=0', '--max_new_tokens=5', '--start=a')
    assert out.split('\n')[0] == 'axxxxx'  # greedy: the best decodable id, never 63
    out = run_sample(capsys, f'--init_from={tmp_path / "m"}', '--temperature=1', '--top_k=None',
                     '--max_new_tokens=50', '--start=a', '--num_samples=4')
    assert out.count(SEP) == 4  # every id decoded
    y = model.generate(torch.zeros(8, 1, dtype=torch.long), 50, temperature=1.0, vocab_size=tok.vocab_size,
                       generator=torch.Generator().manual_seed(0))
    assert int(y.max()) < tok.vocab_size
    assert int(model.generate(torch.zeros(1, 1, dtype=torch.long), 1, temperature=0)[0, -1]) == 63  # unmasked


@pytest.mark.parametrize('make,args,message,status', [
    (None, ['--init_from=./nothing'], 'no such model directory', 1),
    (32, [], "the char tokenizer (char, 62 ids) use different tokenizers: the model's vocabulary of 32 ids cannot "
             'hold ids up to 61', 1),
    (62, ['--start=hello #1'], "cannot encode the prompt: character '#'", 1),
    (62, ['--start=FILE:missing.txt'], "cannot read the prompt file 'missing.txt': No such file", 1),
], ids=['no-model', 'tokenizer-larger', 'bad-prompt', 'no-prompt-file'])
def test_errors_are_one_line(capsys, tmp_path, monkeypatch, make, args, message, status):
    """A missing model, a tokenizer with more ids than the model (they would index past its embedding), a prompt
    the tokenizer cannot encode, a missing prompt file: exit status 1, one line, no traceback."""
    monkeypatch.chdir(tmp_path)
    if make:
        tok = get_tokenizer('char', chars=CHARS)
        save_pretrained(tiny_model(vocab_size=make), str(tmp_path / 'm'), extra_meta={'tokenizer': tok.meta()})
    with pytest.raises(SystemExit) as e:
        argv, sys.argv = sys.argv, ['sample.py', '--device=cpu', '--init_from=m', *args]
        try:
            runpy.run_path(os.path.join(REPO, 'sample.py'), run_name='__main__')
        finally:
            sys.argv = argv
    err = capsys.readouterr().err
    assert e.value.code == status and err.startswith('error: ') and message in err and err.count('\n') == 1, err
