"""The grow experiment, every arm tuned alike and seeded: does Recipe 2 (a small model grown, trained while pruned back
to its non-zero count) reach a loss with fewer tokens than Recipe 1 (scratch), the status quo and the small model?
  python experiment.py config/experiment_toy_cpu.py               # toy scale on a CPU, offline (README)
  python experiment.py config/experiment_a.py --plot_only=True    # summary + plots from the run folders
Every point of each arm's grid runs at seeds[0], the best by final val loss at seeds[1:] unless at the grid's edge.
A run is train.py in exp_dir/<arm>/<point>_s<seed> ('{small}': exp_dir/small/s<seed>, pretrained per seed). A rerun
continues (finished runs never run again); a folder holding a run of another command or config text is refused."""
import configurator as cf  # first: from here on Ctrl-C is one line and status 130
import ctypes
import hashlib
import itertools
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np

from files import check_dest, read_json, read_jsonl, write_json, write_text

# -----------------------------------------------------------------------------
exp_dir = 'out-experiment'
small = None                  # the small pretrained model (HF directory, hub id, train.py out_dir); None: pretrain it
small_pretrain = None         # train.py arguments that pretrain it into exp_dir/small/s<seed> (when small is None)
small_pretrain_tokens = None  # tokens an external small model was pretrained on (its sunk cost; None: unknown)
arms = {}                     # name -> dict(args=[train.py arguments], <train.py key>=[values], ...): args and grid
seeds = [1337]                # the sweep runs at seeds[0]; each arm's best point at every seed
common = []                   # --key=value for every run (pretraining included), before the run's own
launcher = 'python'           # the command that runs train.py, e.g. 'torchrun --standalone --nproc_per_node=8'
parallel = 1                  # runs at once (small models share one GPU); each logs into its folder's train.log
plot_only = False             # only read the run folders: summary and plots, run nothing
only = None                   # a list of arm names: run only those (and the small models they start from)
title = None                  # the plot's title; None: exp_dir
compare = []                  # finished experiments' exp_dirs: only write compare.md and trend.png into exp_dir
# -----------------------------------------------------------------------------
ROLES = dict(recipe2='Recipe 2: grown, pruned', recipe2_isotropic='Recipe 2, isotropic growth',
             recipe1='Recipe 1: scratch, pruned', status_quo='status quo: dense, pruned once, retrained',
             small_continued='small model continued (dense)', dense_large='large dense from scratch')
COLORS, DASHES = dict(zip(ROLES, ('C3', 'C1', 'C0', 'C4', 'C2', 'C7'))), dict(balanced='--', wanda=':', sparsegpt='-.')
HERE = os.path.dirname(os.path.abspath(__file__))  # train.py lies beside this script
SPEED = ('--micro_batch_size=', '--compile=')  # how fast a run goes, not what it computes: may change
point_name = lambda point: '_'.join(dict(learning_rate='lr', score='').get(k, k) + (  # point: a dict or its items
    f'{v:g}' if isinstance(v, float) else str(v)) for k, v in dict(point).items()) or 'base'
pm = lambda m, s, digits=4: '–' if m is None else '∞' if m == math.inf else f"{m:.{digits}f}" + (
    f" ± {s:.{digits}f}" if s else "")
fmt_tokens = lambda t: {None: '–', math.inf: '∞'}[t] if t is None or t == math.inf else next(
    (f"{t / s:.3g} {u}" for u, s in (('B', 1e9), ('M', 1e6), ('k', 1e3)) if t >= s), f"{t:.0f}")


def crossover(upper, lower):
    """The first token count at which `upper` (Recipe 1, starting higher) comes down to `lower`, or None; exact, as
    on the union of both curves' eval points their difference is linear between neighbours."""
    lo, hi = max(upper[0][0], lower[0][0]), min(upper[-1][0], lower[-1][0])
    t = sorted({x for x, _ in upper + lower if lo <= x <= hi})
    return tokens_to_reach(list(zip(t, np.interp(t, *zip(*upper)) - np.interp(t, *zip(*lower)))), 0)


def tokens_to_reach(curve, target):
    """The first token count at which the curve's loss is <= target (linear between eval points), or None."""
    for i, (t, loss) in enumerate(curve):
        if loss <= target:
            t0, l0 = curve[i - 1] if i else (t, loss + 1)  # at the first point: t itself
            return float(t0 + (t - t0) * (l0 - target) / (l0 - loss))
    return None


def best_point(finals):
    """(the point of lowest loss in finals, ties to the earlier; whether its learning rate is the lowest or highest
    of those run: a grid extended but not yet run is not settled)."""
    best = min(finals, key=lambda p: (finals[p], list(finals).index(p)))
    lrs = sorted({dict(p)['learning_rate'] for p in finals if 'learning_rate' in dict(p)})
    return best, len(lrs) > 1 and dict(best)['learning_rate'] in (lrs[0], lrs[-1])


def mean_std(values):  # (None, None) without a value, (inf, None) if one is inf
    v = [x for x in values if x is not None]
    return ((math.inf if v else None), None) if not v or math.inf in v else (
        float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None)


def grid(arm):
    """(every point of the arm's grid as a tuple of (key, value), crossed in the order given; the grid)."""
    g = {k: v for k, v in arms[arm].items() if k != 'args'}
    return [tuple(zip(g, vals)) for vals in itertools.product(*g.values())], g


class Run:
    def __init__(self, arm, point, seed):
        self.arm, self.point, spec = arm, point, small_pretrain if arm == 'small' else arms[arm]['args']
        self.from_small = arm != 'small' and any('{small}' in a for a in spec)
        spec = [a.replace('{small}', small or os.path.join(exp_dir, 'small', f's{seed}')) for a in spec]
        self.name = f'small/s{seed}' if arm == 'small' else f'{arm}/{point_name(point)}_s{seed}'
        self.out_dir = os.path.join(exp_dir, self.name)
        self.file = lambda name: os.path.join(self.out_dir, name)
        self.args = ([a for a in spec if not a.startswith('--')] + list(common) + [a for a in spec if a[:2] == '--']
                     + [f'--{k}={v if isinstance(v, str) else repr(v)}' for k, v in point] + [f'--seed={seed}'])
        self.needs = Run('small', (), seed) if self.from_small and small is None else None

    def read(self):
        """(train_config.json, None before the run writes it; the records of metrics.jsonl with a val loss)"""
        tc = self.file('train_config.json')
        return (read_json(tc, ('config', 'flops_per_token', 'params'), 'train_config.json') if os.path.exists(tc)
                else None), [r for r in read_jsonl(self.file('metrics.jsonl')) if 'val_loss' in r]

    def finished(self):
        tc, evals = self.read()
        return tc is not None and any(r['iter'] >= tc['config']['max_iters'] for r in evals)

    def start(self):
        """train.py fresh, resumed from the checkpoint, or fresh again over a run killed before its first one."""
        resume = os.path.exists(self.file('ckpt.pt'))
        cmd = ([sys.executable] if launcher == 'python' else shlex.split(launcher)) + [
            os.path.join(HERE, 'train.py'), *self.args, f'--out_dir={self.out_dir}',
            *(['--init_from=resume'] if resume else ['--overwrite=True'] if os.path.isdir(self.out_dir) else [])]
        print(f"[{self.name}] {'resuming' if resume else 'starting'}: {shlex.join(cmd)}", flush=True)
        os.makedirs(self.out_dir, exist_ok=True)
        self.log, self.t0 = open(self.file('train.log'), 'a'), time.time()
        print(f"$ {shlex.join(cmd)}", file=self.log, flush=True)
        # PR_SET_PDEATHSIG: a killed runner takes its train.py along, so a rerun never races it on one out_dir
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(
            os.environ, PYTHONUNBUFFERED='1'), preexec_fn=lambda: ctypes.CDLL(None).prctl(1, 15))  # 15: SIGTERM
        return self

    def done(self):
        self.log.close()
        if self.proc.returncode != 0:
            last = (open(self.file('train.log'), errors='replace').read().strip().splitlines() or [''])[-1]
            raise ValueError(f"run {self.name} failed (exit {self.proc.returncode}): {last[:300]} (log: "
                             f"{self.out_dir}/train.log); rerun the experiment to continue once fixed")
        print(f"[{self.name}] finished in {time.time() - self.t0:.0f}s", flush=True)


def run_all(runs):
    """Every run not finished, each after the small model it starts from (recorded and run first, once), `parallel`
    at once; a failure or Ctrl-C stops the others (they resume on the next attempt)."""
    runs = list({r.needs.name: r.needs for r in runs if r.needs is not None}.values()) + runs
    # record each run's command and config files' text; refuse a folder that holds another command's run
    path = os.path.join(exp_dir, 'commands.json')
    recorded = read_json(path, what='commands.json') if os.path.exists(path) else {}
    strip = lambda c: dict(c, args=[a for a in c.get('args', []) if not a.startswith(SPEED)])
    for r in runs:
        now, before = dict(args=r.args, config_files={a: hashlib.sha256(open(a, 'rb').read()).hexdigest()
                                                      for a in r.args if not a.startswith('--')}), recorded.get(r.name)
        if os.path.isdir(r.out_dir) and os.listdir(r.out_dir) and (before is None or strip(before) != strip(now)):
            if before is None:
                raise ValueError(f"{r.out_dir} holds a run this experiment did not record: remove it or change exp_dir")
            old = before.get('args', [])
            diff = [a for a in r.args if a not in old] + [a for a in old if a not in r.args]
            why = (' '.join(diff) + ' differ' if diff else 'the same arguments in another order, and later ones win'
                   if old != r.args else 'a config file was edited since')
            raise ValueError(f"run {r.name} already ran with another command ({why}): use another exp_dir, or remove "
                             f"{r.out_dir} to rerun it")
        recorded[r.name] = now
    os.makedirs(exp_dir, exist_ok=True)
    write_json(path, recorded)
    todo, active = [r for r in runs if not r.finished()], []
    print(''.join(f"[{r.name}] finished earlier: not run again\n" for r in runs if r not in todo), end='', flush=True)
    try:
        while todo or active:
            for r in [r for r in todo if r.needs is None or r.needs.finished()][:parallel - len(active)]:
                todo.remove(r)
                active.append(r.start())
            if not active and todo:
                raise ValueError(f"run {todo[0].name} needs {todo[0].needs.name}, which did not finish")
            for r in [r for r in active if r.proc.poll() is not None]:
                active.remove(r)
                r.done()
            time.sleep(0.2)
    finally:
        for r in active:
            r.proc.terminate()
            r.proc.wait()


def read_run(r):
    """What the summary needs of one run, or None before its first evaluation."""
    tc, recs = r.read()
    if tc is None or not recs:
        return None
    last, fpt, linear, pre = recs[-1], tc['flops_per_token'], tc['params']['linear'], r.needs and r.needs.read()[1]
    return dict(curve=[(x['tokens'], x['val_loss']) for x in recs], final_val_loss=last['val_loss'],
                test_loss=last.get('test_loss'), tokens=last['tokens'], flops_per_token=fpt, from_small=r.from_small,
                params=tc['params']['total'],
                finished=last['iter'] >= tc['config']['max_iters'], sunk_tokens=None if not r.from_small else
                small_pretrain_tokens if r.needs is None else pre[-1]['tokens'] if pre else None,
                # the non-zero share of the matmul FLOPs: 6 per live weight and token, averaged over the run so far
                nonzero_share=1 - 6 * (linear - last.get('avg_linear_params', linear)) / fpt)


def summarize(names):
    sweep, out = [], {}
    for arm in names:
        pts, finals = grid(arm)[0], {}
        for p, d in [(p, read_run(Run(arm, p, seeds[0]))) for p in pts]:
            if d is not None:
                sweep.append(dict(arm=arm, point=dict(p), final_val_loss=d['final_val_loss'], finished=d['finished']))
                finals.update({p: d['final_val_loss']} if d['finished'] else {})
        if finals:
            best, edge = best_point(finals)
            runs = {s: read_run(Run(arm, best, s)) for s in seeds}
            out[arm] = dict(role=ROLES.get(arm, arm), point=dict(best), at_grid_edge=edge, points=len(pts),
                            points_finished=len(finals), runs={s: d for s, d in runs.items() if d and d['finished']})
    if 'recipe1' not in out:
        raise ValueError("no finished Recipe 1 run yet: run the experiment first (without plot_only)")
    for a in out.values():  # mean ± std over seeds, and the mean curve at the eval points every seed has
        a['seeds'], curves = sorted(a['runs']), [dict(d['curve']) for d in a['runs'].values()]
        a['final_val_loss'], a['final_val_loss_std'] = mean_std(d['final_val_loss'] for d in a['runs'].values())
        a['test_loss'], a['test_loss_std'] = mean_std(d['test_loss'] for d in a['runs'].values())
        a['mean_curve'] = [(t, float(np.mean([c[t] for c in curves]))) for t in sorted(curves[0]) if all(
            t in c for c in curves)]
    # speed-ups against Recipe 1 and against the baseline Recipe 2 must beat: the better of Recipe 1 and the status quo
    base = min((b for b in ('recipe1', 'status_quo') if b in out), key=lambda b: out[b]['final_val_loss'])
    for arm, a in out.items():
        for ref, tag, ups in (('recipe1', '', []), (base, '_vs_baseline', [])):
            # per seed against ref at the same seed, ref's / this arm's: tokens (after growth, and with the small
            # model's pretraining), FLOPs as the dense matmuls that ran and as the non-zero weights' share
            for s, d in a['runs'].items():
                r = out[ref]['runs'].get(s)
                if r is None or (t := tokens_to_reach(d['curve'], r['final_val_loss'])) is None:
                    continue
                f, f_ref, sunk = t * d['flops_per_token'], r['tokens'] * r['flops_per_token'], d['sunk_tokens']
                pre = None if sunk is None and d['from_small'] else sunk or 0
                ups.append([(r['tokens'], t), (r['tokens'], None if pre is None else t + pre), (f_ref, f),
                            (f_ref * r['nonzero_share'], f * d['nonzero_share'])])
            for k, pairs in zip(('tokens', 'with_pretraining', 'flops', 'flops_nonzero'), list(zip(*ups)) or [()] * 4):
                a[f'speedup{tag}_{k}'], a[f'speedup{tag}_{k}_std'] = mean_std(
                    x / b if b > 0 else math.inf for x, b in pairs if b is not None)
            a[f'reached{tag}'] = f"{len(ups)}/{len(a['runs'])}"
        a['N'] = crossover(out['recipe1']['mean_curve'], a['mean_curve']) if Run(arm, (), seeds[0]).from_small else None
    N, budget = out.get('recipe2', {}).get('N'), out['recipe1']['mean_curve'][-1][0]
    return dict(seeds=seeds, budget_tokens=budget, N=N, arms=out, sweep=sweep, baseline=base,
                N_text=f"N = {fmt_tokens(N)} tokens" if N is not None else f"N not reached within {fmt_tokens(budget)}")


def markdown(s):
    rows = [f"{s['N_text']}; seeds {s['seeds']}; mean ± standard deviation over seeds.", "",
            "| arm | best point | seeds | final val loss | test loss | tokens to Recipe 1's loss: speed-up | with "
            "pretraining | FLOPs: dense / non-zero | Recipe 1 meets it at |", "|---|---|---|---|---|---|---|---|---|"]
    note = lambda a: (' (grid edge)' if a['at_grid_edge'] else '') + (
        '' if a['points_finished'] == a['points'] else f" ({a['points_finished']} of {a['points']} points run)")
    rows += [f"| {arm} | {point_name(a['point'])}{note(a)} | {len(a['seeds'])} | "
             f"{pm(a['final_val_loss'], a['final_val_loss_std'])} | {pm(a['test_loss'], a['test_loss_std'])} | "
             f"{pm(a['speedup_tokens'], a['speedup_tokens_std'], 2)} ({a['reached']}) | "
             f"{pm(a['speedup_with_pretraining'], None, 2)} | {pm(a['speedup_flops'], None, 2)} / "
             f"{pm(a['speedup_flops_nonzero'], None, 2)} | {fmt_tokens(a['N']) if arm != 'recipe1' else ''} |"
             for arm, a in s['arms'].items()]
    rows += ["", f"Every point of the sweep (seed {s['seeds'][0]}; each arm's best by final val loss):", "",
             "| arm | point | final val loss |", "|---|---|---|"]
    rows += [f"| {p['arm']} | {point_name(p['point'])} | {p['final_val_loss']:.4f}"
             f"{'' if p['finished'] else ' (unfinished)'} |" for p in s['sweep']]
    return '\n'.join(rows) + '\n'


def plot(s):
    """hypothesis.png: each arm at its best point, the mean over seeds and the min-max band; lr.png: the sweep."""
    import matplotlib.pyplot as plt
    plt.switch_backend('Agg')  # no display needed
    (fig, ax), (fig_lr, ax_lr), lows, lines = plt.subplots(figsize=(8, 5)), plt.subplots(figsize=(7, 4.5)), [], {}
    for arm, a in s['arms'].items():
        t = np.array([x for x, _ in a['mean_curve']])
        band = np.array([[dict(d['curve'])[x] for x in t] for d in a['runs'].values()])
        ax.plot(t / 1e6, band.mean(0), color=COLORS.get(arm), lw=2 if arm in ('recipe1', 'recipe2') else 1.2,
                ls='--' if arm in ('small_continued', 'dense_large') else '-',
                label=f"{ROLES.get(arm, arm)}, {point_name(a['point'])} ({len(band)} seed{'s' * (len(band) > 1)})")
        ax.fill_between(t / 1e6, band.min(0), band.max(0), color=COLORS.get(arm), alpha=0.2, lw=0)  # empty at 1 seed
        lows += list(band.mean(0))
    if s['N'] is not None:
        ax.axvline(s['N'] / 1e6, color='k', lw=0.8, ls=':')
    top = sorted(lows)[int(0.9 * (len(lows) - 1))]  # a model from scratch starts far above the interesting range
    ax.set(ylim=(min(lows) - 0.05 * (top - min(lows)), top), xlabel='training tokens after growth (M)',
           ylabel='val loss (nats/token)')
    ax.set_title(f"{title or exp_dir}\n{s['N_text']}; bands: min-max over seeds", fontsize=9)
    for p in s['sweep']:  # final val loss against the learning rate: a line per arm and rest of the point
        if p['finished'] and 'learning_rate' in p['point']:
            rest = point_name({k: v for k, v in p['point'].items() if k != 'learning_rate'})
            lines.setdefault((p['arm'], rest), []).append((p['point']['learning_rate'], p['final_val_loss']))
    for (arm, rest), pts in lines.items():
        ax_lr.plot(*zip(*sorted(pts)), marker='o', color=COLORS.get(arm), ls=DASHES.get(rest, '-'),
                   label=f"{arm} {rest if rest != 'base' else ''}")
    ax_lr.set(xscale='log', xlabel='peak learning rate', ylabel=f"final val loss (seed {s['seeds'][0]})")
    ax_lr.set_title('the sweep: every arm at every point of the same grid', fontsize=9)
    for f, name in ((fig, 'hypothesis.png'), (fig_lr, 'lr.png')):
        f.axes[0].legend(fontsize=7)
        f.tight_layout()
        f.savefig(os.path.join(exp_dir, name), dpi=120)
    plt.close('all')


def trend(dirs):
    """compare.md and trend.png: per experiment, Recipe 2 against its baseline (the better of Recipe 1 and the status
    quo) and the small model continued; its speed-up in tokens to the baseline's final loss against model size."""
    rows = ["| experiment | large model | tokens per arm | small model's tokens | test loss (seeds): Recipe 2 | "
            "baseline | small model continued | speed-up over the baseline | with pretraining |", '|---' * 9 + '|']
    pts, num = [], lambda a, k: None if a is None or a.get(k) is None else float(a[k])  # inf was written as 'inf'
    loss = lambda a: f"{pm(num(a, 'test_loss'), num(a, 'test_loss_std'))} ({len(a['seeds'])})" if a else '–'
    for d in dirs:
        s = read_json(path := os.path.join(d, 'summary.json'), ('arms', 'budget_tokens'), 'summary.json')
        if 'recipe2' not in s['arms'] or 'baseline' not in s:
            raise ValueError(f"{path}: no Recipe 2 arm, or written before the baseline speed-up: finish the experiment "
                             f"or redraw it (python experiment.py <its config> --exp_dir={d} --plot_only=True)")
        r2, a, run = s['arms']['recipe2'], s['arms'], next(iter(s['arms']['recipe2']['runs'].values()))
        pts.append((run['params'], os.path.basename(os.path.normpath(d)), [(
            num(r2, f'speedup_vs_baseline_{k}'), num(r2, f'speedup_vs_baseline_{k}_std') or 0) for k in (
            'tokens', 'with_pretraining')]))
        rows.append(f"| {pts[-1][1]} | {run['params'] / 1e6:.1f} M | {fmt_tokens(s['budget_tokens'])} | "
                    f"{fmt_tokens(run['sunk_tokens'])} | {loss(r2)} | {s['baseline']} "
                    f"{loss(a[s['baseline']])} | {loss(a.get('small_continued'))} | "
                    + ' | '.join(pm(*u, 2) for u in pts[-1][2]) + ' |')
    if why := check_dest(exp_dir):
        raise ValueError(why)
    os.makedirs(exp_dir, exist_ok=True)
    write_text(os.path.join(exp_dir, 'compare.md'), '\n'.join(rows) + '\n')
    import matplotlib.pyplot as plt
    plt.switch_backend('Agg')
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, label in enumerate(('tokens after growth', "with the small model's pretraining")):
        if reached := [(x, up[i][0], up[i][1]) for x, _, up in sorted(pts) if up[i][0] is not None]:
            ax.errorbar(*zip(*reached), fmt='o-', label=label)
    for x, name, up in pts:
        ax.annotate(name, (x, up[0][0] or up[1][0] or 1), fontsize=7, xytext=(4, 4), textcoords='offset points')
    ax.axhline(1, color='k', lw=0.8, ls=':')
    ax.set(xscale='log', xlabel='parameters of the large model', ylabel='speed-up of Recipe 2 over the baseline')
    ax.set_title('Recipe 2 against the better of Recipe 1 and the status quo; bars: std over seeds', fontsize=9)
    ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None  # none when no point reached
    fig.savefig(os.path.join(exp_dir, 'trend.png'), dpi=120, bbox_inches='tight')


def check_config():
    """Everything checkable before the first run: the arms and their grids, the seeds, the folders, the launcher."""
    def need(ok, why):
        if not ok:
            raise ValueError(why)
    form = "dict(args=[train.py arguments], <key>=[values], ...)"
    need('recipe1' in arms, f"arms must name 'recipe1' (the large sparse model from scratch), each {form}")
    need(all(isinstance(s, int) and 0 <= s < 2 ** 63 for s in seeds) and len(set(seeds)) == len(seeds),
         f"seeds={seeds!r}: give distinct integers in [0, 2**63)")
    for name, spec in {**arms, **({'small': dict(args=small_pretrain)} if small_pretrain else {})}.items():
        need(name.replace('_', '').isalnum() and not (name == 'small' and name in arms),
             f"arm name {name!r}: letters, digits and '_' (it names a folder), and not 'small'")
        need(isinstance(spec, dict) and isinstance(spec.get('args'), (list, tuple)) and all(
            isinstance(a, str) for a in spec['args']), f"arm {name!r}: give {form}")
        for k, v in spec.items():
            need(k == 'args' or (k not in ('seed', 'out_dir', 'overwrite', 'init_from') and isinstance(v, (list, tuple))
                                 and v and len(set(map(repr, v))) == len(v)), f"arm {name!r}: grid key {k} needs a "
                 f"list of distinct values (seeds, out_dir, overwrite and init_from are the experiment's)")
        for a in spec['args']:
            need(not a.startswith('--') or ('=' in a and a.split('=')[0] not in ('--out_dir', '--overwrite', '--seed')),
                 f"arm {name!r}: {a!r}: give --key=value; out_dir, overwrite and seed are set here")
            need(a.startswith('--') or os.path.isfile(a), f"arm {name!r}: config file {a} does not exist")
    need(not any('{small}' in a for s in arms.values() for a in s['args']) or (small is None) == bool(small_pretrain),
         "set one of small (the small pretrained model) and small_pretrain (arguments that pretrain it)")
    need(all(isinstance(a, str) and a.startswith('--') and '=' in a for a in common),
         "common takes --key=value arguments only")
    need(only is None or (isinstance(only, (list, tuple)) and not set(only) - set(arms)),
         f"only={only!r}: give a list of arm names from {sorted(arms)}")
    need(not os.path.exists(exp_dir) or os.path.isdir(exp_dir), f"exp_dir {exp_dir} is a file: choose a folder")
    need(plot_only or not check_dest(exp_dir), check_dest(exp_dir))
    cmd = (shlex.split(launcher) or [''])[0]
    need(launcher == 'python' or shutil.which(cmd), f"launcher {cmd!r} is not a command on this machine: use 'python' "
         f"or e.g. 'torchrun --standalone --nproc_per_node=8'")


if __name__ == '__main__':
    cf.configure(globals(), rules=dict(
        exp_dir=cf.non_empty, small=cf.non_empty, small_pretrain_tokens=cf.positive, launcher=cf.non_empty,
        parallel=cf.positive, compare=cf.Rule(lambda v: all(isinstance(d, str) for d in v), 'a list of exp_dirs')))
    try:
        if compare:
            sys.exit(trend(compare))
        check_config()
    except ValueError as e:
        cf.fail(e, cf.CONFIG_ERROR)
    names, made = [a for a in arms if only is None or a in only], not os.path.exists(exp_dir)
    try:
        if not plot_only:
            run_all(sweep := [Run(a, p, seeds[0]) for a in names for p in grid(a)[0]])
            more = []
            for a in names:
                best, edge = best_point({r.point: read_run(r)['final_val_loss'] for r in sweep if r.arm == a})
                if edge:
                    print(f"[{a}] best learning rate {dict(best)['learning_rate']:g} is at the grid's edge: extend "
                          f"the grid before its seeds run", flush=True)
                more += [] if edge else [Run(a, best, s) for s in seeds[1:]]
            run_all(more)
        s = summarize(names)
        write_json(os.path.join(exp_dir, 'summary.json'), dict(s, arms={k: dict(a, runs={str(i): {
            x: y for x, y in d.items() if x != 'curve'} for i, d in a['runs'].items()}) for k, a in s['arms'].items()}))
        write_text(os.path.join(exp_dir, 'summary.md'), markdown(s))
        print(markdown(s))
        plot(s)
    except (ValueError, OSError) as e:
        cf.fail(e)
    except KeyboardInterrupt:
        if made and os.path.isdir(exp_dir) and not os.listdir(exp_dir):
            os.rmdir(exp_dir)
        cf.fail("interrupted; rerun the same command to continue (finished runs are kept, the others resume)",
                cf.INTERRUPTED)
