"""Bad input and lost work. A battery of bad inputs through every script as a user would type them: each must exit
non-zero with one line on stderr, no traceback, and leave the filesystem as it was. Then what must never be lost:
a busy out_dir, a full disk, Ctrl-C, a half-written metrics line, a resume with other settings."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import train_patched

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
ENV = dict(os.environ, OMP_NUM_THREADS='1')
TINY = ['--device=cpu', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=4', '--eval_iters=2', '--log_interval=1', '--learning_rate=1e-2', '--warmup_iters=2']


def run(script, *args, cwd=REPO, check=None, env=None, timeout=300):
    r = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, env={**ENV, **(env or {})},
                       capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert r.returncode == check, r.stderr[-3000:]
    return r


def snapshot(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns, os.path.isdir(p))
    return out


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    """A workspace: two char datasets (other alphabets), a pruned train.py run with its HF export, damaged datasets,
    damaged model directories, bad input files."""
    from data.prepare import write_dataset
    from data.tokenizer import get_tokenizer
    from hf_io import save_pretrained
    from model import GPT, GPTConfig
    w = tmp_path_factory.mktemp('ws')
    text = ['the sparse model grows wider and deeper while pruning weights. ' * 20] * 30
    write_dataset(str(w / 'data'), text, get_tokenizer('char', chars=''.join(sorted(set(text[0])))), source='t',
                  val_fraction=0.2, num_proc=1)
    other = ['abcdefghij klmnop. ' * 40] * 30
    write_dataset(str(w / 'data2'), other, get_tokenizer('char', chars=''.join(sorted(set(other[0])))), source='t',
                  val_fraction=0.2, num_proc=1)
    run('train.py', *TINY, f'--data_dir={w / "data"}', f'--out_dir={w / "run"}', '--max_iters=4', '--eval_interval=2',
        '--final_sparsity=0.5', '--prune_start=0', '--prune_end=2', '--prune_every=1', '--save_hf=True', check=0)
    for name, meta in (('bad_json', '{"tokenizer": "char", '), ('bad_keys', '{"tokenizer": "char"}')):
        (w / name).mkdir()
        (w / name / 'meta.json').write_text(meta)
    for name, size in (('empty_bin', 0), ('odd_bin', 3)):
        (w / name).mkdir()
        (w / name / 'meta.json').write_text((w / 'data' / 'meta.json').read_text())
        (w / name / 'train.bin').write_bytes(b'\0' * size)
        (w / name / 'val.bin').write_bytes((w / 'data' / 'val.bin').read_bytes())
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=32))
    for name in ('corrupt_st', 'no_fields', 'bad_config'):
        save_pretrained(m, str(w / name), extra_meta={'note': 'test'})
    (w / 'corrupt_st' / 'model.safetensors').write_bytes(b'not a safetensors file at all')
    cfg = json.loads((w / 'no_fields' / 'config.json').read_text())
    del cfg['hidden_size']
    (w / 'no_fields' / 'config.json').write_text(json.dumps(cfg))
    (w / 'bad_config' / 'config.json').write_text('{"model_type": "gpt_neox",')
    (w / 'prompt_latin1.txt').write_bytes('caf\xe9 \xff'.encode('latin-1'))
    (w / 'corrupt.jsonl.xz').write_bytes(b'\xfd7zXZ\x00\x00 this is not xz')
    (w / 'numbers.jsonl').write_text('{"text": "fine"}\n{"text": 42}\n')
    (w / 'broken.jsonl').write_text('{"text": "fine"}\n{"text": "half\n')
    (w / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
    (w / 'a_file').write_text('x')
    (w / 'keep').mkdir()
    (w / 'keep' / 'notes.txt').write_text('mine')
    busy = w / 'busy'
    busy.mkdir()
    (busy / 'train.lock').write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this test process: alive
    (w / 'nan.py').write_text("final_sparsity = float('nan')\n")
    (w / 'exp_no_r1.py').write_text("arms = {'recipe2': ['--init_from={small}']}\nsmall = 'x'\n")
    return w


D, R = '--data_dir=data', '--out_dir=out'
# resuming ws/run with its own settings: each case below changes one of them
RESUME = ['--out_dir=run', '--init_from=resume', '--device=cpu', '--batch_size=4', '--final_sparsity=0.5',
          '--prune_end=2', '--prune_every=1']
BAD = [
    # train.py: values
    ('train.py', [D, R, '--gradient_accumulation_steps=0'], 'gradient_accumulation_steps=0: must be > 0'),
    ('train.py', [D, R, '--gradient_accumulation_steps=-2'], 'must be > 0'),
    ('train.py', [D, R, '--final_sparsity=-0.1'], 'final_sparsity=-0.1: must be in [0, 1)'),
    ('train.py', [D, R, '--final_sparsity=1e999'], "'final_sparsity' = inf: give a finite number"),
    ('train.py', ['nan.py', D, R], "'final_sparsity' = nan: give a finite number"),
    ('train.py', [D, R, '--max_iters=-1'], 'max_iters=-1: must be >= 0'),
    ('train.py', [D, R, '--max_iters=None'], "'max_iters' cannot be None"),
    ('train.py', [D, R, '--batch_size=0'], 'batch_size=0'),
    ('train.py', [D, R, '--eval_interval=0'], 'eval_interval=0'),
    ('train.py', [D, R, '--learning_rate=-0.001'], 'learning_rate=-0.001'),
    ('train.py', [D, R, '--beta1=1.5'], 'beta1=1.5'),
    ('train.py', [D, R, '--beta2=-0.1'], 'beta2=-0.1'),
    ('train.py', [D, R, '--weight_decay=-1.0'], 'weight_decay=-1.0'),
    ('train.py', [D, R, '--device=cuda:7'], "device='cuda:7': must be a device this machine has"),
    ('train.py', [D, R, '--device=tpu'], "device='tpu'"),
    ('train.py', [D, R, '--dtype=float16'], "dtype='float16'"),
    ('train.py', [D, R, '--model_preset=pythia-15m'], "model_preset='pythia-15m'"),
    ('train.py', [D, R, '--n_layer=0'], 'n_layer=0'),
    ('train.py', [D, R, '--dropout=1.0'], 'dropout=1.0'),
    ('train.py', [D, R, '--seed=-1'], 'seed=-1'),
    ('train.py', [D, R, '--prune_schedule=linear'], "prune_schedule='linear'"),
    ('train.py', [D, R, '--final_sparsity=0.5', '--prune_start=10', '--prune_end=5'], 'prune_end=5 is before'),
    ('train.py', [D, R, '--final_sparsity=0.5', '--pattern=3:4'], 'pattern 3:4 keeps 3'),
    ('train.py', [D, R, '--eval_interval=2', '--checkpoint_interval=3'], 'multiple of eval_interval'),
    ('train.py', [D, R, '--grow_n_embd=64'], 'grow a pretrained model'),
    ('train.py', [D, R, '--max_iterz=3'], "unknown config key 'max_iterz'"),
    ('train.py', [D, R, '--batch_size=2.5'], "'batch_size' expects int"),
    # train.py: files and out_dirs
    ('train.py', [D, R, '--init_from=resume'], 'does not exist'),
    ('train.py', ['--data_dir=bad_json', R], 'bad_json/meta.json is not valid JSON'),
    ('train.py', ['--data_dir=bad_keys', R], 'bad_keys/meta.json lacks vocab_size, dtype'),
    ('train.py', ['--data_dir=empty_bin', R], 'empty_bin/train.bin has 0 bytes'),
    ('train.py', ['--data_dir=odd_bin', R], 'odd_bin/train.bin has 3 bytes'),
    ('train.py', ['--data_dir=nowhere', R], 'nowhere/meta.json not found'),
    ('train.py', [D, '--out_dir=a_file'], 'is a file'),
    ('train.py', [D, '--out_dir=run'], 'already holds a run'),
    ('train.py', [D, '--out_dir=busy'], 'is in use by train.py pid'),
    ('train.py', [D, *RESUME, '--final_sparsity=0.3'], 'trained with final_sparsity=0.5, not 0.3'),
    ('train.py', [D, *RESUME, '--batch_size=8'], 'trained with batch_size=4, not 8'),
    ('train.py', [D, *RESUME, '--prune_end=3'], 'trained with prune_end=2, not 3'),
    ('train.py', [D, *RESUME, '--prune_schedule=geometric'], "trained with prune_schedule='cubic'"),
    ('train.py', ['--data_dir=data2', *RESUME], "tokenizer differs"),
    ('train.py', [D, R, '--init_from=corrupt_st'], 'corrupt_st/model.safetensors cannot be read'),
    ('train.py', [D, R, '--init_from=no_fields'], "lacks the field 'hidden_size'"),
    ('train.py', [D, R, '--init_from=bad_config'], 'bad_config/config.json is not valid JSON'),
    ('train.py', [D, R, '--init_from=run', '--n_embd=64'], 'takes the shape from the model'),
    # sample.py
    ('sample.py', ['--init_from=run', '--temperature=-1.0'], 'temperature=-1.0: must be >= 0'),
    ('sample.py', ['--init_from=run', '--top_p=1.5'], 'top_p=1.5'),
    ('sample.py', ['--init_from=run', '--max_new_tokens=-5'], 'max_new_tokens=-5'),
    ('sample.py', ['--init_from=run', '--top_k=0'], 'top_k=0'),
    ('sample.py', ['--init_from=run', '--num_samples=0'], 'num_samples=0'),
    ('sample.py', ['--init_from=run', '--dtype=int8'], "dtype='int8'"),
    ('sample.py', ['--init_from=run', '--start=FILE:prompt_latin1.txt'], 'is not UTF-8 text'),
    ('sample.py', ['--init_from=nothing_here'], 'could not be fetched from the Hugging Face hub'),
    # expand.py
    ('expand.py', ['--init_from=run', '--out_dir=.', '--overwrite=True', '--n_embd=64'], 'the working directory'),
    ('expand.py', ['--init_from=run', '--out_dir=..', '--overwrite=True', '--n_embd=64'], 'one of its parents'),
    ('expand.py', ['--init_from=run', '--out_dir=keep', '--overwrite=True', '--n_embd=64'], 'holds other files'),
    ('expand.py', ['--init_from=run', '--out_dir=keep', '--n_embd=64'], 'exists and is not empty'),
    ('expand.py', ['--init_from=run', '--out_dir=g', '--noise=-1.0'], 'noise=-1.0'),
    ('expand.py', ['--init_from=run', '--out_dir=g', '--check_dtype=float16'], "check_dtype='float16'"),
    ('expand.py', ['--init_from=run', '--out_dir=g', '--method=diagonal'], "method='diagonal'"),
    ('expand.py', ['--init_from=run', '--out_dir=g', '--n_embd=40'], 'whole number of heads'),
    # prune.py
    ('prune.py', ['--init_from=run', '--out_dir=p', '--batch_size=0', D], 'batch_size=0'),
    ('prune.py', ['--init_from=run', '--out_dir=p', '--sparsity=1.0'], 'sparsity=1.0'),
    ('prune.py', ['--init_from=run', '--out_dir=p', '--score=wanda', D, '--calib_batches=0'], 'calib_batches=0'),
    ('prune.py', ['--init_from=run', '--out_dir=.', '--overwrite=True'], 'the working directory'),
    ('prune.py', ['--init_from=run', '--out_dir=p', '--data_dir=bad_json'], 'bad_json/meta.json is not valid JSON'),
    ('prune.py', ['--init_from=run', '--out_dir=p', '--score=wanda'], 'pass --data_dir'),
    # bench.py
    ('bench.py', ['--model_preset=pythia-3b'], "model_preset='pythia-3b'"),
    ('bench.py', ['--dtype=fp8', '--device=cpu'], "dtype='fp8'"),
    ('bench.py', ['--mode=inference', '--device=cpu'], "mode='inference'"),
    ('bench.py', ['--real_data=True', '--device=cpu'], 'pass --data_dir'),
    # data/prepare.py
    ('data/prepare.py', ['--input=corrupt.jsonl.xz', '--out_dir=prepared', '--tokenizer=gpt2'], 'damaged or truncated'),
    ('data/prepare.py', ['--input=numbers.jsonl', '--out_dir=prepared', '--tokenizer=gpt2'],
     "numbers.jsonl:2: field 'text' is int, not text"),
    ('data/prepare.py', ['--input=broken.jsonl', '--out_dir=prepared', '--tokenizer=gpt2'],
     'broken.jsonl:2: not valid JSON'),
    ('data/prepare.py', ['--input=latin1.txt', '--out_dir=prepared', '--tokenizer=gpt2'], 'not UTF-8 text'),
    ('data/prepare.py', ['--input=numbers.jsonl', '--out_dir=prepared', '--val_fraction=0.0'], 'val_fraction=0.0'),
    ('data/prepare.py', ['--input=numbers.jsonl', '--out_dir=prepared', '--tokenizer=bpe'], "tokenizer='bpe'"),
    ('data/prepare.py', ['--input=nothing.jsonl', '--out_dir=prepared'], 'matches no file'),
    # eval.py
    ('eval.py', ['--init_from=run', "--tasks=['mmlu']"], "tasks=['mmlu']: must be a non-empty list"),
    ('eval.py', ['--init_from=run', "--tasks=['val']", '--data_dir=bad_json'], 'bad_json/meta.json is not valid JSON'),
    ('eval.py', ['--init_from=run', "--tasks=['lambada']", '--lambada=numbers.jsonl', '--device=cpu'],
     "numbers.jsonl:2: needs a JSON object with a string 'text' field"),
    ('eval.py', ['--init_from=run', '--max_length=4096'], 'exceeds the model'),
    # experiment.py
    ('experiment.py', ['exp_no_r1.py', '--exp_dir=e'], "must name at least 'recipe1'"),
    ('experiment.py', ['exp_no_r1.py', '--exp_dir=e', '--parallel=0'], 'parallel=0'),
]


@pytest.mark.parametrize('script, args, fragment', BAD, ids=[f'{s}:{" ".join(a)[:60]}' for s, a, _ in BAD])
def test_bad_input_is_one_line_and_changes_nothing(ws, script, args, fragment):
    before = snapshot(ws)
    r = run(script, *args, cwd=ws)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert fragment in lines[0], lines[0]
    assert snapshot(ws) == before


def test_battery_size_and_exit_convention(ws):
    assert len(BAD) >= 40 and len({s for s, _, _ in BAD}) == 8  # every script
    assert run('train.py', D, R, '--batch_size=0', cwd=ws).returncode == 2  # configuration
    assert run('train.py', '--data_dir=bad_json', R, cwd=ws).returncode == 1  # a file found at run time


# ------------------------------------------------------------------ nothing lost
def start_train(out, data, *args):
    # Ctrl-C's SIGINT as a terminal delivers it: a test suite started in the background (cmd &) ignores SIGINT, and a
    # child inherits that, so Python would never raise KeyboardInterrupt
    return subprocess.Popen([sys.executable, os.path.join(REPO, 'train.py'), *TINY, f'--data_dir={data}',
                             f'--out_dir={out}', *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_busy_out_dir_then_stale_lock_and_ctrl_c(ws, tmp_path):
    """A second train.py on a running out_dir refuses (the lock names the pid); after a SIGKILL the stale lock is
    detected and resume works; Ctrl-C stops a run with one line, no temp file, a loadable checkpoint, no lock."""
    out = str(tmp_path / 'out')
    p = start_train(out, ws / 'data', '--max_iters=100000', '--eval_interval=5')
    wait_for(os.path.join(out, 'ckpt.pt'), p)
    r = run('train.py', *TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--init_from=resume',
            '--max_iters=100000', '--eval_interval=5')
    assert r.returncode == 1 and f'in use by train.py pid {p.pid}' in r.stderr and r.stderr.count('\n') == 1
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert os.path.exists(os.path.join(out, 'train.lock'))  # SIGKILL: nothing could clean up
    p = start_train(out, ws / 'data', '--init_from=resume', '--max_iters=100000', '--eval_interval=5')
    before = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)['iter_num']
    t0 = time.time()
    while torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)['iter_num'] <= before:
        assert p.poll() is None and time.time() - t0 < 120
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.count('\n') == 1 and 'interrupted at iteration' in err, err
    assert 'Traceback' not in err
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'metrics.jsonl', 'train_config.json']  # no .tmp, no lock
    torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EROFS])
def test_full_disk_or_read_only_keeps_the_last_checkpoint(ws, tmp_path, code):
    out = str(tmp_path / 'out')
    common = [*TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', check=0)
    before = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)
    r = train_patched("import os, torch\n"
                      "def failing_save(obj, f, *a, **k):\n"
                      "    f.write(b'PK half a checkpoint'); f.flush()\n"
                      f"    raise OSError({code}, os.strerror({code}))\n"
                      "torch.save = failing_save\n", *common, '--max_iters=4', '--init_from=resume')
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and os.strerror(code) in r.stderr, r.stderr[-2000:]
    assert 'still holds the previous checkpoint' in r.stderr
    assert not os.path.exists(os.path.join(out, 'ckpt.pt.tmp'))
    after = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)
    assert after['iter_num'] == 2 and all(torch.equal(after['model'][k], v) for k, v in before['model'].items())


def test_half_written_metrics_line_does_not_block_resume(ws, tmp_path):
    out = str(tmp_path / 'out')
    common = [*TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', check=0)
    with open(os.path.join(out, 'metrics.jsonl'), 'a') as f:
        f.write('{"iter": 3, "tokens": 38')  # the run was killed mid-line
    run('train.py', *common, '--max_iters=4', '--init_from=resume', check=0)
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    assert [r['iter'] for r in rows if 'train_loss' in r] == [1, 2, 3, 4]


def test_expand_and_prune_overwrite_only_their_own_model_dirs(ws, tmp_path):
    """overwrite replaces an empty directory or a model directory this codebase wrote, nothing else."""
    g = tmp_path / 'g'
    run('expand.py', f'--init_from={ws / "run"}', f'--out_dir={g}', '--n_embd=64', check=0)
    first = (g / 'model.safetensors').read_bytes()
    run('expand.py', f'--init_from={ws / "run"}', f'--out_dir={g}', '--n_embd=64', '--seed=3', '--overwrite=True',
        check=0)
    assert (g / 'model.safetensors').read_bytes() != first  # replaced: it was ours
    p = tmp_path / 'p'
    p.mkdir()
    run('prune.py', f'--init_from={ws / "run"}', f'--out_dir={p}', '--sparsity=0.6', check=0)  # empty: fine
    run('prune.py', f'--init_from={ws / "run"}', f'--out_dir={p}', '--sparsity=0.7', '--overwrite=True', check=0)
    assert json.loads((p / 'config.json').read_text())['growing_sparse']['pruning'][-1]['sparsity'] == 0.7
    hf = tmp_path / 'theirs'  # a model directory without our record (e.g. from the hub) is not ours to replace
    hf.mkdir()
    (hf / 'config.json').write_text(json.dumps({'model_type': 'gpt_neox'}))
    r = run('prune.py', f'--init_from={ws / "run"}', f'--out_dir={hf}', '--overwrite=True')
    assert r.returncode == 1 and 'did not write' in r.stderr and os.listdir(hf) == ['config.json']


# ------------------------------------------------------------------ the review's findings
def test_resume_frees_the_loaded_checkpoint(ws, tmp_path):
    out = str(tmp_path / 'out')
    common = [*TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', check=0)
    r = train_patched("import gc, weakref, torch\n"
                      "class Ckpt(dict): pass\n"
                      "refs, real_load = [], torch.load\n"
                      "def load(*a, **k):\n"
                      "    r = real_load(*a, **k)\n"
                      "    if isinstance(r, dict) and 'optimizer' in r:\n"
                      "        r = Ckpt(r); refs.append(weakref.ref(r))\n"
                      "    return r\n"
                      "torch.load = load\n"
                      "real_clip = torch.nn.utils.clip_grad_norm_\n"
                      "def clip(*a, **k):\n"
                      "    gc.collect()\n"
                      "    print('alive', [r() is not None for r in refs])\n"
                      "    return real_clip(*a, **k)\n"
                      "torch.nn.utils.clip_grad_norm_ = clip\n", *common, '--max_iters=3', '--init_from=resume')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'alive [False]' in r.stdout  # at the first training step nothing holds the loaded checkpoint


def test_ranks_draw_different_dropout_and_resume_exactly(ws, tmp_path):
    """Each rank seeds seed + rank (the data order stays a function of (seed, iteration)); every rank's RNG state is
    checkpointed, so 2 ranks x (2 + 4 iterations) with dropout equal 6 straight, bit for bit."""
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [*TINY, f'--data_dir={ws / "data"}', '--eval_interval=2', '--dropout=0.2',
              '--gradient_accumulation_steps=2', '--log_interval=3']
    tr = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
          os.path.join(REPO, 'train.py')]
    for args in ([f'--out_dir={a}', '--max_iters=2'], [f'--out_dir={a}', '--max_iters=6', '--init_from=resume'],
                 [f'--out_dir={b}', '--max_iters=6']):
        r = subprocess.run(tr + common + args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    ca = torch.load(os.path.join(a, 'ckpt.pt'), map_location='cpu', weights_only=True)
    cb = torch.load(os.path.join(b, 'ckpt.pt'), map_location='cpu', weights_only=True)
    assert len(cb['rng_ranks']) == 2 and not torch.equal(cb['rng_ranks'][0]['torch'], cb['rng_ranks'][1]['torch'])
    for k in cb['model']:
        assert torch.equal(ca['model'][k], cb['model'][k]), k

    def val_rows(d):  # (the first run ended at its max_iters=2 and logged there: train-loss windows differ by design)
        with open(os.path.join(d, 'metrics.jsonl')) as f:
            return [(r['iter'], r['val_loss']) for r in map(json.loads, f) if 'val_loss' in r]
    assert val_rows(a) == val_rows(b) and len(val_rows(a)) == 4


def test_logged_train_loss_resumes_exactly(ws, tmp_path):
    """Killed right after the checkpoint at iteration 4 (log_interval 3: iteration 4 is in an open window), then
    resumed: every logged line equals the uninterrupted run's, the train loss at 6 included."""
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [*TINY, f'--data_dir={ws / "data"}', '--eval_interval=2', '--log_interval=3', '--max_iters=6']
    r = train_patched("import os\n"
                      "real, saves = os.replace, []\n"
                      "def replace(src, dst):\n"
                      "    real(src, dst)\n"
                      "    if dst.endswith('ckpt.pt'):\n"
                      "        saves.append(dst)\n"
                      "        if len(saves) == 2:\n"
                      "            os._exit(3)  # killed right after the checkpoint at iteration 4\n"
                      "os.replace = replace\n", *common, f'--out_dir={a}')
    assert r.returncode == 3, r.stderr[-2000:]
    assert torch.load(os.path.join(a, 'ckpt.pt'), map_location='cpu', weights_only=True)['iter_num'] == 4
    run('train.py', *common, f'--out_dir={a}', '--init_from=resume', check=0)
    run('train.py', *common, f'--out_dir={b}', check=0)

    def rows(d):
        with open(os.path.join(d, 'metrics.jsonl')) as f:
            return [(r['iter'], r.get('train_loss'), r.get('val_loss'), r['lr']) for r in map(json.loads, f)]
    assert rows(a) == rows(b) and [r[0] for r in rows(a) if r[1] is not None] == [3, 6]


def test_eval_lr_and_which_weights_save_hf_wrote(ws, tmp_path):
    """An eval line's lr is that of the last iteration run, as on the train lines; with always_save_checkpoint=False
    the export says it holds the last weights and ckpt.pt the best, at best_iter."""
    out = str(tmp_path / 'out')
    run('train.py', *TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=2',
        '--always_save_checkpoint=False', '--save_hf=True', '--learning_rate=0.3', check=0)
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    train_lr = {r['iter']: r['lr'] for r in rows if 'train_loss' in r}
    evals = [r for r in rows if 'val_loss' in r]
    assert evals[0]['lr'] is None and all(r['lr'] == train_lr[r['iter']] for r in evals[1:])
    best = min(evals[1:], key=lambda r: r['val_loss'])
    record = json.loads(open(os.path.join(out, 'model', 'config.json')).read())['growing_sparse']
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)
    assert record['weights'] == 'last' and record['iter_num'] == 6
    assert record['best_iter'] == best['iter'] == ckpt['iter_num'] and record['best_val_loss'] == best['val_loss']


def test_peak_flops_per_h100_variant():
    from model import peak_flops_of
    assert peak_flops_of('NVIDIA H100 80GB HBM3') == 989e12
    assert peak_flops_of('NVIDIA H100 PCIe') == 756e12
    assert peak_flops_of('NVIDIA H100 NVL') == 835e12
    assert peak_flops_of('NVIDIA H200') == 989e12 and peak_flops_of('NVIDIA GH200 480GB') == 989e12
    assert peak_flops_of('NVIDIA A100-SXM4-80GB') == 312e12 and peak_flops_of('NVIDIA GeForce GTX 1080') is None


def test_hub_download_fetches_one_weight_format(monkeypatch, tmp_path):
    import huggingface_hub
    from hf_io import resolve_model_dir
    asked = []
    monkeypatch.setattr(huggingface_hub, 'snapshot_download',
                        lambda repo, allow_patterns: asked.append(allow_patterns) or str(tmp_path))
    monkeypatch.setattr(huggingface_hub, 'list_repo_files',
                        lambda repo: ['config.json', 'model.safetensors', 'pytorch_model.bin', 'tokenizer.json'])
    resolve_model_dir('org/both-formats')
    monkeypatch.setattr(huggingface_hub, 'list_repo_files', lambda repo: ['config.json', 'pytorch_model.bin'])
    resolve_model_dir('org/bin-only')
    assert '*.safetensors' in asked[0] and not any('.bin' in p for p in asked[0])
    assert 'pytorch_model*.bin' in asked[1] and '*.safetensors' not in asked[1]


def test_pruned_model_keeps_its_zeros_when_continued(ws, tmp_path):
    """A prune.py directory, a pruning run's export and a pruning run's ckpt.pt, each trained on without pruning:
    the pruned weights are still exactly 0 afterwards (masks start from the model's zeros)."""
    from hf_io import load_model
    pruned = tmp_path / 'pruned'
    run('prune.py', f'--init_from={ws / "run"}', f'--out_dir={pruned}', '--sparsity=0.6', check=0)
    for src in (str(pruned), str(ws / 'run' / 'model'), str(ws / 'run' / 'ckpt.pt')):
        before = {n: w == 0 for n, w in load_model(src)[0].linear_weights().items()}
        out = str(tmp_path / f'cont{len(os.listdir(tmp_path))}')
        run('train.py', *[a for a in TINY if not a.startswith(('--n_', ))], f'--data_dir={ws / "data"}',
            f'--out_dir={out}', f'--init_from={src}', '--max_iters=3', '--eval_interval=3', check=0)
        after = load_model(out)[0].linear_weights()
        assert sum(int(z.sum()) for z in before.values()) > 0
        for n, w in after.items():
            assert bool((w[before[n]] == 0).all()), (src, n)


def test_first_log_line_excludes_compile_time(ws, tmp_path):
    """The first training iteration (where torch.compile compiles) is not timed: a first forward made to take 3 s
    does not show in the first log line's ms/iter."""
    out = str(tmp_path / 'out')
    r = train_patched("import time, model\n"
                      "real, slow = model.GPT.forward, [True]\n"
                      "def forward(self, *a, **k):\n"
                      "    if self.training and slow:\n"
                      "        slow.clear(); time.sleep(3)\n"
                      "    return real(self, *a, **k)\n"
                      "model.GPT.forward = forward\n", *TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}',
                      '--max_iters=4', '--log_interval=2', '--eval_interval=4')
    assert r.returncode == 0, r.stderr[-2000:]
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        speeds = [row['tok_per_sec'] for row in map(json.loads, f) if 'train_loss' in row]
    assert len(speeds) == 2 and 4 * 32 / speeds[0] < 1.0  # one timed iteration, far below the 3 s sleep
