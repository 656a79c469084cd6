"""train.py end to end on a tiny model and a tiny char dataset, every run a subprocess as a user runs it: exact resume,
micro-batch and DDP equivalence, growth in the run, calibrated one-shot pruning, the test split, compile, wandb."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_script, train_patched

TINY = ['--device=cpu', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=4', '--eval_iters=2', '--log_interval=1', '--learning_rate=1e-2', '--min_lr=1e-3',
        '--warmup_iters=2', '--lr_decay_iters=8', '--weight_decay=0.1']
ENV = dict(os.environ, OMP_NUM_THREADS='1')
SHAPE = ('--n_layer=', '--n_head=', '--n_embd=')


def train(*args, torchrun=False, check=True, env=None, script='train.py', tiny=TINY, timeout=300):
    """train.py (or a script wrapping it) with TINY's settings first, then args; torchrun: 2 ranks. A run from a
    pretrained model takes its shape from the model, so TINY's shape keys go to runs from scratch only."""
    if any(a.startswith('--init_from=') and a != '--init_from=resume' for a in args):
        tiny = [a for a in tiny if not a.startswith(SHAPE)]
    if not torchrun:  # forked from the server that imported torch once (conftest.run_script)
        r = run_script(script, *tiny, *args, env={**ENV, **(env or {})}, timeout=timeout)
    else:
        r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', script,
                            *tiny, *args], cwd=REPO, env={**ENV, **(env or {})}, capture_output=True, text=True,
                           timeout=timeout)
    assert not check or r.returncode == 0, r.stderr[-3000:]
    return r


def metrics(out_dir):
    """({iter: train record}, {iter: val loss}, the last eval record)."""
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    evals = [r for r in rows if 'val_loss' in r]
    return {r['iter']: r for r in rows if 'train_loss' in r}, {r['iter']: r['val_loss'] for r in evals}, evals[-1]


def load_ckpt(out_dir):
    return torch.load(os.path.join(out_dir, 'ckpt.pt'), map_location='cpu', weights_only=True)


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_exact_resume_with_pruning_dropout_and_accumulation(data_dir, tmp_path):
    """Killed after the checkpoint at 4, resumed to 8 == 8 uninterrupted: identical train losses (log_interval 3 leaves
    a window open across the checkpoint), lr, val losses, pruning masks and final weights; dropout on (the RNG state
    restored), 2 micro-steps per iteration, events before and after the resume. The lr follows warmup + cosine."""
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [f'--data_dir={data_dir}', '--eval_interval=4', '--dropout=0.1', '--gradient_accumulation_steps=2',
              '--final_sparsity=0.5', '--prune_start=2', '--prune_end=6', '--prune_every=2', '--log_interval=3']
    kill = ("import files, os\nwrite = files.write\n"  # killed right after the checkpoint of iteration 4
            "files.write = lambda p, *a, **k: (write(p, *a, **k), p.endswith('ckpt.pt') and "
            "open(p.replace('ckpt.pt', 'metrics.jsonl')).read().count('val_loss') == 2 and os._exit(9))\n")
    assert train_patched(kill, *TINY, *common, f'--out_dir={a}', '--max_iters=8').returncode == 9
    assert load_ckpt(a)['iter_num'] == 4
    train(*common, f'--out_dir={a}', '--max_iters=8', '--init_from=resume')
    train(*common, f'--out_dir={b}', '--max_iters=8')
    (ta, va, la), (tb, vb, lb) = metrics(a), metrics(b)
    assert sorted(ta) == sorted(tb) == [3, 6, 8] and va == vb and sorted(va) == [0, 4, 8]
    for it in ta:
        assert ta[it]['train_loss'] == tb[it]['train_loss'] and ta[it]['lr'] == tb[it]['lr'], it
        warm, t = 2, it - 1  # the lr of the iteration just run
        lr = 1e-2 * (t + 1) / (warm + 1) if t < warm else 1e-3 + 0.5 * (1 + math.cos(math.pi * (t - warm) / 6)) * 9e-3
        assert ta[it]['lr'] == pytest.approx(lr, rel=1e-9)
    assert la['sparsity'] == lb['sparsity'] == pytest.approx(0.5, abs=1e-3)
    ca, cb = load_ckpt(a), load_ckpt(b)
    assert same_weights(ca['model'], cb['model']) and same_weights(ca['pruner']['masks'], cb['pruner']['masks'])
    saved = json.load(open(os.path.join(a, 'train_config.json')))
    assert saved['config']['init_from'] == 'resume' and saved['config']['min_lr'] == 1e-3


def test_micro_batch_split_leaves_the_float64_gradient(data_dir, tmp_path):
    """The sequences of an iteration do not depend on micro_batch_size, and each chunk's mean loss is weighted by its
    share: 2 micro-steps of 4 sequences run as 2 forwards of 4, 1 of 8 or 4 of 2 give the same float64 weights after
    2 iterations (to 1e-12: float64 summation order)."""
    patch = "import torch\ntorch.set_default_dtype(torch.float64)\n"  # the whole model and AdamW in float64
    w = []
    for i, micro in enumerate(['--micro_batch_size=4', '--micro_batch_size=8', '--micro_batch_size=2']):
        r = train_patched(patch, *TINY, f'--data_dir={data_dir}', f'--out_dir={tmp_path / str(i)}', '--max_iters=2',
                          '--eval_interval=2', '--gradient_accumulation_steps=2', micro)
        assert r.returncode == 0, r.stderr[-2000:]
        w.append(load_ckpt(str(tmp_path / str(i)))['model'])
    assert w[0]['lm_head.weight'].dtype == torch.float64
    for other in w[1:]:
        for k in w[0]:
            torch.testing.assert_close(other[k], w[0][k], rtol=1e-12, atol=1e-12, msg=k)


def test_ddp_matches_one_process(data_dir, tmp_path):
    """torchrun with 2 gloo ranks x 2 micro-steps == 1 process x 4 micro-steps: the same global batch, so the same
    losses and weights up to float32 summation order."""
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    common = [f'--data_dir={data_dir}', '--max_iters=4', '--eval_interval=4', '--gradient_accumulation_steps=4']
    train(*common, f'--out_dir={one}')
    train(*common, f'--out_dir={two}', torchrun=True)
    (t1, v1, _), (t2, v2, _) = metrics(one), metrics(two)
    assert sorted(t1) == sorted(t2) == [1, 2, 3, 4]
    for it in t1:
        assert t2[it]['train_loss'] == pytest.approx(t1[it]['train_loss'], rel=1e-5, abs=0), it
    assert v2 == pytest.approx(v1, rel=1e-5, abs=0)
    w1, w2 = load_ckpt(one)['model'], load_ckpt(two)['model']
    for k in w1:
        a, b = w1[k], w2[k]
        if k.endswith('attn.c_attn.bias'):  # the key bias's true gradient is 0 (softmax ignores a constant shift),
            keep = (torch.arange(a.numel()) // 16) % 3 != 1  # so AdamW steps it by rounding noise: q and v only
            a, b = a[keep], b[keep]
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=k)


@pytest.fixture(scope='module')
def small(tmp_path_factory, data_dir):
    out = str(tmp_path_factory.mktemp('small') / 'run')
    train(f'--data_dir={data_dir}', f'--out_dir={out}', '--max_iters=4', '--eval_interval=2')
    return out


GROW = ["--grow={'n_embd': 64, 'n_layer': 3, 'method': 'isotropic'}"]


def test_growth_in_train_equals_export_then_init_from_and_resumes(small, data_dir, tmp_path):
    """train.py's in-process growth gives bit-identical weights to an export of the grown model (--max_iters=0
    --save_hf=True) then init_from=<its directory> (both grow in float64 with the same seed), and so do two
    iterations trained from either; the grown run starts at the small model's val loss (float32, 1e-5). A killed
    grown run resumes without growing again: 2 + 2 == 4."""
    grown_dir, common = str(tmp_path / 'grown_dir'), [f'--data_dir={data_dir}', '--eval_interval=2']
    r = train(*common, f'--out_dir={tmp_path / "in"}', f'--init_from={small}', '--max_iters=2', '--save_hf=True',
              *GROW)
    assert 'grew 2L 2H x 16 = 32' in r.stdout and 'max |dlogits|' in r.stdout
    train(*common, f'--out_dir={grown_dir}', f'--init_from={small}', '--max_iters=0', '--save_hf=True', *GROW)
    assert not os.path.exists(os.path.join(grown_dir, 'ckpt.pt'))  # an export only: nothing trained
    train(*common, f'--out_dir={tmp_path / "ex"}', f'--init_from={grown_dir}/model', '--max_iters=2')
    assert same_weights(load_ckpt(str(tmp_path / 'in'))['model'], load_ckpt(str(tmp_path / 'ex'))['model'])
    (ta, va, _), (tb, vb, _) = metrics(str(tmp_path / 'in')), metrics(str(tmp_path / 'ex'))
    assert [r['train_loss'] for r in ta.values()] == [r['train_loss'] for r in tb.values()] and va == vb
    growth = json.load(open(tmp_path / 'in' / 'train_config.json'))['growth']
    assert va[0] == pytest.approx(metrics(small)[1][4], abs=1e-5, rel=0) and growth['max_abs_dlogits'] <= 1e-9
    assert growth['expanded_from'] == small and growth['method'] == 'isotropic'
    record = json.load(open(tmp_path / 'in' / 'model' / 'config.json'))['growing_sparse']
    assert record['max_abs_dlogits'] == growth['max_abs_dlogits'] and record['trained_from'] == small

    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common += [f'--init_from={small}', *GROW]
    train(*common, f'--out_dir={a}', '--max_iters=2')
    r = train(*common, f'--out_dir={a}', '--max_iters=4', '--init_from=resume')
    assert 'grew' not in r.stdout
    train(*common, f'--out_dir={b}', '--max_iters=4')
    assert metrics(a)[1] == metrics(b)[1] and same_weights(load_ckpt(a)['model'], load_ckpt(b)['model'])
    r = train(*common, f'--out_dir={a}', '--max_iters=6', '--init_from=resume', "--grow={'n_embd': 96}", check=False)
    assert r.returncode == 2 and "trained with grow=" in r.stderr and r.stderr.count('\n') == 1, r.stderr


@pytest.mark.parametrize('score', ['magnitude', 'sparsegpt'])
def test_status_quo_one_event_then_fixed_masks_and_the_test_split(data_dir, tmp_path, score):
    """The status quo arm: dense until T - r, one event (magnitude, or SparseGPT on calibration batches never trained
    on) to the final sparsity, then the masks fixed; the last evaluation also scores the whole test split once."""
    from data.prepare import write_dataset
    from data.tokenizer import get_tokenizer
    data = str(tmp_path / 'data')
    docs = [f'doc {i}: ' + 'the sparse model grows and prunes. ' * 30 for i in range(40)]
    write_dataset(data, docs, get_tokenizer('char', chars=''.join(sorted(set(''.join(docs))))), source='t',
                  val_fraction=0.2, num_proc=1, test_fraction=0.5)
    out = str(tmp_path / 'sq')
    train(f'--data_dir={data}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=2', '--final_sparsity=0.6',
          '--prune_start=3', '--prune_end=3', f'--score={score}', '--calib_batches=2')
    evals = [json.loads(line) for line in open(os.path.join(out, 'metrics.jsonl')) if 'val_loss' in line]
    assert [r['sparsity'] for r in evals] == [0.0, 0.0, pytest.approx(0.6, abs=1e-3), pytest.approx(0.6, abs=1e-3)]
    masks = load_ckpt(out)['pruner']['masks']
    weights = load_ckpt(out)['model']
    assert all(torch.equal(weights[k] != 0, m) for k, m in masks.items())  # pruned stay 0 through AdamW
    assert 'test_loss' in evals[-1] and math.isfinite(evals[-1]['test_loss']) and 'test_loss' not in evals[-2]


def test_compile_matches_eager(data_dir, tmp_path):
    """torch.compile (inductor on CPU) gives the same losses as eager, to float32 kernel-fusion rounding."""
    common = [f'--data_dir={data_dir}', '--max_iters=2', '--eval_interval=2', '--n_layer=1', '--eval_iters=1']
    train(*common, f'--out_dir={tmp_path / "eager"}')
    train(*common, f'--out_dir={tmp_path / "compiled"}', '--compile=True')
    (te, ve, _), (tc, vc, _) = metrics(str(tmp_path / 'eager')), metrics(str(tmp_path / 'compiled'))
    assert [r['train_loss'] for r in tc.values()] == pytest.approx([r['train_loss'] for r in te.values()], rel=1e-5)
    assert vc == pytest.approx(ve, rel=1e-5)


def test_wandb_offline(data_dir, tmp_path):
    """wandb_log=True with WANDB_MODE=offline (no network, no account): wandb's offline run log receives every loss
    of metrics.jsonl (it stores history values as JSON text in the .wandb file)."""
    import glob
    out = tmp_path / 'out'
    train(f'--data_dir={data_dir}', '--max_iters=2', '--eval_interval=2', f'--out_dir={out}', '--wandb_log=True',
          env=dict(WANDB_MODE='offline', WANDB_DIR=str(tmp_path), WANDB_SILENT='true'))
    runs = glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / 'run-*.wandb'))
    log = open(runs[0], 'rb').read()
    t, v, _ = metrics(str(out))
    losses = [r['train_loss'] for r in t.values()] + list(v.values())
    assert len(losses) == 4 and all(json.dumps(x).encode() in log for x in losses)
