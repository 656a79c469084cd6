"""GPU speed where the experiments spend their time (every speed number in results/ came from here), into out_json.
Modes: experiment (default): train.py on data_dir, each workload under each variant, `parallel` copies at once as
experiment.py runs them; tokens/s and MFU: medians of the log lines after the first (compile, warm-up), aggregate: the
copies' sum. anchors: this model vs transformers' GPTNeoX and a nanoGPT-style GPT-2 (2:4 speed: bench.py of 3a010c8)."""
import configurator as cf  # first: from here on Ctrl-C is one line and status 130
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import torch
# -----------------------------------------------------------------------------
mode = 'experiment'           # 'experiment' | 'anchors'
data_dir = 'data/enwiki_neox'  # experiment: a prepared GPT-NeoX dataset
_sparse = ['--final_sparsity=0.567', '--prune_start=1', '--prune_end=1']  # masked from iteration 2 on
_grown = lambda p, d, h: [f'--model_preset=pythia-{p}', f'--n_embd={d}', f'--n_head={h}', f'--mlp_width={4 * d}']
workloads = {                 # experiment: name -> train.py arguments (the experiments' shapes)
    **{m: [f'--model_preset=pythia-{m}'] for m in ('14m', '31m', '70m')}, '14m->256': _grown('14m', 256, 8),
    '14m->256 masked': _grown('14m', 256, 8) + _sparse, '31m->512': _grown('31m', 512, 16),
    '70m->1024': _grown('70m', 1024, 16), '70m->1024 masked': _grown('70m', 1024, 16) + _sparse}
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
from files import check_dest, write_json  # noqa: E402
from model import GPT, PRESETS, peak_flops, preset_config  # noqa: E402
config = cf.configure(globals(), rules=dict(mode=cf.one_of('experiment', 'anchors'), num_iters=cf.positive,
                                            batch_size=cf.positive, block_size=cf.positive, warmup_iters=cf.positive))
if out_json and check_dest(out_json):
    cf.fail(check_dest(out_json))
if not torch.cuda.is_available() or not set(anchors) <= set(PRESETS):
    cf.fail("bench.py measures a GPU: run it where torch sees one (and anchors among model.PRESETS)", cf.CONFIG_ERROR)
results = dict(config=config, gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=[])
median = lambda xs: v[len(v) // 2] if (v := sorted(x for x in xs if x is not None)) else None
# out_json rewritten at each row: a bench cut short (a lent GPU's time ran out) keeps the rows before
record = lambda row: results['rows'].append(row) or (write_json(out_json, results) if out_json else None)


def gpt2_reference(c):
    """A nanoGPT-style GPT-2 of the same shape, written here: learned positions, pre-LN blocks, fused QKV, flash
    attention through SDPA, tanh GELU, tied head, the loss on full float32 logits. The speed to beat."""
    nn, F, d = torch.nn, torch.nn.functional, c.n_embd
    block = lambda: nn.ModuleDict(dict(ln_1=nn.LayerNorm(d), attn=nn.Linear(d, 3 * d), proj=nn.Linear(d, d),
                                       ln_2=nn.LayerNorm(d), fc=nn.Linear(d, 4 * d), fc_proj=nn.Linear(4 * d, d)))
    m = nn.ModuleDict(dict(wte=nn.Embedding(c.vocab_size, d), wpe=nn.Embedding(c.block_size, d),
                           h=nn.ModuleList(block() for _ in range(c.n_layer)), ln_f=nn.LayerNorm(d)))

    def forward(idx, targets):
        x = m.wte(idx) + m.wpe(torch.arange(idx.size(1), device=idx.device))
        for b in m.h:
            q, k, v = (t.unflatten(2, (c.n_head, -1)).transpose(1, 2) for t in b.attn(b.ln_1(x)).split(d, 2))
            x = x + b.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2))
            x = x + b.fc_proj(F.gelu(b.fc(b.ln_2(x)), approximate='tanh'))
        return F.cross_entropy((m.ln_f(x) @ m.wte.weight.t()).float().flatten(0, 1), targets.flatten())
    m.forward = forward  # the module's call, so that torch.compile sees the one graph
    return m


def time_steps(model, loss_of, flops_per_token, label):
    """Median step time of compiled training steps (forward, backward, fused AdamW) on random tokens, bf16."""
    model = model.to(device).train()  # only here: each model measured has the GPU's memory to itself
    opt, step_fn = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True), torch.compile(loss_of(model))
    x, times = torch.randint(0, 50277, (batch_size, block_size + 1), device=device), []
    for i in range(warmup_iters + num_iters):  # the GPU is idle at each t0: the step before ended synchronized
        t0 = time.perf_counter()
        with torch.autocast('cuda', torch.bfloat16):
            loss = step_fn(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times += [time.perf_counter() - t0] if i >= warmup_iters else []
    dt, tokens = median(times), batch_size * block_size
    row = dict(label=label, tok_per_sec=tokens / dt, mfu=flops_per_token * tokens / dt / peak_flops(device),
               peak_mem_gib=torch.cuda.max_memory_allocated() / 2 ** 30)
    print(f"{label:>30s}: {row['tok_per_sec']:>12,.0f} tok/s  MFU {100 * row['mfu']:5.1f}%  "
          f"{row['peak_mem_gib']:6.1f} GiB", flush=True)
    torch.cuda.reset_peak_memory_stats()
    return row


if mode == 'experiment':  # n copies of train.py at once, their metrics records and wall seconds
    for (name, args), (variant, extra), n in itertools.product(workloads.items(), variants.items(), parallel):
        cmd = [sys.executable, os.path.join(os.path.dirname(__file__), 'train.py'), f'--data_dir={data_dir}', *common,
               *args, *extra, f'--max_iters={num_iters}', f'--eval_interval={num_iters}', '--eval_iters=1',
               '--log_interval=5']
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            procs = [subprocess.Popen(cmd + [f'--out_dir={tmp}/{i}', f'--seed={i}'], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for i in range(n)]
            if failed := [p for p in procs if p.wait()]:
                cf.fail(f"{name}: train.py failed: {failed[0].stderr.read().strip().splitlines()[-1]}")
            runs, wall = [[json.loads(line) for line in open(f'{tmp}/{i}/metrics.jsonl') if 'tok_per_sec' in line]
                          for i in range(n)], time.time() - t0
        speeds = [median(r['tok_per_sec'] for r in recs[1:]) for recs in runs]
        record(row := dict(
            workload=name, variant=variant, parallel=n, tok_per_sec=speeds, aggregate=sum(speeds),
            mfu=median(median(r['mfu'] for r in recs[1:]) for recs in runs), wall_seconds=wall,
            peak_mem_gib=max(max((r.get('peak_mem_gib') or 0) for r in recs) for recs in runs),
            final_loss=[recs[-1]['train_loss'] for recs in runs]))
        print(f"{name:>18s} {variant:>10s} x{n}: {row['aggregate']:>12,.0f} tok/s in all ({speeds[0]:,.0f} each), "
              f"MFU {100 * row['mfu']:.1f}% each, {row['peak_mem_gib']:.1f} GiB", flush=True)
else:  # anchors
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from hf_io import config_to_hf
    hf_loss = lambda m: lambda x, y: torch.nn.functional.cross_entropy(m(x).logits.float().flatten(0, 1), y.flatten())
    for preset in anchors:
        c, g2 = (preset_config(preset, block_size=block_size, **kw) for kw in ({}, dict(arch='gpt2', rotary_pct=0.0)))
        with torch.device('meta'):  # shapes only: this model's FLOPs per token, every MFU's numerator
            fpt = GPT(c).flops_per_token(block_size)
        hf = GPTNeoXConfig(**{k: v for k, v in config_to_hf(c).items() if k != 'architectures'})
        row = dict(shape=preset, ours=time_steps(GPT(c), lambda m: lambda *xy: m(*xy)[1], fpt, f'{preset} this model'),
                   transformers=time_steps(GPTNeoXForCausalLM(hf), hf_loss, fpt, f'{preset} transformers GPTNeoX'),
                   nanogpt_gpt2=time_steps(gpt2_reference(g2), lambda m: m, fpt, f'{preset} nanoGPT-style GPT-2'))
        row.update(vs_transformers=row['ours']['tok_per_sec'] / row['transformers']['tok_per_sec'],
                   vs_nanogpt=row['ours']['tok_per_sec'] / row['nanogpt_gpt2']['tok_per_sec'])
        record(row)
        print(f"{preset}: {row['vs_transformers']:.2f}x transformers, {row['vs_nanogpt']:.2f}x nanoGPT", flush=True)
print(f"wrote {out_json}") if out_json else None
