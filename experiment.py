"""
The grow experiment end to end, every arm tuned alike and seeded, and its answer drawn: does Recipe 2 (a small
pretrained model grown function-preservingly, then trained while pruned back to the small model's non-zero count)
reach a given loss with fewer tokens than Recipe 1 (the same large sparse model from scratch), than the status quo
(the large model trained dense, pruned once, retrained) and than the small model continued?
  python experiment.py config/experiment_toy_cpu.py               # toy scale on a CPU, offline (README)
  python experiment.py config/experiment_a.py                     # scale A on one GPU (results/README.md)
  python experiment.py config/experiment_a.py --plot_only=True    # summary + plots from the run folders
Each arm is a list of train.py arguments plus a grid: train.py keys with lists of values. Protocol:
  1. sweep   every point of every arm's grid at seeds[0]; each arm's best point = the lowest final val loss
  2. seeds   each arm's best point again at seeds[1:] (not for an arm whose best learning rate is at the grid's edge:
             extend its grid first); the small model is pretrained again for each seed
  3. report  the chosen points' final loss on the test split (train.py scores it at the last iteration; no choice
             reads it), mean and standard deviation over seeds, the crossover N, tokens and FLOPs to Recipe 1's loss
A run is train.py in exp_dir/<arm>/<point>_s<seed> (the small model: exp_dir/small/s<seed>), with
  train.py <the arm's config files> <common> <its own --key=value> <the point's --key=value> --seed=<seed>
where '{small}' stands for the small model. Rerunning the command continues: a finished run (its final record is in
metrics.jsonl) is never run again, a killed one resumes from its checkpoint; a run whose command or config files
changed is refused. Writes exp_dir/summary.json, summary.md, hypothesis.png and lr.png.
"""
import ctypes
import hashlib
import itertools
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

from files import FileError, read_json, read_jsonl, write_json, write_text

# -----------------------------------------------------------------------------
exp_dir = 'out-experiment'
small = None                  # the small pretrained model (HF directory, hub id, train.py out_dir); None: pretrain it
small_pretrain = None         # train.py arguments that pretrain it into exp_dir/small/s<seed> (when small is None)
small_pretrain_tokens = None  # tokens an external small model was pretrained on (its sunk cost; None: unknown)
arms = {}                     # name -> dict(args=[train.py arguments], <train.py key>=[values], ...): the grid
seeds = [1337]                # the sweep runs at seeds[0]; each arm's best point at every seed
common = []                   # --key=value for every run (pretraining included), before the run's own
launcher = 'python'           # the command that runs train.py, e.g. 'torchrun --standalone --nproc_per_node=8'
parallel = 1                  # runs at once (small models share one GPU); logs in each run's train.log
plot_only = False             # only read the run folders: summary and plots, run nothing
only = None                   # a list of arm names: run only those (and the small models)
title = None                  # the plot's title; None: exp_dir
eval_tasks = []               # eval.py tasks on every chosen model, into its eval.json, e.g. ['wikitext']
eval_args = []                # --key=value for eval.py (device, dtype, batch_size...)
# -----------------------------------------------------------------------------
ROLES = dict(recipe2='Recipe 2: grown, pruned', recipe2_isotropic='Recipe 2, isotropic growth',
             recipe1='Recipe 1: scratch, pruned', status_quo='status quo: dense, pruned once, retrained',
             small_continued='small model continued (dense)', dense_large='large dense from scratch')
COLORS = dict(recipe2='C3', recipe2_isotropic='C1', recipe1='C0', status_quo='C4', small_continued='C2',
              dense_large='C7')
SHORT = dict(learning_rate='lr', score='', prune_start='ps', final_sparsity='fs')


class ExperimentError(Exception):
    pass


# ----------------------------------------------------------------------------- curves
def interp(curve, t):
    xs, ys = zip(*curve)
    return np.interp(t, xs, ys)


def crossover(upper, lower):
    """The first token count at which `upper` (Recipe 1, starting higher) comes down to `lower`, both linear between
    their eval points (any two grids); None if not within the tokens both cover. On the union of the grids the
    difference is linear between neighbours, so its first sign change is exact."""
    lo, hi = max(upper[0][0], lower[0][0]), min(upper[-1][0], lower[-1][0])
    t = np.array(sorted({x for x, _ in upper + lower if lo <= x <= hi}), dtype=np.float64)
    if len(t) == 0:
        return None
    d = interp(upper, t) - interp(lower, t)
    hit = np.nonzero(d <= 0)[0]
    if len(hit) == 0:
        return None
    i = hit[0]
    return float(t[0]) if i == 0 else float(t[i - 1] + (t[i] - t[i - 1]) * d[i - 1] / (d[i - 1] - d[i]))


def tokens_to_reach(curve, target):
    """The first token count at which the curve's loss is <= target (linear between eval points), or None."""
    for i, (t, loss) in enumerate(curve):
        if loss <= target:
            if i == 0:
                return float(t)
            t0, l0 = curve[i - 1]
            return float(t0 + (t - t0) * (l0 - target) / (l0 - loss))
    return None


def best_point(finals, grid):
    """(best point, at_edge): the point (a tuple of (key, value)) with the lowest final val loss (ties: the earlier
    point in grid order), and whether its learning rate is the grid's lowest or highest (the optimum may lie outside).
    finals: {point: loss}."""
    best = min(finals, key=lambda p: (finals[p], list(finals).index(p)))
    lrs = sorted(grid.get('learning_rate', []))
    lr = dict(best).get('learning_rate')
    return best, len(lrs) > 1 and lr in (lrs[0], lrs[-1])


def mean_std(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None


# ----------------------------------------------------------------------------- the runs
def points(arm):
    """Every point of the arm's grid: tuples of (key, value), crossed in the order the keys are given."""
    grid = {k: v for k, v in arms[arm].items() if k != 'args'}
    return [tuple(zip(grid, vals)) for vals in itertools.product(*grid.values())], grid


def point_name(point):
    fmt = lambda v: f'{v:g}' if isinstance(v, float) else str(v)  # noqa: E731
    return '_'.join(SHORT.get(k, k) + fmt(v) for k, v in point) or 'base'


def config_hashes(args):
    """sha256 of each config file's text: an edited config file changes what a run is."""
    out = {}
    for a in args:
        if not a.startswith('--'):
            with open(a, 'rb') as f:
                out[a] = hashlib.sha256(f.read()).hexdigest()
    return out


class Run:
    def __init__(self, arm, point, seed):
        self.arm, self.point, self.seed = arm, point, seed
        if arm == 'small':
            self.name, base = f'small/s{seed}', list(small_pretrain)
        else:
            self.name, base = f'{arm}/{point_name(point)}_s{seed}', list(arms[arm]['args'])
        self.out_dir = os.path.join(exp_dir, self.name)
        small_dir = small if small is not None else os.path.join(exp_dir, 'small', f's{seed}')
        base = [a.replace('{small}', small_dir) for a in base]
        over = [f'--{k}={v!r}' if not isinstance(v, str) else f'--{k}={v}' for k, v in point]
        self.args = ([a for a in base if not a.startswith('--')] + list(common) +
                     [a for a in base if a.startswith('--')] + over + [f'--seed={seed}'])
        self.proc = None

    def records(self):
        return read_jsonl(os.path.join(self.out_dir, 'metrics.jsonl'))

    def config(self):
        path = os.path.join(self.out_dir, 'train_config.json')
        return read_json(path, ('config', 'flops_per_token', 'params'), 'train_config.json') \
            if os.path.exists(path) else None

    def finished(self):
        tc = self.config()
        return tc is not None and any(r['iter'] >= tc['config']['max_iters'] and 'val_loss' in r
                                      for r in self.records())

    def started(self):
        return os.path.exists(self.out_dir) and bool(os.listdir(self.out_dir))

    def start(self):
        if os.path.exists(os.path.join(self.out_dir, 'ckpt.pt')):
            extra, how = ['--init_from=resume'], "resuming"
        elif self.started():  # killed before its first checkpoint (nothing finished is lost: see finished)
            extra, how = ['--overwrite=True'], "restarting (killed before its first checkpoint)"
        else:
            extra, how = [], "starting"
        os.makedirs(self.out_dir, exist_ok=True)
        launch = [sys.executable] if launcher == 'python' else shlex.split(launcher)
        cmd = launch + ['train.py', *self.args, f'--out_dir={self.out_dir}', *extra]
        print(f"[{self.name}] {how}: {shlex.join(cmd)}", flush=True)
        self.log = open(os.path.join(self.out_dir, 'train.log'), 'a')
        self.log.write(f"$ {shlex.join(cmd)}\n")
        self.log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                     env=dict(os.environ, PYTHONUNBUFFERED='1'))
        self.t0 = time.time()

    def done(self, rc):
        self.log.close()
        if rc != 0:
            with open(os.path.join(self.out_dir, 'train.log')) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            raise ExperimentError(f"run {self.name} failed (exit {rc}): {(lines or [''])[-1][:300]} "
                                  f"(log: {self.out_dir}/train.log); rerun to continue once fixed")
        print(f"[{self.name}] finished in {time.time() - self.t0:.0f}s", flush=True)


def _die_with_parent():
    # a killed runner must not leave its train.py running: a rerun would race it on the same out_dir
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def check_commands(runs):
    """The experiment owns its run folders: a folder holding a run of another command (or config file text), or a
    run the experiment did not record, is refused before anything starts."""
    path = os.path.join(exp_dir, 'commands.json')
    recorded = read_json(path, what='commands.json') if os.path.exists(path) else {}
    for r in runs:
        now = dict(args=r.args, config_files=config_hashes(r.args))
        before = recorded.get(r.name)
        if r.started() and before is None:
            raise ExperimentError(f"{r.out_dir} holds a run this experiment did not record: use another exp_dir, "
                                  f"or remove it")
        if r.started() and before != now:
            old, new = before.get('args', []), now['args']
            diff = [a for a in new if a not in old] + [a for a in old if a not in new]
            what = (' '.join(diff) + ' differ' if diff else 'the same arguments in another order (later ones win)'
                    if old != new else 'a config file was edited since')
            raise ExperimentError(f"run {r.name} already ran with another command ({what}): use another exp_dir, "
                                  f"or remove {r.out_dir} to rerun it")
        recorded[r.name] = now
    os.makedirs(exp_dir, exist_ok=True)
    write_json(path, recorded)


def run_all(runs):
    """Run those not finished, `parallel` at once; a failure or Ctrl-C stops the others (they resume later)."""
    todo = [r for r in runs if not r.finished()]
    for r in runs:
        if r not in todo:
            print(f"[{r.name}] finished earlier: not run again", flush=True)
    active = []
    try:
        while todo or active:
            while todo and len(active) < parallel:
                r = todo.pop(0)
                r.start()
                active.append(r)
            for r in list(active):
                rc = r.proc.poll()
                if rc is not None:
                    active.remove(r)
                    r.done(rc)
            time.sleep(0.2)
    finally:
        for r in active:
            if r.proc.poll() is None:
                r.proc.terminate()
                r.proc.wait()


def evaluate(runs):
    """eval.py's eval_tasks on each chosen run that has no eval.json yet (needs its ckpt.pt)."""
    for r in runs:
        result = os.path.join(r.out_dir, 'eval.json')
        if not eval_tasks or os.path.exists(result) or not os.path.exists(os.path.join(r.out_dir, 'ckpt.pt')):
            continue
        cmd = [sys.executable, 'eval.py', f'--init_from={r.out_dir}', f'--tasks={list(eval_tasks)!r}',
               f'--out_json={result}', *eval_args]
        print(f"[{r.name}] evaluating: {shlex.join(cmd)}", flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise ExperimentError(f"eval.py failed on {r.out_dir}: {(p.stderr.strip().splitlines() or [''])[-1]}")


# ----------------------------------------------------------------------------- the answer
def read_run(r):
    """What the summary needs of one run, or None before its first evaluation."""
    tc, recs = r.config(), r.records()
    evals = sorted((x for x in recs if 'val_loss' in x), key=lambda x: x['iter'])
    if tc is None or not evals:
        return None
    last, fpt, linear = evals[-1], tc['flops_per_token'], tc['params']['linear']
    sunk_tokens = None  # the small model's pretraining tokens, for the arms that start from it
    if r.arm != 'small' and any('{small}' in a for a in arms[r.arm]['args']):
        if small is None:
            pre = [x for x in Run('small', (), r.seed).records() if 'val_loss' in x]
            sunk_tokens = pre[-1]['tokens'] if pre else None
        else:
            sunk_tokens = small_pretrain_tokens
    # FLOPs counted two ways: the dense matmuls that ran, and only the non-zero weights' share (6 per weight-token)
    curve = [(x['tokens'], x['val_loss']) for x in evals]
    return dict(
        curve=curve, final_val_loss=last['val_loss'], test_loss=last.get('test_loss'), tokens=last['tokens'],
        finished=last['iter'] >= tc['config']['max_iters'], iters=last['iter'], max_iters=tc['config']['max_iters'],
        flops_per_token=fpt, flops=last['tokens'] * fpt,
        flops_nonzero=last['tokens'] * (fpt - 6 * (linear - last.get('avg_linear_params', linear))),
        sunk_tokens=sunk_tokens, sunk_flops=None,
        final_nonzero_linear=last.get('nonzero_linear', linear), linear_params=linear,
        growth=tc.get('growth'), eval=read_json(os.path.join(r.out_dir, 'eval.json'))
        if os.path.exists(os.path.join(r.out_dir, 'eval.json')) else None)


def summarize(names):
    sweep, chosen = [], {}
    for arm in names:
        pts, grid = points(arm)
        finals = {}
        for p in pts:
            d = read_run(Run(arm, p, seeds[0]))
            if d is not None:
                sweep.append(dict(arm=arm, point=dict(p), seed=seeds[0], final_val_loss=d['final_val_loss'],
                                  finished=d['finished']))
                if d['finished']:
                    finals[p] = d['final_val_loss']
        if not finals:
            continue
        best, edge = best_point(finals, grid)
        runs = {s: read_run(Run(arm, best, s)) for s in seeds}
        runs = {s: d for s, d in runs.items() if d is not None and d['finished']}
        chosen[arm] = dict(role=ROLES.get(arm, arm), point=dict(best), at_grid_edge=edge, grid=grid,
                           points_finished=len(finals), points=len(pts), runs=runs)
    if 'recipe1' not in chosen:
        raise ExperimentError("no finished Recipe 1 run yet: run the experiment first (without plot_only)")
    r1 = chosen['recipe1']
    for arm, a in chosen.items():
        runs = a['runs']
        a['seeds'] = sorted(runs)
        a['final_val_loss'], a['final_val_loss_std'] = mean_std(d['final_val_loss'] for d in runs.values())
        a['test_loss'], a['test_loss_std'] = mean_std(d['test_loss'] for d in runs.values())
        # speed-up per seed: tokens Recipe 1 (same seed) needs for its final loss / tokens this arm needs
        ups, ups_pre, fl, fl_nz = [], [], [], []
        for s, d in runs.items():
            ref = r1['runs'].get(s)
            if ref is None:
                continue
            t = tokens_to_reach(d['curve'], ref['final_val_loss'])
            if t is None:
                continue
            ups.append(ref['tokens'] / t if t > 0 else math.inf)
            ups_pre.append(ref['tokens'] / (t + (d['sunk_tokens'] or 0)) if d['sunk_tokens'] is not None else None)
            f_ref, f = ref['flops'], t * d['flops_per_token']
            fl.append(f_ref / f if f > 0 else math.inf)
            nz = ref['flops_nonzero'] / (f * d['flops_nonzero'] / d['flops']) if f > 0 else math.inf
            fl_nz.append(nz)
        a['speedup'], a['speedup_std'] = mean_std(ups) if math.inf not in ups else (math.inf, None)
        a['speedup_with_pretraining'], _ = mean_std(ups_pre)
        a['flops_speedup'], _ = mean_std(fl) if math.inf not in fl else (math.inf, None)
        a['flops_speedup_nonzero'], _ = mean_std(fl_nz) if math.inf not in fl_nz else (math.inf, None)
        a['reached_recipe1'] = f"{len(ups)}/{len(runs)}"
        a['mean_curve'] = mean_curve([d['curve'] for d in runs.values()])
        a['N'] = crossover(r1['mean_curve'], a['mean_curve']) if 'mean_curve' in r1 and arm != 'recipe1' and \
            a['mean_curve'][0][1] < r1['mean_curve'][0][1] else None
    r1['N'] = None
    budget = r1['mean_curve'][-1][0]
    N = chosen.get('recipe2', {}).get('N')
    return dict(question="does Recipe 2 reach a given loss with fewer tokens than Recipe 1, the status quo and "
                         "the small model continued?", seeds=seeds, budget_tokens=budget, N=N,
                N_text=f"N = {fmt_tokens(N)} tokens" if N is not None else
                f"N not reached within {fmt_tokens(budget)} tokens", arms=chosen, sweep=sweep)


def mean_curve(curves):
    """Mean loss over seeds at the eval points every seed has (the runs share one eval grid)."""
    common = sorted(set.intersection(*(set(t for t, _ in c) for c in curves)))
    return [(t, float(np.mean([dict(c)[t] for c in curves]))) for t in common]


def fmt_tokens(t):
    if t is None:
        return '–'
    if t == math.inf:
        return '∞'
    for unit, scale in (('B', 1e9), ('M', 1e6), ('k', 1e3)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t:.0f}"


def pm(m, s, digits=4):
    if m is None:
        return '–'
    if m == math.inf:
        return '∞'
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def markdown(s):
    rows = [f"{s['N_text']}; seeds {s['seeds']}; mean ± standard deviation over seeds.", "",
            "| arm | best point | seeds | final val loss | test loss | speed-up vs Recipe 1 (tokens) | "
            "incl. pretraining | FLOPs (dense / non-zero) | Recipe 1 meets it at |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, a in s['arms'].items():
        edge = ' (at the grid edge: extend it)' if a['at_grid_edge'] else ''
        rows.append(f"| {arm} | {point_name(tuple(a['point'].items()))}{edge} | {len(a['seeds'])} | "
                    f"{pm(a['final_val_loss'], a['final_val_loss_std'])} | {pm(a['test_loss'], a['test_loss_std'])} | "
                    f"{pm(a['speedup'], a['speedup_std'], 2)} ({a['reached_recipe1']} reach) | "
                    f"{pm(a['speedup_with_pretraining'], None, 2)} | {pm(a['flops_speedup'], None, 2)} / "
                    f"{pm(a['flops_speedup_nonzero'], None, 2)} | {fmt_tokens(a['N']) if arm != 'recipe1' else ''} |")
    rows += ["", f"Every point of the sweep (seed {s['seeds'][0]}; chosen by final val loss):", "",
             "| arm | point | final val loss |", "|---|---|---|"]
    for p in s['sweep']:
        mark = '' if p['finished'] else ' (unfinished)'
        rows.append(f"| {p['arm']} | {point_name(tuple(p['point'].items()))} | {p['final_val_loss']:.4f}{mark} |")
    return '\n'.join(rows) + '\n'


def plot(s):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: summary written, plots skipped", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    lows = []
    for arm, a in s['arms'].items():
        curves = [d['curve'] for d in a['runs'].values()]
        t = np.array([x for x, _ in a['mean_curve']])
        band = np.array([[dict(c)[x] for x in t] for c in curves])
        label = f"{ROLES.get(arm, arm)}, {point_name(tuple(a['point'].items()))} ({len(curves)} seeds)"
        ax.plot(t / 1e6, band.mean(0), color=COLORS.get(arm), label=label, lw=2 if arm in ('recipe1', 'recipe2')
                else 1.2, ls='--' if arm in ('small_continued', 'dense_large') else '-')
        if len(curves) > 1:  # the spread over seeds
            ax.fill_between(t / 1e6, band.min(0), band.max(0), color=COLORS.get(arm), alpha=0.2, lw=0)
        lows += list(band.mean(0))
    if s['N'] is not None:
        ax.axvline(s['N'] / 1e6, color='k', lw=0.8, ls=':')
        ax.annotate(s['N_text'], (s['N'] / 1e6, max(lows)), xytext=(4, -12), textcoords='offset points')
    top = sorted(lows)[int(0.9 * (len(lows) - 1))]  # the first evaluations of a model from scratch are off the scale
    ax.set_ylim(min(lows) - 0.05 * (top - min(lows)), top)
    ax.set_xlabel('training tokens after growth (M)')
    ax.set_ylabel('val loss (nats/token)')
    ax.set_title(f"{title or exp_dir}\n{s['N_text']}; bands: min-max over seeds", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(exp_dir, 'hypothesis.png'), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))  # final val loss against learning rate, one line per arm and score
    lines = {}
    for p in s['sweep']:
        if p['finished'] and 'learning_rate' in p['point']:
            rest = point_name(tuple((k, v) for k, v in p['point'].items() if k != 'learning_rate'))
            lines.setdefault((p['arm'], rest), []).append((p['point']['learning_rate'], p['final_val_loss']))
    for (arm, rest), pts in lines.items():
        x, y = zip(*sorted(pts))
        ax.plot(x, y, 'o-', color=COLORS.get(arm), label=f"{arm} {rest if rest != 'base' else ''}",
                ls='-' if 'balanced' not in rest else '--')
    ax.set_xscale('log')
    ax.set_xlabel('peak learning rate')
    ax.set_ylabel(f'final val loss (seed {s["seeds"][0]})')
    ax.set_title('the sweep: each arm at every point of the same grid', fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(exp_dir, 'lr.png'), dpi=120)
    plt.close(fig)


def write_summary(names):
    s = summarize(names)
    out = dict(s, arms={k: {x: y for x, y in a.items() if x != 'runs'} | dict(
        runs={str(seed): {x: y for x, y in d.items() if x != 'curve'} for seed, d in a['runs'].items()})
        for k, a in s['arms'].items()})
    write_json(os.path.join(exp_dir, 'summary.json'), out)
    md = markdown(s)
    write_text(os.path.join(exp_dir, 'summary.md'), md)
    print(md)
    plot(s)
    return s


# ----------------------------------------------------------------------------- checks and main
def check_config():
    if not isinstance(arms, dict) or 'recipe1' not in arms:
        raise ExperimentError("arms must name at least 'recipe1' (the large sparse model from scratch), each "
                              "dict(args=[train.py arguments], <key>=[values], ...)")
    if not seeds or not all(isinstance(s, int) and 0 <= s < 2 ** 63 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ExperimentError(f"seeds={seeds!r}: give a list of distinct non-negative integers")
    specs = {**arms, **({'small': dict(args=small_pretrain)} if small_pretrain else {})}
    for name, spec in specs.items():
        if not name.replace('_', '').isalnum():
            raise ExperimentError(f"arm name {name!r}: use letters, digits and '_' (it names a folder)")
        if not isinstance(spec, dict) or not isinstance(spec.get('args'), (list, tuple)) or \
                not all(isinstance(a, str) for a in spec['args']):
            raise ExperimentError(f"arm {name!r}: give dict(args=[train.py arguments], <key>=[values], ...)")
        for k, v in spec.items():
            if k != 'args' and (not isinstance(v, (list, tuple)) or not v or len(set(map(repr, v))) < len(v)):
                raise ExperimentError(f"arm {name!r}: grid key {k} needs a non-empty list of distinct values")
            if k in ('seed', 'out_dir', 'overwrite', 'init_from') and k != 'args':
                raise ExperimentError(f"arm {name!r}: {k} cannot be swept (seeds are the experiment's seeds)")
        for a in spec['args']:
            if a.startswith('--'):
                key = a.split('=')[0]
                if '=' not in a:
                    raise ExperimentError(f"arm {name!r}: argument {a!r} is not --key=value")
                if key in ('--out_dir', '--overwrite', '--seed'):
                    raise ExperimentError(f"arm {name!r}: {key} is set by experiment.py")
            elif not os.path.isfile(a):
                raise ExperimentError(f"arm {name!r}: config file {a} does not exist")
    if 'small' in arms:
        raise ExperimentError("'small' is the small model's pretraining: name the arm otherwise")
    needs = any('{small}' in a for spec in arms.values() for a in spec['args'])
    if needs and (small is None) == (not small_pretrain):
        raise ExperimentError("set exactly one of small (the small pretrained model) and small_pretrain (train.py "
                              "arguments that pretrain it)")
    if not all(isinstance(a, str) and a.startswith('--') and '=' in a for a in list(common) + list(eval_args)):
        raise ExperimentError("common and eval_args take --key=value arguments only")
    if only is not None and (not isinstance(only, (list, tuple)) or set(only) - set(arms)):
        raise ExperimentError(f"only={only!r}: give a list of arm names from {sorted(arms)}")


def check_eval_args():
    """eval.py's settings are checked before any training (it runs last): its configurator, no model loaded."""
    if not eval_tasks:
        return
    p = subprocess.run([sys.executable, 'eval.py', '--check_only=True', f'--tasks={list(eval_tasks)!r}', *eval_args],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise ExperimentError(f"eval_args: {(p.stderr.strip().splitlines() or [''])[-1].removeprefix('error: ')}")


def main():
    from configurator import configure, fail, CONFIG_ERROR, INTERRUPTED, Rule, positive, non_empty
    configure(globals(), rules=dict(exp_dir=non_empty, small=non_empty, small_pretrain_tokens=positive,
                                    launcher=non_empty, parallel=positive,
                                    eval_tasks=Rule(lambda v: set(v) <= {'wikitext', 'lambada', 'val'},
                                                    "a list of eval.py tasks: 'wikitext', 'lambada', 'val'")))
    try:
        check_config()
        check_eval_args()
    except ExperimentError as e:
        fail(e, CONFIG_ERROR)
    names = [a for a in arms if only is None or a in only]
    try:
        if os.path.exists(exp_dir) and not os.path.isdir(exp_dir):
            raise ExperimentError(f"exp_dir {exp_dir} is a file: choose a folder")
        if not plot_only:
            sweep = [Run(a, p, seeds[0]) for a in names for p in points(a)[0]]
            pre = [Run('small', (), s) for s in seeds] if small is None and small_pretrain else []
            check_commands(pre + sweep)
            run_all(pre[:1] + sweep if len(seeds) == 1 else pre + sweep)
            extra, chosen = [], []
            for a in names:
                runs = {r.point: r for r in sweep if r.arm == a}
                if not all(r.finished() for r in runs.values()):
                    continue
                best, edge = best_point({p: read_run(r)['final_val_loss'] for p, r in runs.items()}, points(a)[1])
                if edge:
                    print(f"[{a}] best learning rate {dict(best)['learning_rate']:g} is at the grid's edge: extend "
                          f"the grid before its seeds run", flush=True)
                    continue
                more = [Run(a, best, s) for s in seeds[1:]]
                extra += more
                chosen += [runs[best]] + more
            check_commands(extra)
            run_all(extra)
            evaluate(chosen)
        write_summary(names)
    except (ExperimentError, FileError) as e:
        fail(e)
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to continue (finished runs are kept, the others resume from "
             "their checkpoints)", INTERRUPTED)


if __name__ == '__main__':
    main()
