"""
Speed, measured where the experiments spend their GPU time. Run on a GPU; every speed number in results/ came from here.
  python bench.py                      # the experiment's own runs: small models and grown arms, dense and masked, each
                                       # alone and `parallel` at once as experiment.py runs them
  python bench.py --mode=anchors       # this model vs transformers' GPTNeoX and a nanoGPT-style GPT-2 written here,
                                       # all compiled, at the 70m / 160m / 410m shapes
  python bench.py --mode=sparse24      # 2:4 semi-structured linears against dense ones (inference)
A workload is train.py itself (the same step, batches, masks and logging) for num_iters iterations on data_dir: its
tokens/s and MFU are the medians of its log lines after the first (compile and warm-up are not timed), its peak memory
the largest it logged. N copies at once share the GPU; the aggregate is their sum. Writes out_json.
"""
import configurator  # noqa: F401  (first: from here on Ctrl-C is one line and status 130)
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

# -----------------------------------------------------------------------------
mode = 'experiment'           # 'experiment' | 'anchors' | 'sparse24'
data_dir = 'data/enwiki_neox'  # experiment: a prepared GPT-NeoX dataset
_sparse = ['--final_sparsity=0.567', '--prune_start=1', '--prune_end=1']  # masked from iteration 2 on
workloads = {                 # experiment: name -> train.py arguments (the experiments' shapes)
    '14m': ['--model_preset=pythia-14m'],
    '31m': ['--model_preset=pythia-31m'],
    '70m': ['--model_preset=pythia-70m'],
    '14m->256': ['--model_preset=pythia-14m', '--n_embd=256', '--n_head=8', '--mlp_width=1024'],
    '14m->256 masked': ['--model_preset=pythia-14m', '--n_embd=256', '--n_head=8', '--mlp_width=1024', *_sparse],
    '31m->512': ['--model_preset=pythia-31m', '--n_embd=512', '--n_head=16', '--mlp_width=2048'],
    '70m->1024': ['--model_preset=pythia-70m', '--n_embd=1024', '--n_head=16', '--mlp_width=4096'],
    '70m->1024 masked': ['--model_preset=pythia-70m', '--n_embd=1024', '--n_head=16', '--mlp_width=4096', *_sparse]}
common = ['--block_size=1024', '--batch_size=16', '--gradient_accumulation_steps=4', '--compile=True']
variants = {'micro 16': [], 'micro 64': ['--micro_batch_size=64']}  # each workload under each
parallel = [1, 6]             # copies of a workload at once
num_iters = 30
anchors = ['pythia-70m', 'pythia-160m', 'pythia-410m']
batch_size = 8                # anchors: sequences per step, of block_size tokens
block_size = 2048
warmup_iters = 5
out_json = None
device = 'cuda'
# -----------------------------------------------------------------------------
from configurator import CONFIG_ERROR, configure, fail, one_of, positive  # noqa: E402
from files import check_dest, write_json  # noqa: E402
from model import GPT, PRESETS, peak_flops, preset_config  # noqa: E402
config = configure(globals(), rules=dict(mode=one_of('experiment', 'anchors', 'sparse24'), num_iters=positive,
                                         batch_size=positive, block_size=positive, warmup_iters=positive))
if out_json and check_dest(out_json):
    fail(check_dest(out_json))
if not torch.cuda.is_available() or not set(anchors) <= set(PRESETS):
    fail("bench.py measures a GPU: run it where torch sees one (and anchors among model.PRESETS)", CONFIG_ERROR)
results = dict(config=config, gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=[])


def launch(name, args, n, tmp):
    """n copies of train.py at once; (their metrics records, wall seconds)."""
    outs = [os.path.join(tmp, f'{name}-{n}-{i}'.replace(' ', '_').replace('>', '')) for i in range(n)]
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py'), f'--data_dir={data_dir}',
           *common, *args, f'--max_iters={num_iters}', f'--eval_interval={num_iters}', '--eval_iters=1',
           '--log_interval=5']
    t0 = time.time()
    procs = [subprocess.Popen(cmd + [f'--out_dir={o}', f'--seed={i}'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i, o in enumerate(outs)]
    for p in procs:
        if p.wait():
            fail(f"{name}: train.py failed: {p.stderr.read().strip().splitlines()[-1]}")
    return [[json.loads(line) for line in open(os.path.join(o, 'metrics.jsonl')) if 'tok_per_sec' in line]
            for o in outs], time.time() - t0


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def gpt2_reference(c):
    """A nanoGPT-style GPT-2 of the same shape, written here: learned positions, pre-LN blocks, fused QKV, flash
    attention through SDPA, tanh GELU, tied head, the loss on full float32 logits. The speed to beat."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
            self.attn, self.proj = nn.Linear(c.n_embd, 3 * c.n_embd), nn.Linear(c.n_embd, c.n_embd)
            self.fc, self.fc_proj = nn.Linear(c.n_embd, 4 * c.n_embd), nn.Linear(4 * c.n_embd, c.n_embd)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, c.n_head, -1).transpose(1, 2) for t in self.attn(self.ln_1(x)).split(C, 2))
            x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C))
            return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x)), approximate='tanh'))

    class GPT2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
            self.h, self.ln_f = nn.ModuleList(Block() for _ in range(c.n_layer)), nn.LayerNorm(c.n_embd)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.t()
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    return GPT2()


def time_steps(model, loss_fn, flops_per_token, label):
    """Median step time of compiled training steps (forward, backward, fused AdamW) on random tokens, bf16."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step_fn = torch.compile(loss_fn)
    x = torch.randint(0, 50277, (batch_size, block_size + 1), device=device)
    times = []
    for i in range(warmup_iters + num_iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast('cuda', torch.bfloat16):
            loss = step_fn(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0) if i >= warmup_iters else None
    dt, tokens = median(times), batch_size * block_size
    row = dict(label=label, tok_per_sec=tokens / dt, mfu=flops_per_token * tokens / dt / peak_flops(device),
               peak_mem_gib=torch.cuda.max_memory_allocated() / 2 ** 30)
    print(f"{label:>30s}: {row['tok_per_sec']:>12,.0f} tok/s  MFU {100 * row['mfu']:5.1f}%  "
          f"{row['peak_mem_gib']:6.1f} GiB", flush=True)
    torch.cuda.reset_peak_memory_stats()
    return row


if mode == 'experiment':
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in workloads.items():
            for variant, extra in variants.items():
                for n in parallel:
                    runs, wall = launch(name, args + extra, n, tmp)
                    speeds = [median(r['tok_per_sec'] for r in recs[1:]) for recs in runs]
                    row = dict(workload=name, variant=variant, parallel=n, tok_per_sec=speeds, aggregate=sum(speeds),
                               mfu=median(median(r['mfu'] for r in recs[1:]) for recs in runs), wall_seconds=wall,
                               peak_mem_gib=max(max((r.get('peak_mem_gib') or 0) for r in recs) for recs in runs),
                               final_loss=[recs[-1]['train_loss'] for recs in runs])
                    results['rows'].append(row)
                    print(f"{name:>18s} {variant:>10s} x{n}: {row['aggregate']:>12,.0f} tok/s in all "
                          f"({speeds[0]:,.0f} each), MFU {100 * row['mfu']:.1f}% each, {row['peak_mem_gib']:.1f} GiB",
                          flush=True)
elif mode == 'anchors':
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from hf_io import config_to_hf
    for preset in anchors:
        c = preset_config(preset, block_size=block_size)
        ours = GPT(c).to(device)
        fpt = ours.flops_per_token(block_size)
        row = dict(shape=preset, ours=time_steps(ours, lambda x, y: ours(x, y)[1], fpt, f'{preset} this model'))
        del ours
        hf = GPTNeoXForCausalLM(GPTNeoXConfig(**{k: v for k, v in config_to_hf(c).items() if k != 'architectures'}))
        hf = hf.to(device).train()
        row['transformers'] = time_steps(hf, lambda x, y: torch.nn.functional.cross_entropy(
            hf(input_ids=x).logits.float().flatten(0, 1), y.flatten()), fpt, f'{preset} transformers GPTNeoX')
        del hf
        ref = gpt2_reference(preset_config(preset, arch='gpt2', rotary_pct=0.0, block_size=block_size)).to(device)
        row['nanogpt_gpt2'] = time_steps(ref, ref, fpt, f'{preset} nanoGPT-style GPT-2')
        del ref
        row['vs_transformers'] = row['ours']['tok_per_sec'] / row['transformers']['tok_per_sec']
        row['vs_nanogpt'] = row['ours']['tok_per_sec'] / row['nanogpt_gpt2']['tok_per_sec']
        results['rows'].append(row)
        print(f"{preset}: {row['vs_transformers']:.2f}x transformers, {row['vs_nanogpt']:.2f}x nanoGPT-style", flush=True)
else:  # 2:4 semi-structured weights (torch.sparse) against dense, bf16 inference
    from torch.sparse import to_sparse_semi_structured
    from torch.utils.benchmark import Timer
    from prune import nm_mask
    for out_f, in_f in [(3072, 768), (768, 3072), (4096, 1024), (16384, 4096), (4096, 16384)]:
        w = torch.randn(out_f, in_f, device=device, dtype=torch.bfloat16)
        w = w * nm_mask(w.abs(), 2, 4).to(w.dtype)
        x = torch.randn(16384, in_f, device=device, dtype=torch.bfloat16)
        sparse = to_sparse_semi_structured(w)
        ms = [Timer('torch.nn.functional.linear(x, w)', globals=dict(torch=torch, x=x, w=m)).blocked_autorange(
            min_run_time=1).median * 1e3 for m in (w, sparse)]
        err = ((torch.nn.functional.linear(x, sparse) - x @ w.t()).float().norm() / (x @ w.t()).float().norm()).item()
        results['rows'].append(dict(out_features=out_f, in_features=in_f, dense_ms=ms[0], sparse_ms=ms[1],
                                    speedup=ms[0] / ms[1], rel_err=err))
        print(f"{out_f:>6d}x{in_f:<6d} dense {ms[0]:7.3f} ms  2:4 {ms[1]:7.3f} ms  {ms[0] / ms[1]:.2f}x  err {err:.1e}")
if out_json:
    write_json(out_json, results)
    print(f"wrote {out_json}")
