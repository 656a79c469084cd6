"""experiment.py: the crossover N and tokens-to-target on curves with known answers; the sweep's choice, the seeds'
mean and spread and the test-split score from synthetic run folders; the runner end to end on tiny models (a sweep,
seeds at the best point, a killed experiment continued, finished runs never rerun, changed commands refused); every
shipped experiment config resolving to the settings it promises."""
import ast
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
import experiment as E

ENV = dict(os.environ, OMP_NUM_THREADS='1')


# ------------------------------------------------------------------ curves
def test_crossover_and_tokens_to_reach():
    """No crossing; a crossing exactly at an eval point; one between points of two different grids (linear
    interpolation on the union of the grids is exact); none after the shorter curve ends."""
    r1, r2 = [(0, 11.0), (100, 7.0), (200, 6.0), (300, 5.5)], [(0, 5.0), (100, 4.8), (200, 4.7), (300, 4.6)]
    assert E.crossover(r1, r2) is None and E.tokens_to_reach(r2, 5.5) == 0 and E.tokens_to_reach(r1, 4.0) is None
    assert E.crossover([(0, 10.0), (100, 6.0), (200, 5.0)], [(0, 5.5), (100, 5.2), (200, 5.0)]) == 200.0
    line = [(t, 10.0 - t / 10) for t in range(0, 101, 10)]  # 10 - t/10 meets 5 at 50, on neither grid
    assert E.crossover(line, [(t, 5.0) for t in range(0, 99, 7)]) == pytest.approx(50.0, abs=1e-9)
    assert E.crossover(line, [(0, 6.0), (80, 2.0)]) == pytest.approx(80.0, abs=1e-9)
    assert E.tokens_to_reach(line, 4.5) == pytest.approx(55.0, abs=1e-9)
    assert E.crossover(line[:5], [(0, 4.2), (35, 4.0), (91, 4.0)]) is None


def test_best_point_ties_and_grid_edge():
    """The lowest final loss wins, a tie goes to the earlier point in grid order, and a best learning rate at the
    lowest or highest value run is flagged (the optimum may lie outside), also when the grid holds points not run."""
    p = lambda lr, s: (('learning_rate', lr), ('score', s))  # noqa: E731
    finals = {p(1e-3, 'magnitude'): 5.0, p(2e-3, 'magnitude'): 4.5, p(2e-3, 'balanced'): 4.5, p(4e-3, 'balanced'): 4.7}
    assert E.best_point(finals) == (p(2e-3, 'magnitude'), False)
    finals[p(4e-3, 'magnitude')] = 4.4
    assert E.best_point(finals) == (p(4e-3, 'magnitude'), True)
    assert E.best_point({p(1e-3, 'balanced'): 3.0, **finals}) == (p(1e-3, 'balanced'), True)
    assert E.best_point({(('score', 'a'),): 1.0}) == ((('score', 'a'),), False)


def fake_run(exp_dir, name, curve, test_loss, linear=100, avg=100.0, fpt=1000):
    d = os.path.join(exp_dir, name)
    os.makedirs(d)
    json.dump(dict(config=dict(max_iters=len(curve) - 1), flops_per_token=fpt, params=dict(linear=linear, total=7)),
              open(os.path.join(d, 'train_config.json'), 'w'))
    with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
        for i, (t, loss) in enumerate(curve):
            r = dict(iter=i, tokens=t, val_loss=loss, avg_linear_params=avg)
            f.write(json.dumps(r | ({'test_loss': test_loss} if i == len(curve) - 1 else {})) + '\n')


def test_summary_chooses_on_val_reports_test_and_seed_spread(tmp_path, monkeypatch):
    """From run folders alone: each arm's best learning rate by final val loss (not by test loss), the chosen point's
    test loss, mean and sample standard deviation over seeds, per-seed speed-ups against Recipe 1 at the same seed
    (tokens, with the small model's pretraining, FLOPs dense and non-zero), N for the arm from the small model only,
    the seed bands drawn; speed-ups against the baseline, the better of Recipe 1 and the status quo, and the table
    and trend figure that compare experiments by them."""
    exp = str(tmp_path / 'exp')
    monkeypatch.setattr(E, 'exp_dir', exp)
    monkeypatch.setattr(E, 'seeds', [1, 2])
    monkeypatch.setattr(E, 'small_pretrain', ['--max_iters=1'])
    monkeypatch.setattr(E, 'arms', dict(recipe1=dict(args=[], learning_rate=[1e-3, 2e-3]),
                                        recipe2=dict(args=['--init_from={small}'], learning_rate=[1e-3, 2e-3]),
                                        status_quo=dict(args=[], learning_rate=[1e-3])))
    fake_run(exp, 'recipe1/lr0.001_s1', [(0, 10.0), (100, 6.0), (200, 4.0)], 9.0)   # best val, worse test: chosen
    fake_run(exp, 'recipe1/lr0.002_s1', [(0, 10.0), (100, 6.0), (200, 4.1)], 1.0)
    fake_run(exp, 'recipe1/lr0.001_s2', [(0, 10.0), (100, 6.0), (200, 4.2)], 8.0)
    fake_run(exp, 'recipe2/lr0.001_s1', [(0, 5.0), (100, 4.5), (200, 4.4)], 5.0)
    fake_run(exp, 'recipe2/lr0.002_s1', [(0, 5.0), (100, 4.0), (200, 3.0)], 3.0, linear=100, avg=50.0)
    fake_run(exp, 'recipe2/lr0.002_s2', [(0, 5.0), (100, 4.2), (200, 3.2)], 4.0, linear=100, avg=50.0)
    for s in (1, 2):
        fake_run(exp, f'small/s{s}', [(0, 9.0), (50, 5.0)], 5.0)
        fake_run(exp, f'status_quo/lr0.001_s{s}', [(0, 10.0), (100, 5.0), (200, 3.4 + s / 10)], 4.0)  # below Recipe 1
    drawn = []
    import matplotlib.axes
    monkeypatch.setattr(matplotlib.axes.Axes, 'fill_between', lambda self, *a, **k: drawn.append(a))
    s = E.summarize(['recipe1', 'recipe2', 'status_quo'])
    r1, r2 = s['arms']['recipe1'], s['arms']['recipe2']
    assert r1['point'] == {'learning_rate': 1e-3} and r2['point'] == {'learning_rate': 2e-3}
    assert (r1['test_loss'], r1['test_loss_std']) == (pytest.approx(8.5), pytest.approx(0.5 ** 0.5))
    assert r2['final_val_loss'] == pytest.approx(3.1) and r2['final_val_loss_std'] == pytest.approx(0.02 ** 0.5)
    # each seed reaches its Recipe 1's final loss (4.0, 4.2) at 100 tokens: 2x, and 200 / (100 + 50) with the small
    # model's 50 pretraining tokens
    assert (r2['speedup_tokens'], r2['speedup_tokens_std']) == (pytest.approx(2.0), pytest.approx(0.0))
    assert r2['speedup_with_pretraining'] == pytest.approx(200 / 150)
    assert r2['speedup_flops_nonzero'] > r2['speedup_flops']  # half its linear weights were zero on average
    assert r1['N'] is None and r2['N'] is None and s['N_text'] == 'N not reached within 200'
    E.plot(s)
    assert len(drawn) == 3 and os.path.exists(os.path.join(exp, 'hypothesis.png'))
    assert os.path.exists(os.path.join(exp, 'lr.png'))
    # the status quo (3.5, 3.6) is the baseline: seed 1 reaches 3.5 at 150 tokens, seed 2 reaches 3.6 at 160
    assert s['baseline'] == 'status_quo' and r1['speedup_vs_baseline_tokens'] is None
    assert r2['speedup_vs_baseline_tokens'] == pytest.approx((200 / 150 + 200 / 160) / 2)
    assert r2['speedup_vs_baseline_with_pretraining'] == pytest.approx((200 / 200 + 200 / 210) / 2)
    json.dump(s, open(os.path.join(exp, 'summary.json'), 'w'))
    monkeypatch.setattr(E, 'exp_dir', str(tmp_path / 'trend'))
    E.trend([exp, exp])
    rows = open(tmp_path / 'trend' / 'compare.md').read().splitlines()
    assert len(rows) == 4 and rows[2] == rows[3] and rows[2].endswith("| 1.29 ± 0.06 | 0.98 ± 0.03 |")
    assert os.path.exists(tmp_path / 'trend' / 'trend.png')
    for k in ('tokens', 'with_pretraining'):  # an experiment whose Recipe 2 never reached its baseline
        r2[f'speedup_vs_baseline_{k}'] = r2[f'speedup_vs_baseline_{k}_std'] = None
    json.dump(s, open(os.path.join(exp, 'summary.json'), 'w'))
    E.trend([exp])
    assert open(tmp_path / 'trend' / 'compare.md').read().splitlines()[2].endswith('| – | – |')


# ------------------------------------------------------------------ the runner
TINY = ['--device=cpu', '--dtype=float32', '--block_size=32', '--batch_size=4', '--eval_iters=2', '--log_interval=5',
        '--warmup_iters=2']


def write_config(tmp_path, data_dir, exp_dir, arm_iters=30, extra=''):
    sparse = ['--final_sparsity=0.75', '--prune_start=4', '--prune_end=20', '--prune_every=4']
    cfg = dict(exp_dir=exp_dir, seeds=[1, 2], parallel=2,
               small_pretrain=['--n_layer=2', '--n_head=2', '--n_embd=32', '--max_iters=10'],
               common=TINY + [f'--data_dir={data_dir}', f'--max_iters={arm_iters}', '--eval_interval=10'],
               arms=dict(recipe1=dict(args=['--n_layer=2', '--n_head=4', '--n_embd=64'] + sparse,
                                      learning_rate=[3e-3, 1e-2]),
                         recipe2=dict(args=['--init_from={small}', "--grow={'n_embd': 64}"] + sparse,
                                      learning_rate=[1e-3, 3e-3, 1e-2])))
    path = tmp_path / f'{os.path.basename(exp_dir)}.py'
    path.write_text(''.join(f'{k} = {v!r}\n' for k, v in cfg.items()) + extra)
    return str(path)


def experiment(*args):
    return subprocess.Popen([sys.executable, 'experiment.py', *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_runner_sweeps_seeds_continues_and_owns_its_folders(data_dir, tmp_path):
    """A sweep (Recipe 1 at 2 rates, Recipe 2 at 3) at seed 1 after the small model's pretraining, then each arm's
    best point at seed 2 (with a small model pretrained at seed 2) unless its best rate is at the grid's edge. Killed
    mid-run, the same command continues: finished runs are not run again, the killed one resumes, and the result
    equals an uninterrupted experiment's. A finished run whose ckpt.pt is gone is not retrained; a changed command
    or an edited config file is refused, naming what differs."""
    ref = str(tmp_path / 'ref')
    p = experiment(write_config(tmp_path, data_dir, ref))
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    s = json.load(open(os.path.join(ref, 'summary.json')))
    ran = sorted(os.path.relpath(os.path.join(d), ref) for d, _, f in os.walk(ref) if 'metrics.jsonl' in f)
    edge = {a: s['arms'][a]['at_grid_edge'] for a in ('recipe1', 'recipe2')}
    assert edge['recipe1']  # two rates: the best is always at an edge, so no seeds for Recipe 1
    assert len([r for r in ran if r.startswith('recipe1/')]) == 2 and 'small/s1' in ran
    assert ('small/s2' in ran) == (not edge['recipe2']) and len(s['sweep']) == 5
    runs = {arm: s['arms'][arm]['runs']['1'] for arm in ('recipe1', 'recipe2')}
    assert runs['recipe2']['sunk_tokens'] > 0 and runs['recipe1']['test_loss'] is None

    exp = str(tmp_path / 'exp')
    cfg = write_config(tmp_path, data_dir, exp)
    p = experiment(cfg)
    target = os.path.join(exp, 'recipe1', 'lr0.01_s1', 'ckpt.pt')
    deadline = time.time() + 600
    while not os.path.exists(target) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    time.sleep(1)  # its train.py runs die with it (PR_SET_PDEATHSIG)
    p = experiment(cfg)
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    assert '[small/s1] finished earlier: not run again' in out and 'resuming' in out
    for run in ran:
        assert E.read_jsonl(os.path.join(ref, run, 'metrics.jsonl')) != [] and \
            [r['val_loss'] for r in E.read_jsonl(os.path.join(exp, run, 'metrics.jsonl')) if 'val_loss' in r] == \
            [r['val_loss'] for r in E.read_jsonl(os.path.join(ref, run, 'metrics.jsonl')) if 'val_loss' in r], run

    os.remove(os.path.join(exp, 'recipe1', 'lr0.01_s1', 'ckpt.pt'))
    before = open(os.path.join(exp, 'recipe1', 'lr0.01_s1', 'metrics.jsonl')).read()
    p = experiment(cfg)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0 and 'starting' not in out and 'resuming' not in out, out + err
    assert open(os.path.join(exp, 'recipe1', 'lr0.01_s1', 'metrics.jsonl')).read() == before
    for extra, why in (("common = common + ['--eval_iters=3']\n", '--eval_iters=3'),
                       ("arms['recipe1']['args'] = arms['recipe1']['args'][::-1]\n", 'another order')):
        p = experiment(write_config(tmp_path, data_dir, exp, extra=extra))
        out, err = p.communicate(timeout=600)
        assert p.returncode == 1 and why in err and err.count('\n') == 1, err


def train_defaults():
    """train.py's module-level literal settings, without running it (computed ones, like device, take None)."""
    tree = ast.parse(open(os.path.join(REPO, 'train.py')).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                out[node.targets[0].id] = None
    return out


@pytest.mark.parametrize('name', ['experiment_a.py', 'experiment_a_80m.py', 'experiment_a_160m.py',
                                  'experiment_a_small280m.py', 'experiment_31m.py', 'experiment_b.py',
                                  'experiment_70m.py', 'experiment_toy_cpu.py'])
def test_shipped_experiments_resolve_to_what_they_promise(name, monkeypatch):
    """Every run of a shipped experiment resolves, through train.py's own configurator, to the arm it promises: the
    large shape for Recipe 1, the status quo and dense; growth for Recipe 2 (isotropic where named); one pruning
    event for the status quo; the same final sparsity for every pruned arm; the point's learning rate."""
    from configurator import Rule, parse
    cfg = {}
    exec(open(os.path.join(REPO, 'config', name)).read(), cfg)
    for k in ('arms', 'common', 'small', 'small_pretrain', 'seeds', 'exp_dir'):
        monkeypatch.setattr(E, k, cfg.get(k, getattr(E, k)))
    monkeypatch.chdir(REPO)
    E.check_config()
    defaults, sparsity = train_defaults(), set()
    for arm in E.arms:
        for point in E.grid(arm)[0]:
            c = parse(defaults, E.Run(arm, point, E.seeds[0]).args, {'model_preset': Rule(bool, '', none=True)})
            assert c['learning_rate'] == dict(point)['learning_rate']
            grown = c['grow'] is not None
            assert grown == arm.startswith('recipe2') and (c['grow'] or {}).get('method', 'top_left') == (
                'isotropic' if 'isotropic' in arm else 'top_left')
            if arm in ('recipe1', 'status_quo', 'dense_large'):
                assert c['init_from'] == 'scratch' and c['n_embd'] > 0
            if arm in ('recipe1', 'recipe2', 'recipe2_isotropic', 'status_quo'):
                sparsity.add(c['final_sparsity'])
                assert (c['prune_start'] == c['prune_end']) == (arm == 'status_quo')
            else:
                assert c['final_sparsity'] == 0
    assert len(sparsity) == 1 and 0 < sparsity.pop() < 1


def test_scale_a_budgets_scale_the_schedule_and_share_the_small_model(monkeypatch):
    """80 M and 160 M are schedules of their own: warmup, pruning window and the status quo's event scale with
    max_iters (10%-59% and 80%, as at 40 M); the small model they grow is pretrained exactly as scale A's."""
    from configurator import Rule, parse
    defaults, resolved = train_defaults(), {}
    monkeypatch.chdir(REPO)
    for name in ('experiment_a.py', 'experiment_a_80m.py', 'experiment_a_160m.py'):
        cfg = {}
        exec(open(os.path.join(REPO, 'config', name)).read(), cfg)
        for k in ('arms', 'common', 'small', 'small_pretrain', 'seeds', 'exp_dir'):
            monkeypatch.setattr(E, k, cfg.get(k, getattr(E, k)))
        run = lambda arm: parse(defaults, E.Run(arm, E.grid(arm)[0][0], E.seeds[0]).args,
                                {'model_preset': Rule(bool, '', none=True)})
        small = parse(defaults, E.Run('small', (), E.seeds[0]).args, {'model_preset': Rule(bool, '', none=True)})
        r1, sq = run('recipe1'), run('status_quo')
        T = r1['max_iters']
        assert (r1['warmup_iters'], r1['prune_start'], r1['prune_end'], sq['prune_start']) == (
            T * 30 // 610, T * 60 // 610, T * 360 // 610, T * 488 // 610)
        assert (r1['prune_end'] - r1['prune_start']) // r1['prune_every'] == 20
        resolved[name] = {k: v for k, v in small.items() if k != 'log_interval'}
    assert resolved['experiment_a.py'] == resolved['experiment_a_80m.py'] == resolved['experiment_a_160m.py']
