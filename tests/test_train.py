"""train.py end to end on a tiny model and a tiny char dataset: exact resume, DDP equivalence,
crash-safe checkpoints, NaN stop, torch.compile, wandb offline. Every run is a subprocess, as a user would run it."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import train_patched

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TINY = ['--device=cpu', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=4', '--eval_iters=2', '--log_interval=1', '--learning_rate=1e-2', '--min_lr=1e-3',
        '--warmup_iters=2', '--lr_decay_iters=8', '--weight_decay=0.1']
ENV = dict(os.environ, OMP_NUM_THREADS='1')


SHAPE = ('--n_layer=', '--n_head=', '--n_embd=')


def train(*args, torchrun=False, check=True, env=None, script='train.py', tiny=TINY, timeout=300):
    """train.py (or a script wrapping it) with TINY's settings first, then args; torchrun: 2 ranks."""
    # a run from a pretrained model takes its shape from that model: TINY's shape keys only go to runs from scratch
    pretrained = any(a.startswith('--init_from=') and a != '--init_from=resume' for a in args)
    tiny = [a for a in tiny if not a.startswith(SHAPE)] if pretrained else tiny
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'] if torchrun
           else [sys.executable]) + [script, *tiny, *args]
    r = subprocess.run(cmd, cwd=REPO, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def metrics(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    train_rows = {r['iter']: r for r in rows if 'train_loss' in r}
    val_rows = {r['iter']: r['val_loss'] for r in rows if 'val_loss' in r}
    return train_rows, val_rows


def load_ckpt(out_dir):
    return torch.load(os.path.join(out_dir, 'ckpt.pt'), map_location='cpu', weights_only=True)


def expected_lr(it, lr=1e-2, min_lr=1e-3, warmup=2, decay=8):
    import math
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    return min_lr + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (decay - warmup))) * (lr - min_lr)


def test_exact_resume(data_dir, tmp_path):
    """4 iterations + resume for 4 more == 8 uninterrupted: identical losses, lr and final weights.
    Dropout is on, so the restored torch RNG state is exercised too; 2 micro-steps per iteration."""
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [f'--data_dir={data_dir}', '--eval_interval=4', '--dropout=0.1', '--gradient_accumulation_steps=2']
    train(*common, f'--out_dir={a}', '--max_iters=4')
    assert load_ckpt(a)['iter_num'] == 4
    train(*common, f'--out_dir={a}', '--max_iters=8', '--init_from=resume')
    train(*common, f'--out_dir={b}', '--max_iters=8')
    (ta, va), (tb, vb) = metrics(a), metrics(b)
    assert sorted(ta) == sorted(tb) == list(range(1, 9))
    for it in range(1, 9):
        assert ta[it]['train_loss'] == tb[it]['train_loss'], it
        assert ta[it]['lr'] == pytest.approx(expected_lr(it - 1), rel=1e-6)  # lr of the iteration just run
        assert ta[it]['lr'] == tb[it]['lr']
        assert ta[it]['tokens'] == it * 2 * 4 * 32
    assert va == vb and sorted(va) == [0, 4, 8]
    assert ta[1]['train_loss'] != ta[8]['train_loss']  # it trained
    ca, cb = load_ckpt(a), load_ckpt(b)
    assert ca['iter_num'] == cb['iter_num'] == 8
    for k in cb['model']:
        assert torch.equal(ca['model'][k], cb['model'][k]), k
    assert torch.equal(ca['rng']['torch'], cb['rng']['torch'])
    with open(os.path.join(a, 'train_config.json')) as f:
        saved = json.load(f)
    assert saved['config']['init_from'] == 'resume' and saved['config']['data_dir'] == data_dir
    assert saved['model_args']['n_embd'] == 32 and saved['model_args']['vocab_size'] % 64 == 0


def test_ddp_matches_one_process(data_dir, tmp_path):
    """torchrun with 2 gloo ranks x 2 micro-steps == 1 process x 4 micro-steps: the same global batch,
    so the same losses up to float32 summation order."""
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    common = [f'--data_dir={data_dir}', '--max_iters=4', '--eval_interval=4', '--gradient_accumulation_steps=4']
    train(*common, f'--out_dir={one}')
    train(*common, f'--out_dir={two}', torchrun=True)
    (t1, v1), (t2, v2) = metrics(one), metrics(two)
    assert sorted(t1) == sorted(t2) == [1, 2, 3, 4]
    for it in t1:
        assert t2[it]['train_loss'] == pytest.approx(t1[it]['train_loss'], rel=1e-5, abs=0), it
    for it in v1:
        assert v2[it] == pytest.approx(v1[it], rel=1e-5, abs=0), it
    w1, w2 = load_ckpt(one)['model'], load_ckpt(two)['model']
    for k in w1:
        a, b = w1[k], w2[k]
        if k.endswith('attn.c_attn.bias'):
            # the key bias adds q.b_k to every logit of a query, which softmax ignores: its true gradient is 0,
            # and Adam's m/sqrt(v) turns the float noise left in it into +-lr steps. Compare q and v biases only.
            keep = (torch.arange(a.numel()) // 16) % 3 != 1  # head_size 16, rows [q_h k_h v_h] per head
            a, b = a[keep], b[keep]
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=k)


def test_crash_during_save_keeps_last_checkpoint(data_dir, tmp_path):
    """Kill the process halfway through writing the next checkpoint: ckpt.pt is still the last complete one,
    and resuming from it works. Then a NaN stops the run without overwriting it, and garbage is refused."""
    out = str(tmp_path / 'crash')
    common = [f'--data_dir={data_dir}', f'--out_dir={out}', '--eval_interval=2']
    train(*common, '--max_iters=2')
    before = load_ckpt(out)
    # torch.save replaced by one that dies after writing some bytes
    r = train_patched("import os, torch\n"
                      "def dying_save(obj, f, *a, **k):\n"
                      "    f.write(b'PK partial checkpoint'); f.flush(); os._exit(3)\n"
                      "torch.save = dying_save\n", *TINY, *common, '--max_iters=4', '--init_from=resume')
    assert r.returncode == 3, r.stderr[-2000:]
    assert os.path.getsize(os.path.join(out, 'ckpt.pt.tmp')) > 0  # it really died mid-save
    after = load_ckpt(out)
    assert after['iter_num'] == 2
    for k in before['model']:
        assert torch.equal(after['model'][k], before['model'][k])
    train(*common, '--max_iters=4', '--init_from=resume')
    assert load_ckpt(out)['iter_num'] == 4

    # divergence: a huge learning rate makes the loss non-finite; the run stops, ckpt.pt stays at iter 4
    r = train(*common, '--max_iters=8', '--init_from=resume', '--learning_rate=1e30', '--min_lr=1e30',
              check=False)
    assert r.returncode != 0 and 'diverged' in r.stderr, r.stderr[-2000:]
    assert load_ckpt(out)['iter_num'] == 4

    with open(os.path.join(out, 'ckpt.pt'), 'wb') as f:
        f.write(b'not a checkpoint')
    r = train(*common, '--max_iters=6', '--init_from=resume', check=False)
    assert r.returncode == 1 and 'not a readable checkpoint' in r.stderr, r.stderr[-2000:]


def test_compile_matches_eager(data_dir, tmp_path):
    """torch.compile (inductor on CPU) gives the same losses as eager, to float32 kernel-fusion rounding."""
    common = [f'--data_dir={data_dir}', '--max_iters=2', '--eval_interval=2', '--n_layer=1', '--eval_iters=1']
    train(*common, f'--out_dir={tmp_path / "eager"}')
    train(*common, f'--out_dir={tmp_path / "compiled"}', '--compile=True')
    (te, ve), (tc, vc) = metrics(str(tmp_path / 'eager')), metrics(str(tmp_path / 'compiled'))
    for it in te:
        assert tc[it]['train_loss'] == pytest.approx(te[it]['train_loss'], rel=1e-5), it
    for it in ve:
        assert vc[it] == pytest.approx(ve[it], rel=1e-5), it


def test_wandb_offline(data_dir, tmp_path):
    """wandb_log=True with WANDB_MODE=offline (no network, no account): the run trains as usual and wandb's offline
    run log receives every loss of metrics.jsonl (wandb stores history values as JSON text in the .wandb file)."""
    import glob
    out = tmp_path / 'out'
    train(f'--data_dir={data_dir}', '--max_iters=4', '--eval_interval=2', f'--out_dir={out}', '--wandb_log=True',
          env=dict(WANDB_MODE='offline', WANDB_DIR=str(tmp_path), WANDB_SILENT='true'))
    runs = glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / 'run-*.wandb'))
    assert len(runs) == 1, runs
    with open(runs[0], 'rb') as f:
        log = f.read()
    train_rows, val_rows = metrics(str(out))
    losses = [r['train_loss'] for r in train_rows.values()] + list(val_rows.values())
    assert len(losses) == 4 + 3
    for loss in losses:
        assert json.dumps(loss).encode() in log, loss


# ------------------------------------------------------------------ growth in train.py (Recipe 2 in one command)
GROW = ['--grow_n_embd=64', '--grow_n_layer=3', '--grow_method=isotropic']


def test_growth_in_train_equals_expand_then_init_from(data_dir, tmp_path):
    """train.py's in-process growth gives bit-identical weights to expand.py followed by init_from=<its directory>:
    both grow in float64 from the same float32 weights with the same seed. Two iterations of training from either
    are bit-identical too, and the grown run's step-0 val loss is the small model's (float32, 1e-5)."""
    small, grown_dir = str(tmp_path / 'small'), str(tmp_path / 'grown_dir')
    common = [f'--data_dir={data_dir}', '--eval_interval=2']
    train(*common, f'--out_dir={small}', '--max_iters=4')
    r = train(*common, f'--out_dir={tmp_path / "in"}', f'--init_from={small}', '--max_iters=2', '--save_hf=True',
              *GROW)
    assert 'grew 2L 2H x 16 = 32' in r.stdout and 'max |dlogits|' in r.stdout
    e = subprocess.run([sys.executable, 'expand.py', f'--init_from={small}', f'--out_dir={grown_dir}',
                        '--n_embd=64', '--n_layer=3', '--method=isotropic'], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert e.returncode == 0, e.stderr
    train(*common, f'--out_dir={tmp_path / "ex"}', f'--init_from={grown_dir}', '--max_iters=2')
    a, b = load_ckpt(str(tmp_path / 'in')), load_ckpt(str(tmp_path / 'ex'))
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    (ta, va), (tb, vb) = metrics(str(tmp_path / 'in')), metrics(str(tmp_path / 'ex'))
    assert [r['train_loss'] for r in ta.values()] == [r['train_loss'] for r in tb.values()] and va == vb

    # step 0 of the grown run is the small model: the same val batches, float32
    small_val = metrics(small)[1][4]
    assert va[0] == pytest.approx(small_val, abs=1e-5, rel=0)
    with open(tmp_path / 'in' / 'train_config.json') as f:
        growth = json.load(f)['growth']
    assert growth['small_val_loss'] == small_val and growth['max_abs_dlogits'] <= 1e-9
    assert growth['expanded_from'] == small and growth['method'] == 'isotropic'
    assert growth['source']['n_embd'] == 32 and growth['target']['n_embd'] == 64 and growth['layer_map'] == [0, 1, None]
    with open(tmp_path / 'in' / 'model' / 'config.json') as f:
        record = json.load(f)['growing_sparse']  # the exported model's provenance
    assert record['method'] == 'isotropic' and record['max_abs_dlogits'] == growth['max_abs_dlogits']
    assert record['trained_from'] == small and record['iter_num'] == 2


def test_grown_run_resumes_without_growing_again(data_dir, tmp_path):
    """A killed grown run resumes from ckpt.pt (the grown weights), not by growing the small model again: 2 + 2
    iterations equal 4 straight. Other grow settings on resume, or a tolerance the growth cannot meet, are refused."""
    small, a, b = str(tmp_path / 'small'), str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [f'--data_dir={data_dir}', '--eval_interval=2', f'--init_from={small}', *GROW]
    train(f'--data_dir={data_dir}', f'--out_dir={small}', '--max_iters=2', '--eval_interval=2')
    train(*common, f'--out_dir={a}', '--max_iters=2')
    r = train(*common, f'--out_dir={a}', '--max_iters=4', '--init_from=resume')
    assert 'grew' not in r.stdout
    train(*common, f'--out_dir={b}', '--max_iters=4')
    (ta, va), (tb, vb) = metrics(a), metrics(b)
    assert [r['train_loss'] for r in ta.values()] == [r['train_loss'] for r in tb.values()] and va == vb
    ca, cb = load_ckpt(a), load_ckpt(b)
    for k in cb['model']:
        assert torch.equal(ca['model'][k], cb['model'][k]), k
    assert ca['growth']['expanded_from'] == small
    with open(os.path.join(a, 'train_config.json')) as f:
        assert json.load(f)['growth']['max_abs_dlogits'] == ca['growth']['max_abs_dlogits']  # kept on resume

    r = train(*common, f'--out_dir={a}', '--max_iters=6', '--init_from=resume', '--grow_n_embd=96', check=False)
    assert r.returncode == 2 and 'does not grow it again' in r.stderr and r.stderr.count('\n') == 1, r.stderr
    r = train(*common, f'--out_dir={tmp_path / "c"}', '--max_iters=2', '--grow_tolerance=1e-30', check=False)
    assert r.returncode == 1 and 'not function-preserving' in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert not os.path.exists(tmp_path / 'c')
    r = train(f'--data_dir={data_dir}', f'--out_dir={tmp_path / "d"}', '--grow_n_embd=64', check=False)
    assert r.returncode == 2 and 'grow a pretrained model' in r.stderr


def test_out_dir_with_a_run_is_not_overwritten(data_dir, tmp_path):
    """A fresh run refuses an out_dir that holds a run; overwrite=True replaces it; checkpoint_interval saves
    checkpoints only at its multiples and at the end."""
    out = str(tmp_path / 'out')
    common = [f'--data_dir={data_dir}', f'--out_dir={out}', '--eval_interval=2']
    train(*common, '--max_iters=6', '--checkpoint_interval=4')
    assert load_ckpt(out)['iter_num'] == 6
    before = open(os.path.join(out, 'metrics.jsonl')).read()
    r = train(*common, '--max_iters=2', check=False)
    assert r.returncode == 1 and 'already holds a run' in r.stderr
    assert open(os.path.join(out, 'metrics.jsonl')).read() == before and load_ckpt(out)['iter_num'] == 6
    train(*common, '--max_iters=2', '--overwrite=True')
    assert load_ckpt(out)['iter_num'] == 2 and sorted(metrics(out)[1]) == [0, 2]
    r = train(*common, '--max_iters=2', '--overwrite=True', '--checkpoint_interval=3', check=False)
    assert r.returncode == 2 and 'multiple of eval_interval' in r.stderr
    # checkpoint_interval=4 over 6 iterations: saved at 4 and at the end, not at 2
    out2 = str(tmp_path / 'out2')
    r = train_patched("import atexit, torch\n"
                      "saved, real = [], torch.save\n"
                      "torch.save = lambda obj, f, *a, **k: (saved.append(obj['iter_num']), real(obj, f, *a, **k))[1]\n"
                      "atexit.register(lambda: print('saved', saved))\n",
                      *TINY, f'--data_dir={data_dir}', f'--out_dir={out2}', '--eval_interval=2', '--max_iters=6',
                      '--checkpoint_interval=4')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'saved [4, 6]' in r.stdout
