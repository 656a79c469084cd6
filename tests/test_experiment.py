"""experiment.py: the crossover N and tokens-to-target on curves with known answers, and the runner end to end on
tiny models (a small model pretrained, grown, arms run; finished arms skipped, a killed experiment continued)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiment import crossover, tokens_to_reach  # noqa: E402

ENV = dict(os.environ, OMP_NUM_THREADS='1')


# ------------------------------------------------------------------ curves
def test_no_crossing():
    recipe1 = [(0, 11.0), (100, 7.0), (200, 6.0), (300, 5.5)]
    recipe2 = [(0, 5.0), (100, 4.8), (200, 4.7), (300, 4.6)]
    assert crossover(recipe1, recipe2) is None
    assert tokens_to_reach(recipe2, 5.5) == 0  # starts below Recipe 1's final loss
    assert tokens_to_reach(recipe1, 4.0) is None


def test_crossing_exactly_at_an_eval_point():
    recipe1 = [(0, 10.0), (100, 6.0), (200, 5.0), (300, 4.0)]
    recipe2 = [(0, 5.5), (100, 5.2), (200, 5.0), (300, 4.9)]
    assert crossover(recipe1, recipe2) == 200.0
    assert tokens_to_reach(recipe1, 5.0) == 200.0
    assert tokens_to_reach(recipe1, 4.0) == 300.0


def test_crossing_between_points_on_different_grids():
    """Recipe 1 falls linearly from 10 at 0 to 0 at 100 (evaluated every 10), Recipe 2 is flat at 5 (evaluated at
    0, 7, 14, ...): they meet at exactly 50, which lies on neither grid's points of the other."""
    recipe1 = [(t, 10.0 - t / 10) for t in range(0, 101, 10)]
    recipe2 = [(t, 5.0) for t in range(0, 99, 7)]
    assert crossover(recipe1, recipe2) == pytest.approx(50.0, abs=1e-9)
    # a kinked Recipe 2 on a coarse grid: 6 at 0, 2 at 80; Recipe 1 = 10 - t/10; 10 - t/10 = 6 - t/20 at t = 80
    assert crossover(recipe1, [(0, 6.0), (80, 2.0)]) == pytest.approx(80.0, abs=1e-9)
    # Recipe 2 flat at 4 from 35 on, evaluated at 35 and 91 only: 10 - t/10 = 4 at t = 60
    recipe2 = [(0, 4.2), (35, 4.0), (91, 4.0)]
    assert crossover(recipe1, recipe2) == pytest.approx(60.0, abs=1e-9)
    assert tokens_to_reach(recipe1, 4.5) == pytest.approx(55.0, abs=1e-9)
    # only the tokens both curves cover count: a crossing after the shorter curve ends is not reached
    assert crossover(recipe1[:5], recipe2) is None


# ------------------------------------------------------------------ the runner
TINY = ['--device=cpu', '--dtype=float32', '--block_size=32', '--batch_size=4', '--eval_iters=2', '--log_interval=5',
        '--warmup_iters=2', '--learning_rate=1e-2', '--min_lr=1e-3']


def write_config(tmp_path, data_dir, exp_dir, arm_iters=60):
    shape = ['--n_layer=2', '--n_head=2']
    sparse = ['--final_sparsity=0.75', '--prune_start=4', '--prune_end=20', '--prune_every=4',
              '--prune_schedule=geometric']
    cfg = dict(exp_dir=exp_dir,
               small_pretrain=shape + ['--n_embd=32', '--max_iters=20', '--seed=7'],
               common=TINY + [f'--data_dir={data_dir}', f'--max_iters={arm_iters}', '--eval_interval=10',
                              '--checkpoint_interval=10'],
               arms=dict(recipe1=shape + ['--n_embd=64'] + sparse,
                         recipe2=['--init_from={small}', '--grow_n_embd=64'] + sparse,
                         small_continued=['--init_from={small}']))
    path = tmp_path / f'{os.path.basename(exp_dir)}.py'
    path.write_text(''.join(f'{k} = {v!r}\n' for k, v in cfg.items()))
    return str(path)


def experiment(*args, **kw):
    return subprocess.Popen([sys.executable, 'experiment.py', *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def val_curve(exp_dir, arm):
    with open(os.path.join(exp_dir, arm, 'metrics.jsonl')) as f:
        return [(r['iter'], r['val_loss']) for r in map(json.loads, f) if 'val_loss' in r]


def test_runner_skips_finished_arms_and_continues_a_killed_one(data_dir, tmp_path):
    """An uninterrupted experiment is the reference. A second one is SIGKILLed while its second arm trains (its
    train.py dies with it); rerunning the command skips what finished, resumes that arm from its checkpoint, runs
    the rest, and every curve equals the reference's exactly. A third run runs nothing; a changed command is refused."""
    ref = str(tmp_path / 'ref')
    p = experiment(write_config(tmp_path, data_dir, ref))
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    summary = json.load(open(os.path.join(ref, 'summary.json')))
    assert set(summary['arms']) == {'recipe1', 'recipe2', 'small_continued'}
    # the grown model starts at the small model's loss: both run in float32, so equal to float32 rounding (the val
    # loss sums per-token losses in float64, which shows the grown model's last-bit differences)
    assert summary['y'] == pytest.approx(summary['small']['val_loss'], rel=1e-6)
    assert summary['arms']['recipe2']['final_nonzero_linear'] == summary['arms']['recipe1']['final_nonzero_linear']
    assert summary['arms']['recipe2']['growth']['max_abs_dlogits'] <= 1e-9
    assert summary['arms']['recipe2']['sunk_flops'] == summary['small']['pretrain']['flops'] > 0
    assert summary['arms']['recipe1']['sunk_flops'] is None
    assert os.path.exists(os.path.join(ref, 'hypothesis.png')) and os.path.exists(os.path.join(ref, 'summary.md'))

    exp = str(tmp_path / 'exp')
    cfg = write_config(tmp_path, data_dir, exp)
    p = experiment(cfg)
    ckpt = os.path.join(exp, 'recipe2', 'ckpt.pt')
    deadline = time.time() + 300
    while not os.path.exists(ckpt) and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    it = torch.load(ckpt, map_location='cpu', weights_only=True)['iter_num']
    assert 0 < it < 60, it  # killed mid-arm
    mtime = os.path.getmtime(os.path.join(exp, 'recipe1', 'ckpt.pt'))
    time.sleep(1)  # the trainer dies with the runner: ckpt.pt no longer changes
    assert torch.load(ckpt, map_location='cpu', weights_only=True)['iter_num'] == it

    p = experiment(cfg)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    assert '[small] finished earlier: not run again' in out and '[recipe1] finished earlier: not run again' in out
    assert f'[recipe2] resuming from iteration {it}' in out
    assert '[small_continued] starting' in out
    assert os.path.getmtime(os.path.join(exp, 'recipe1', 'ckpt.pt')) == mtime
    for arm in ('small', 'recipe1', 'recipe2', 'small_continued'):
        assert val_curve(exp, arm) == val_curve(ref, arm), arm

    p = experiment(cfg)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0 and out.count('finished earlier: not run again') == 4, out
    p = experiment(write_config(tmp_path, data_dir, exp, arm_iters=80))
    out, err = p.communicate(timeout=600)
    assert p.returncode == 1 and 'already ran with other arguments' in err and err.count('\n') == 1, err


def test_the_70m_experiment_configs_run_offline(data_dir, tmp_path):
    """config/experiment_70m.py and its config/grow_70m*.py arms, as documented, offline: a local small model instead
    of the hub (--small=<dir>), one process, and a one-iteration CPU budget. Each arm gets the shape it promises."""
    small = str(tmp_path / 'small')
    r = subprocess.run([sys.executable, 'train.py', *TINY, f'--data_dir={data_dir}', f'--out_dir={small}',
                        '--n_layer=2', '--n_head=1', '--n_embd=64', '--max_iters=2', '--eval_interval=2',
                        '--save_hf=True'], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    exp = str(tmp_path / 'exp70m')
    common = [a for a in TINY if 'lr' not in a and 'learning_rate' not in a]  # the arms' own rates stay
    common += [f'--data_dir={data_dir}', '--compile=False', '--gradient_accumulation_steps=1', '--batch_size=2',
               '--max_iters=1', '--eval_interval=1', '--eval_iters=1', '--warmup_iters=0', '--checkpoint_interval=None',
               '--prune_start=0', '--prune_end=0', '--prune_every=1']
    p = experiment('config/experiment_70m.py', f'--small={small}/model', '--launcher=python', f'--exp_dir={exp}',
                   f'--common={common!r}')
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    s = json.load(open(os.path.join(exp, 'summary.json')))
    arms = s['arms']
    assert set(arms) == {'recipe2', 'recipe2_isotropic', 'recipe2_same_hp', 'recipe1', 'small_continued', 'dense_large'}
    cfg = {a: json.load(open(os.path.join(exp, a, 'train_config.json'))) for a in arms}
    for a in ('recipe2', 'recipe2_isotropic', 'recipe2_same_hp', 'recipe1', 'dense_large'):
        assert (cfg[a]['model_args']['n_embd'], cfg[a]['model_args']['n_head']) == (1024, 16), a
    assert cfg['recipe2']['growth']['method'] == 'top_left'
    assert cfg['recipe2_isotropic']['growth']['method'] == 'isotropic'
    assert cfg['recipe1']['growth'] is None and cfg['recipe1']['model_args']['n_layer'] == 6  # pythia-70m's depth
    assert cfg['small_continued']['model_args']['n_embd'] == 64  # Pythia-70m's head size: 1 head of 64
    assert (cfg['recipe2']['config']['learning_rate'], cfg['recipe2_same_hp']['config']['learning_rate'],
            cfg['recipe1']['config']['learning_rate']) == (3e-4, 1e-3, 1e-3)
    assert cfg['recipe1']['config']['final_sparsity'] == cfg['recipe2']['config']['final_sparsity'] == \
        1 - 44_630_016 / 127_008_768
    assert cfg['dense_large']['config']['final_sparsity'] == cfg['small_continued']['config']['final_sparsity'] == 0
    # the external small model's sunk cost: Pythia's 299.9 B tokens x the small model's FLOPs per token
    assert arms['recipe2']['sunk_flops'] == 299_892_736_000 * cfg['small_continued']['flops_per_token']
