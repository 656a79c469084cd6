"""
The grow experiment end to end, and its answer drawn: does Recipe 2 reach a given loss with fewer tokens than
Recipe 1 and than continuing the small model?
  Recipe 2  grow a small pretrained model function-preservingly (expand.py) and train it while pruning it
            gradually back to the small model's count of non-zero linear weights
  Recipe 1  the same large sparse model from scratch: same shape, same pruning, same tokens
  python experiment.py config/experiment_toy_cpu.py               # toy scale on a CPU, offline (README)
  python experiment.py config/experiment_70m.py                   # Pythia-70m grown to 1024 wide
  python experiment.py config/experiment_70m.py --plot_only=True  # summary + plot from existing out_dirs
Every arm is one train.py run in exp_dir/<arm>:
  train.py <the arm's config files> <common> <the arm's --key=value> --out_dir=exp_dir/<arm>
where '{small}' in an argument stands for the small model. With small=None the small model is first pretrained
into exp_dir/small from `small_pretrain` (its sunk cost is then measured). Arms run in order, or `parallel` at once
(small models sharing one GPU). An arm that finished is not run again; a killed one resumes from its checkpoint,
so rerunning the command continues a killed experiment. A changed command for an arm that already ran is refused.
Writes exp_dir/summary.json, summary.md (the table, also printed) and hypothesis.png.
"""
import ctypes
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

# -----------------------------------------------------------------------------
exp_dir = 'out-experiment'
small = None                  # the small pretrained model: HF directory, hub id or train.py out_dir; None: pretrain it
small_pretrain = None         # train.py arguments that pretrain it into exp_dir/small (when small is None)
small_pretrain_tokens = None  # tokens an external small model was pretrained on, for its sunk FLOPs (None: unknown)
arms = {}                     # arm name -> train.py arguments; 'recipe1' and 'recipe2' are required
common = []                   # --key=value for every run (pretraining included), before the run's own overrides
launcher = 'python'           # the command that runs train.py, e.g. 'torchrun --standalone --nproc_per_node=8'
parallel = 1                  # runs at once (small models sharing one GPU); their logs go to exp_dir/<arm>/train.log
plot_only = False             # only read the out_dirs: summary and plot, run nothing
only = None                   # a list of arm names: run only those (and the small model's pretraining); None: all
title = None                  # the plot's title; None: exp_dir
eval_tasks = ['wikitext']     # eval.py tasks run on every finished model into exp_dir/<arm>/eval.json ([]: none)
eval_args = []                # --key=value for eval.py (device, dtype, batch_size...)
# -----------------------------------------------------------------------------

SMALL = 'small'               # exp_dir/small: the pretraining run
ROLES = dict(recipe2='Recipe 2: grown, pruned', recipe1='Recipe 1: scratch, pruned',
             recipe2_isotropic='Recipe 2, isotropic growth', recipe2_same_hp="Recipe 2 at Recipe 1's lr and score",
             recipe2_high_lr="Recipe 2 at Recipe 1's lr",
             small_continued='small model continued (dense)',
             dense_large='large dense from scratch')


class ExperimentError(Exception):
    pass


# ----------------------------------------------------------------------------- curves
def interp(curve, t):
    """The piecewise-linear curve [(tokens, loss), ...] at tokens t."""
    xs, ys = zip(*curve)
    return np.interp(t, xs, ys)


def crossover(upper, lower):
    """The first token count at which `upper` (the curve that starts higher: Recipe 1) comes down to `lower` (Recipe 2),
    both linear between their eval points, which may lie on different grids; None if it never does within the
    tokens both cover. On the union of the two grids the difference is linear between neighbours, so its first
    sign change is found exactly."""
    lo, hi = max(upper[0][0], lower[0][0]), min(upper[-1][0], lower[-1][0])
    t = np.array(sorted({x for x, _ in upper + lower if lo <= x <= hi}), dtype=np.float64)
    if len(t) == 0:
        return None
    d = interp(upper, t) - interp(lower, t)
    hit = np.nonzero(d <= 0)[0]
    if len(hit) == 0:
        return None
    i = hit[0]
    if i == 0:
        return float(t[0])
    return float(t[i - 1] + (t[i] - t[i - 1]) * d[i - 1] / (d[i - 1] - d[i]))


def tokens_to_reach(curve, target):
    """The first token count at which the curve's loss is <= target (linear between eval points), or None."""
    for i, (t, loss) in enumerate(curve):
        if loss <= target:
            if i == 0:
                return float(t)
            t0, l0 = curve[i - 1]
            return float(t0 + (t - t0) * (l0 - target) / (l0 - loss))
    return None


# ----------------------------------------------------------------------------- reading runs
def read_run(out_dir):
    """train_config.json and the eval records of metrics.jsonl (a half-written last line is skipped)."""
    with open(os.path.join(out_dir, 'train_config.json')) as f:
        tc = json.load(f)
    evals = []
    path = os.path.join(out_dir, 'metrics.jsonl')
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if 'val_loss' in r:
                    evals.append(r)
    evals.sort(key=lambda r: r['iter'])
    return tc, evals


def checkpoint_iter(out_dir):
    """iter_num of out_dir/ckpt.pt, read through a memory map (no weights are loaded); None without one."""
    path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.exists(path):
        return None
    import torch
    try:
        return int(torch.load(path, map_location='cpu', weights_only=True, mmap=True)['iter_num'])
    except Exception as e:
        raise ExperimentError(f"{path} cannot be read ({type(e).__name__}): remove {out_dir} to rerun that arm")


def finished(out_dir):
    """A run is finished when its checkpoint is at the max_iters its train_config.json asked for."""
    it = checkpoint_iter(out_dir)
    if it is None or not os.path.exists(os.path.join(out_dir, 'train_config.json')):
        return False
    with open(os.path.join(out_dir, 'train_config.json')) as f:
        return it >= json.load(f)['config']['max_iters']


# ----------------------------------------------------------------------------- running
def train_args(args, small_model):
    """The run's config files, then `common`, then its own overrides (so an arm's own --key=value wins)."""
    args = [a.replace('{small}', small_model) for a in args]
    return [a for a in args if not a.startswith('--')] + list(common) + [a for a in args if a.startswith('--')]


def _die_with_parent():
    # a killed runner must not leave its train.py running: a rerun would then race it on the same out_dir
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Run:
    def __init__(self, name, args):
        self.name, self.args, self.out_dir = name, args, os.path.join(exp_dir, name)
        self.proc = None

    def command(self, extra):
        launch = [sys.executable] if launcher == 'python' else shlex.split(launcher)
        return launch + ['train.py', *self.args, f'--out_dir={self.out_dir}', *extra]

    def start(self, stream):
        """Start train.py: fresh, resumed from the checkpoint, or fresh over a run killed before its first one."""
        it = checkpoint_iter(self.out_dir)
        if it is not None:
            extra, how = ['--init_from=resume'], f"resuming from iteration {it}"
        elif os.path.exists(os.path.join(self.out_dir, 'metrics.jsonl')):
            extra, how = ['--overwrite=True'], "restarting (killed before its first checkpoint)"
        else:
            extra, how = [], "starting"
        os.makedirs(self.out_dir, exist_ok=True)
        self.log = open(os.path.join(self.out_dir, 'train.log'), 'a')
        cmd = self.command(extra)
        print(f"[{self.name}] {how}: {shlex.join(cmd)}", flush=True)
        self.log.write(f"$ {shlex.join(cmd)}\n")
        self.log.flush()
        self.stream = stream
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if stream else self.log, stderr=subprocess.STDOUT,
                                     text=True, preexec_fn=_die_with_parent, bufsize=1,
                                     env=dict(os.environ, PYTHONUNBUFFERED='1'))
        self.t0 = time.time()

    def wait_streaming(self):
        for line in self.proc.stdout:
            sys.stdout.write(f"[{self.name}] {line}")
            sys.stdout.flush()
            self.log.write(line)
            self.log.flush()
        return self.proc.wait()

    def done(self, rc):
        self.log.close()
        if rc != 0:
            tail = ''
            with open(os.path.join(self.out_dir, 'train.log')) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            tail = lines[-1] if lines else ''
            raise ExperimentError(f"arm {self.name!r} failed (exit {rc}): {tail[:300]} "
                                  f"(log: {self.out_dir}/train.log); rerun to continue once fixed")
        print(f"[{self.name}] finished in {time.time() - self.t0:.0f}s", flush=True)


def check_commands(runs):
    """Refuse a command that changed for an arm that already ran: its out_dir holds the other command's run."""
    path = os.path.join(exp_dir, 'commands.json')
    recorded = {}
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
    for r in runs:
        ran = os.path.exists(os.path.join(r.out_dir, 'metrics.jsonl')) or checkpoint_iter(r.out_dir) is not None
        if ran and r.name in recorded and recorded[r.name] != r.args:
            changed = sorted(set(recorded[r.name]) ^ set(r.args))
            raise ExperimentError(f"arm {r.name!r} already ran with other arguments ({' '.join(changed)} differ): "
                                  f"use another exp_dir, or remove {r.out_dir} to rerun it")
        if ran and r.name not in recorded:
            raise ExperimentError(f"{r.out_dir} holds a run this experiment did not record: use another exp_dir, "
                                  f"or remove it")
    recorded.update({r.name: r.args for r in runs})
    os.makedirs(exp_dir, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(recorded, f, indent=1)
    os.replace(path + '.tmp', path)


def run_all(runs):
    """Run what is not finished: one at a time with the output streamed, or `parallel` at once into their logs."""
    todo = []
    for r in runs:
        if finished(r.out_dir):
            print(f"[{r.name}] finished earlier: not run again", flush=True)
        else:
            todo.append(r)
    active = []
    try:
        while todo or active:
            while todo and len(active) < parallel:
                r = todo.pop(0)
                r.start(stream=parallel == 1)
                if parallel == 1:
                    r.done(r.wait_streaming())
                else:
                    active.append(r)
            for r in list(active):
                rc = r.proc.poll()
                if rc is not None:
                    active.remove(r)
                    r.done(rc)
            time.sleep(0.5)
    finally:
        for r in active:  # another arm failed or Ctrl-C: stop the rest (they resume from their checkpoints)
            if r.proc.poll() is None:
                r.proc.terminate()
                r.proc.wait()


def evaluate(names):
    """eval.py on each finished run whose eval.json is missing or older than its checkpoint (the experiment's
    summary reports WikiText bits per byte, the measure that compares across tokenizers)."""
    for name in names:
        out = os.path.join(exp_dir, name)
        result, ckpt = os.path.join(out, 'eval.json'), os.path.join(out, 'ckpt.pt')
        if not eval_tasks or not finished(out) or (
                os.path.exists(result) and os.path.getmtime(result) >= os.path.getmtime(ckpt)):
            continue
        cmd = [sys.executable, 'eval.py', f'--init_from={out}', f'--tasks={list(eval_tasks)!r}',
               f'--out_json={result}', *eval_args]
        print(f"[{name}] evaluating: {shlex.join(cmd)}", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ExperimentError(f"eval.py failed on {out}: {(r.stderr.strip().splitlines() or [''])[-1][:300]}")


# ----------------------------------------------------------------------------- the answer
def summarize(names):
    """Everything the plot and the table show, from the out_dirs alone."""
    runs = {}
    for name in names:
        out = os.path.join(exp_dir, name)
        if not os.path.exists(os.path.join(out, 'train_config.json')):
            raise ExperimentError(f"{out} has no train_config.json: run the experiment first (without plot_only)")
        tc, evals = read_run(out)
        if not evals:
            raise ExperimentError(f"{out}/metrics.jsonl has no evaluation yet")
        runs[name] = (tc, evals)
    pre = None
    if os.path.exists(os.path.join(exp_dir, SMALL, 'train_config.json')):
        tc, evals = read_run(os.path.join(exp_dir, SMALL))
        if evals:
            pre = dict(tokens=evals[-1]['tokens'], flops=evals[-1]['tokens'] * tc['flops_per_token'],
                       final_val_loss=evals[-1]['val_loss'], curve=[(r['tokens'], r['val_loss']) for r in evals],
                       flops_per_token=tc['flops_per_token'])
    # the arms that start from the small model carry its pretraining as sunk cost: measured when this experiment
    # pretrained it, else small_pretrain_tokens x its FLOPs per token (read off an arm that trains it ungrown)
    from_small = {name: tc['growth'] is not None or any('{small}' in a for a in arms.get(name, []))
                  for name, (tc, _) in runs.items()}
    small_fpt = next((tc['flops_per_token'] for name, (tc, _) in runs.items()
                      if from_small[name] and tc['growth'] is None), None)
    arms_out = {}
    for name, (tc, evals) in runs.items():
        sunk = None
        if from_small[name]:
            if pre is not None:
                sunk = pre['flops']
            elif small_pretrain_tokens is not None and small_fpt is not None:
                sunk = small_pretrain_tokens * small_fpt
        last = evals[-1]
        flops = last['tokens'] * tc['flops_per_token']
        arms_out[name] = dict(
            role=ROLES.get(name, name), from_small=from_small[name], growth=tc['growth'],
            iters=last['iter'], max_iters=tc['config']['max_iters'], finished=last['iter'] >= tc['config']['max_iters'],
            start_val_loss=evals[0]['val_loss'], final_val_loss=last['val_loss'], tokens=last['tokens'],
            flops=flops, sunk_flops=sunk, total_flops=flops + (sunk or 0),
            params_total=tc['params']['total'], linear_params=tc['params']['linear'],
            final_nonzero_linear=last.get('nonzero_linear', tc['params']['linear']),
            avg_nonzero_linear=last.get('avg_linear_params', tc['params']['linear']),
            final_sparsity=last.get('sparsity', 0.0), flops_per_token=tc['flops_per_token'],
            curve=[(r['tokens'], r['val_loss']) for r in evals], eval=read_eval(name))
    r1, r2 = arms_out['recipe1'], arms_out['recipe2']
    target = r1['final_val_loss']
    for a in arms_out.values():
        a['tokens_to_recipe1_final'] = t = tokens_to_reach(a['curve'], target)
        # FLOPs to that loss, the small model's pretraining included where the arm starts from it
        a['flops_to_recipe1_final'] = None if t is None else t * a['flops_per_token'] + (a['sunk_flops'] or 0)
    for name, a in arms_out.items():
        t, t1 = a['tokens_to_recipe1_final'], r1['tokens_to_recipe1_final']
        # tokens Recipe 1 needs for its final loss / tokens this arm needs; an arm that starts there needs none (inf)
        a['speedup_vs_recipe1'] = None if t is None or t1 is None else (t1 / t if t > 0 else math.inf)
        f, f1 = a['flops_to_recipe1_final'], r1['flops_to_recipe1_final']
        a['flops_speedup_vs_recipe1'] = None if f is None or f1 is None else (f1 / f if f > 0 else math.inf)
        a['recipe1_meets_at'] = crossover(r1['curve'], a['curve']) if name != 'recipe1' and \
            a['start_val_loss'] < r1['start_val_loss'] else None
    budget = min(r1['tokens'], r2['tokens'])
    N = r2['recipe1_meets_at']
    return dict(
        question="does Recipe 2 reach a given loss with fewer tokens than Recipe 1 and than the small model continued?",
        x=r1['start_val_loss'], y=r2['start_val_loss'], N=N, budget_tokens=budget,
        N_text=(f"N = {fmt_tokens(N)} tokens" if N is not None else
                f"N not reached within {fmt_tokens(budget)} tokens"),
        recipe1_final_val_loss=target,
        growth_max_abs_dlogits=(r2['growth'] or {}).get('max_abs_dlogits'),
        small=dict(pretrain=None if pre is None else {k: v for k, v in pre.items() if k != 'curve'},
                   model=small, pretrain_tokens=small_pretrain_tokens,
                   val_loss=(r2['growth'] or {}).get('small_val_loss')),
        arms=arms_out, pretrain_curve=None if pre is None else pre['curve'])


def read_eval(name):
    """The run's eval.json (eval.py), or None."""
    path = os.path.join(exp_dir, name, 'eval.json')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def wikitext_bpb(a):
    w = (a['eval'] or {}).get('wikitext') or {}
    return '–' if 'bits_per_byte' not in w else f"{w['bits_per_byte']:.4f}"


def fmt_tokens(t):
    if t is None:
        return '–'
    for unit, scale in (('B', 1e9), ('M', 1e6), ('k', 1e3)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t:.0f}"


def markdown(s):
    rows = ["| arm | final val loss | tokens | training FLOPs (+ sunk) | avg / final non-zero linear | "
            "tokens to Recipe 1's final loss | speed-up vs Recipe 1 (tokens / FLOPs incl. sunk) | "
            "Recipe 1 meets it at | WikiText bits/byte |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, a in s['arms'].items():
        sunk = f" (+{a['sunk_flops']:.2e})" if a['sunk_flops'] else (" (+ unknown)" if a['from_small'] else "")
        speedup = ' / '.join('–' if v is None else '∞' if v == math.inf else f'{v:.2f}×'
                             for v in (a['speedup_vs_recipe1'], a['flops_speedup_vs_recipe1']))
        unfinished = '' if a['finished'] else f" (unfinished: {a['iters']}/{a['max_iters']} iterations)"
        rows.append(f"| {name}{unfinished} | {a['final_val_loss']:.4f} | {fmt_tokens(a['tokens'])} | "
                    f"{a['flops']:.2e}{sunk} | {a['avg_nonzero_linear'] / 1e6:.2f} M / "
                    f"{a['final_nonzero_linear'] / 1e6:.2f} M | {fmt_tokens(a['tokens_to_recipe1_final'])} | "
                    f"{speedup} | "
                    f"{fmt_tokens(a['recipe1_meets_at']) if name != 'recipe1' else ''} | {wikitext_bpb(a)} |")
    d = s['growth_max_abs_dlogits']
    head = (f"x = Recipe 1's starting val loss {s['x']:.4f}; y = the grown model's {s['y']:.4f}"
            + (f" (small model {s['small']['val_loss']:.4f}, max |Δlogits| {d:.2e})" if d is not None else "")
            + f"; {s['N_text']}.")
    return head + "\n\n" + "\n".join(rows) + "\n"


def plot(s, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: summary written, plot skipped (pip install matplotlib, then rerun "
              "with --plot_only=True)", file=sys.stderr)
        return False
    colors = dict(recipe2='C3', recipe2_isotropic='C1', recipe2_same_hp='C4', recipe2_high_lr='C5', recipe1='C0',
                  small_continued='C2', dense_large='C7')
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5))
    lows = [l for a in s['arms'].values() for _, l in a['curve']]
    top = s['y'] + 0.5 * (s['x'] - s['y']) if s['x'] > s['y'] else max(lows)
    for name, a in s['arms'].items():
        t, l = zip(*a['curve'])
        style = dict(color=colors.get(name), lw=2 if name in ('recipe1', 'recipe2') else 1.2,
                     ls='--' if name in ('small_continued', 'dense_large') else '-')
        ax.plot(np.array(t) / 1e6, l, label=ROLES.get(name, name), **style)
        sunk = a['sunk_flops'] or 0
        bx.plot((np.array(t) * a['flops_per_token'] + sunk), l, label=ROLES.get(name, name), **style)
    ax.annotate(f"x = {s['x']:.2f}" + (" (above the axis)" if s['x'] > top else ""),
                (0, min(s['x'], top)), xytext=(12, -14), textcoords='offset points', color=colors['recipe1'])
    ax.plot([0], [s['y']], 'o', color=colors['recipe2'])
    ax.annotate(f"y = {s['y']:.2f}", (0, s['y']), xytext=(8, -14), textcoords='offset points', color=colors['recipe2'])
    for name, a in s['arms'].items():  # where Recipe 1 meets each arm that started below it; N is Recipe 2's
        n = a['recipe1_meets_at']
        if n is not None and a['growth'] is not None:
            loss_n = float(interp(a['curve'], n))
            ax.plot([n / 1e6], [loss_n], 'o', color='k' if name == 'recipe2' else colors.get(name), mfc='none', ms=9)
            if name == 'recipe2':
                ax.annotate(f"N = {fmt_tokens(n)}", (n / 1e6, loss_n), xytext=(6, 10), textcoords='offset points')
    if s['N'] is not None:
        ax.axvline(s['N'] / 1e6, color='k', lw=0.8, ls=':')
    ax.axhline(s['recipe1_final_val_loss'], color=colors['recipe1'], lw=0.6, ls=':')
    ax.set_ylim(min(lows) - 0.05 * (top - min(lows)), top)
    ax.set_xlabel('training tokens after growth (M)')
    ax.set_ylabel('val loss (nats/token)')
    ax.set_title(f"loss against tokens: {s['N_text']}\n(N: where Recipe 1's curve meets Recipe 2's)", fontsize=10)
    ax.legend(fontsize=8)
    if s['pretrain_curve']:
        pt, pl = zip(*s['pretrain_curve'])
        bx.plot(np.array(pt) * s['small']['pretrain']['flops_per_token'], pl, color='0.5', lw=1,
                label='small model pretraining (sunk cost)')
    bx.set_ylim(ax.get_ylim())
    bx.set_xlabel('training FLOPs (the small model\'s pretraining included\nfor the arms that start from it)')
    bx.set_title('loss against FLOPs')
    bx.legend(fontsize=8)
    fig.suptitle(title or exp_dir)
    fig.tight_layout()
    fig.savefig(path + '.tmp.png', dpi=120)
    plt.close(fig)
    os.replace(path + '.tmp.png', path)
    return True


def _json_safe(v):
    """inf (an arm that starts at the target) as the string 'inf': strict JSON has no infinity."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return 'inf' if isinstance(v, float) and math.isinf(v) else v


def write_summary(names):
    s = summarize(names)
    with open(os.path.join(exp_dir, 'summary.json.tmp'), 'w') as f:
        json.dump(_json_safe({k: v for k, v in s.items() if k != 'pretrain_curve'}), f, indent=1)
    os.replace(os.path.join(exp_dir, 'summary.json.tmp'), os.path.join(exp_dir, 'summary.json'))
    md = markdown(s)
    with open(os.path.join(exp_dir, 'summary.md'), 'w') as f:
        f.write(md)
    print(md)
    if plot(s, os.path.join(exp_dir, 'hypothesis.png')):
        print(f"wrote {exp_dir}/summary.json, summary.md, hypothesis.png")
    return s


# ----------------------------------------------------------------------------- checks and main
def check_config():
    if not isinstance(arms, dict) or not {'recipe1', 'recipe2'} <= set(arms):
        raise ExperimentError("arms must name at least 'recipe1' (the large sparse model from scratch) and "
                              "'recipe2' (the grown one), each a list of train.py arguments")
    for name, args in {**arms, **({SMALL: small_pretrain} if small_pretrain else {})}.items():
        if not name.replace('_', '').replace('-', '').isalnum():
            raise ExperimentError(f"arm name {name!r}: use letters, digits, '_' and '-' (it names a folder)")
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
            raise ExperimentError(f"arm {name!r}: give a list of train.py arguments (config files and --key=value)")
        for a in args:
            if a.startswith('--'):
                if '=' not in a:
                    raise ExperimentError(f"arm {name!r}: argument {a!r} is not --key=value")
                if a.split('=')[0] in ('--out_dir', '--overwrite'):
                    raise ExperimentError(f"arm {name!r}: {a.split('=')[0]} is set by experiment.py (exp_dir/{name})")
            elif not os.path.isfile(a):
                raise ExperimentError(f"arm {name!r}: config file {a} does not exist")
    if SMALL in arms:
        raise ExperimentError(f"{SMALL!r} is the small model's pretraining run: name the arm otherwise")
    if small is None and not small_pretrain:
        raise ExperimentError("set small (the small pretrained model) or small_pretrain (train.py arguments that "
                              "pretrain it into exp_dir/small)")
    if small is not None and small_pretrain:
        raise ExperimentError("set small or small_pretrain, not both")
    if not all(isinstance(a, str) and a.startswith('--') and '=' in a for a in common):
        raise ExperimentError("common takes --key=value arguments only (config files go in each arm)")
    if only is not None and (not isinstance(only, (list, tuple)) or set(only) - set(arms)):
        raise ExperimentError(f"only={only!r}: give a list of arm names from {sorted(arms)}")
    if not launcher.strip():
        raise ExperimentError("launcher is empty: use 'python' or e.g. 'torchrun --standalone --nproc_per_node=8'")


def main():
    from configurator import configure, fail, CONFIG_ERROR, INTERRUPTED, Rule, positive, non_empty
    configure(globals(), rules=dict(exp_dir=non_empty, small=non_empty, small_pretrain_tokens=positive,
                                    launcher=non_empty, parallel=positive,
                                    eval_tasks=Rule(lambda v: set(v) <= {'wikitext', 'lambada', 'val'},
                                                    "a list of eval.py tasks: 'wikitext', 'lambada', 'val'")))
    try:
        check_config()
    except ExperimentError as e:
        fail(e, CONFIG_ERROR)
    try:
        small_model = small if small is not None else os.path.join(exp_dir, SMALL)
        runs = [Run(name, train_args(args, small_model)) for name, args in arms.items()]
        pre = [Run(SMALL, train_args(small_pretrain, small_model))] if small_pretrain else []
        if not plot_only:
            check_commands(pre + runs)
            run_all(pre)
            run_all([r for r in runs if only is None or r.name in only])
            evaluate([SMALL] * bool(pre) + [r.name for r in runs if only is None or r.name in only])
        present = [n for n in arms if os.path.exists(os.path.join(exp_dir, n, 'train_config.json'))]
        if only is not None and not {'recipe1', 'recipe2'} <= set(present):
            print(f"ran {only}; the summary needs recipe1 and recipe2 in {exp_dir} (run them, then --plot_only=True)")
        else:
            write_summary(present if only is not None else list(arms))
    except ExperimentError as e:
        fail(e)
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to continue (finished arms are kept, the others resume from their "
             "checkpoints)", INTERRUPTED)


if __name__ == '__main__':
    main()
