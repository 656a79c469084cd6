"""
Speed benchmarks, nanoGPT style. Run on a GPU; every number in the README came from here.
  python bench.py                                   # our model, Pythia-160m shape, B=16 T=2048, bf16, compiled
  python bench.py --compare_hf=True                 # + transformers' GPTNeoXForCausalLM of the same shape
  python bench.py --final_sparsity=0.5              # + masked (pruned) training vs dense, and one pruning event
  python bench.py --mode=sparse24                   # 2:4 semi-structured linears vs dense (inference)
  python bench.py --mode=expand --model_preset=pythia-1.4b --expand_n_embd=2560   # expand.py's growth, on CPU
Each run prints a table and, with --out_json=path, writes its numbers.
"""
import json
import os
import time
from contextlib import nullcontext

os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')  # as in expand.py: huge pages for the CPU build of big models

import torch

from hf_io import config_to_hf
from model import GPT, preset_config, peak_flops

# -----------------------------------------------------------------------------
mode = 'train'                # 'train': training steps | 'sparse24': 2:4 linears vs dense | 'expand': growth time
model_preset = 'pythia-160m'
batch_size = 16
block_size = 2048
real_data = False             # True: batches from data_dir/train.bin instead of random tokens
data_dir = None
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16'            # autocast dtype on cuda; CPU runs fp32
compile = True
warmup_iters = 10             # compile and autotune happen here, outside the timed window
num_iters = 30
compare_hf = False            # also time transformers' GPTNeoXForCausalLM of the same shape
final_sparsity = 0.0          # > 0: also time training with this fraction of linear weights masked to zero
pattern = 'unstructured'
seed = 1337
sparse24_shapes = [(3072, 768), (768, 3072), (4096, 1024), (16384, 4096), (4096, 16384)]  # (out, in)
sparse24_tokens = 16384       # rows of the activation matrix fed to each linear
expand_n_embd = None          # expand mode: target width / depth (None: the preset's)
expand_n_layer = None
expand_methods = ['top_left', 'isotropic']
out_json = None
# -----------------------------------------------------------------------------
from configurator import (configure, fail, CONFIG_ERROR, positive, non_negative, between, one_of,
                          device as device_rule)
from model import PRESETS
config = configure(globals(), rules=dict(
    mode=one_of('train', 'sparse24', 'expand'), model_preset=one_of(*PRESETS), batch_size=positive,
    block_size=positive, device=device_rule, dtype=one_of('float32', 'bfloat16', 'float16'), warmup_iters=non_negative,
    num_iters=positive, final_sparsity=between(0, 1, hi_open=True), seed=non_negative, sparse24_tokens=positive,
    expand_n_embd=positive, expand_n_layer=positive))
if real_data and not data_dir:
    fail("real_data=True reads data_dir/train.bin: pass --data_dir=<prepared dataset>", CONFIG_ERROR)
if block_size > preset_config(model_preset).block_size and mode == 'train':
    fail(f"block_size={block_size} exceeds {model_preset}'s context of {preset_config(model_preset).block_size}",
         CONFIG_ERROR)
if not set(expand_methods) <= {'top_left', 'isotropic'}:
    fail(f"expand_methods={expand_methods!r}: use 'top_left' and/or 'isotropic'", CONFIG_ERROR)
torch.manual_seed(seed)
device_type = 'cuda' if 'cuda' in device else 'cpu'
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
autocast = torch.autocast(device_type, dtype=ptdtype) if device_type == 'cuda' else nullcontext()


def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()


def get_batch():
    if real_data:
        import numpy as np
        from data import open_tokens, read_meta
        try:
            data = open_tokens(data_dir, 'train', read_meta(data_dir))
        except (ValueError, FileNotFoundError) as e:
            fail(e)
        ix = torch.randint(len(data) - block_size - 1, (batch_size,))
        x = torch.stack([torch.from_numpy(data[i:i + block_size + 1].astype(np.int64)) for i in ix])
        return x[:, :-1].to(device), x[:, 1:].to(device)
    x = torch.randint(50000, (batch_size, block_size + 1), device=device)
    return x[:, :-1], x[:, 1:]


def to_semi_structured(model):
    """Replace, in place, every nn.Linear weight of `model` (a whole GPT or a single nn.Linear) that holds a 2:4
    pattern with torch.sparse.to_sparse_semi_structured, for inference (its weights stop requiring grad).
    Needs CUDA with compute capability >= 8.0, fp16/bf16 weights and the kernel's shape multiples; any other
    weight stays dense, and so does everything on CPU. Tied weights are skipped (the embedding reads them).
    Returns the names of the converted weights."""
    if not torch.cuda.is_available():
        return []
    from torch.sparse import to_sparse_semi_structured, SparseSemiStructuredTensor
    uses = {}
    for _, mod in model.named_modules(remove_duplicate=False):
        for p in mod.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    converted = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or isinstance(mod.weight, SparseSemiStructuredTensor):
            continue
        w = mod.weight
        if (w.device.type != 'cuda' or w.dtype not in (torch.float16, torch.bfloat16) or uses[id(w)] > 1
                or torch.cuda.get_device_capability(w.device) < (8, 0) or w.shape[-1] % 4
                or not bool(((w.detach().reshape(-1, 4) != 0).sum(1) <= 2).all())):
            continue
        try:
            sparse = to_sparse_semi_structured(w.detach())
        except (RuntimeError, ValueError):
            continue  # shape not a multiple of the kernel's tile: dense it stays
        mod.weight = torch.nn.Parameter(sparse, requires_grad=False)
        converted.append(f'{name}.weight' if name else 'weight')
    return converted


def time_training(model, loss_fn, pruner=None, label=''):
    """Median ms/iter over num_iters full steps (forward, backward, clip, AdamW, masking)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device_type == 'cuda')
    step = torch.compile(loss_fn) if compile else loss_fn
    X, Y = get_batch()
    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for it in range(warmup_iters + num_iters):
        sync()
        t0 = time.perf_counter()
        with autocast:
            loss = step(X, Y)
        loss.backward()
        if pruner is not None:
            pruner.mask_grads()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if pruner is not None:
            pruner.step(it + 1)  # iterations past the pruning event: masking only
        sync()
        if it >= warmup_iters:
            times.append(time.perf_counter() - t0)
        X, Y = get_batch()
    ms = 1000 * sorted(times)[len(times) // 2]
    tokens = batch_size * block_size
    flops = model_flops_per_token * tokens / (ms / 1000)
    peak = peak_flops(device)
    row = dict(label=label, ms_per_iter=ms, tokens_per_sec=tokens / (ms / 1000),
               mfu=flops / peak if peak else None, loss=loss.item(),
               max_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if device_type == 'cuda' else None)
    print(f"{label:>28s}: {ms:8.1f} ms/iter {row['tokens_per_sec']:>11,.0f} tok/s"
          + (f"  MFU {100 * row['mfu']:.1f}%" if row['mfu'] else '') + f"  loss {row['loss']:.3f}")
    return row


results = dict(config=config, device=torch.cuda.get_device_name() if device_type == 'cuda' else 'cpu',
               torch=torch.__version__)
if mode == 'train':
    gconf = preset_config(model_preset, block_size=block_size)
    model = GPT(gconf).to(device)
    model_flops_per_token = model.flops_per_token(block_size)
    print(f"{model_preset}: {model.param_counts()}, B={batch_size} T={block_size} {dtype} compile={compile} "
          f"on {results['device']}")
    results['ours'] = time_training(model, lambda x, y: model(x, y)[1], label='ours (dense)')
    if final_sparsity > 0:
        from prune import Pruner
        # one event at iteration 0 takes the model to final_sparsity; timed steps only keep masks applied
        pruner = Pruner(model, final_sparsity, prune_start=0, prune_end=0, prune_every=1, pattern=pattern)
        sync()
        t0 = time.perf_counter()
        pruner.step(0)
        sync()
        results['prune_event_ms'] = 1000 * (time.perf_counter() - t0)
        t0 = time.perf_counter()  # a later event: same work (scores, global selection), kernels already loaded
        pruner.prune_to(final_sparsity)
        sync()
        results['prune_event_warm_ms'] = 1000 * (time.perf_counter() - t0)
        print(f"{'pruning event':>28s}: {results['prune_event_ms']:8.1f} ms first, "
              f"{results['prune_event_warm_ms']:.1f} ms later (one-off, to sparsity {pruner.stats()['sparsity']:.3f})")
        results['ours_masked'] = time_training(model, lambda x, y: model(x, y)[1], pruner,
                                               label=f'ours (masked {final_sparsity:.0%})')
        results['masked_overhead'] = results['ours_masked']['ms_per_iter'] / results['ours']['ms_per_iter'] - 1
        print(f"{'masked overhead':>28s}: {100 * results['masked_overhead']:+.1f}%")
    if compare_hf:
        del model
        torch.cuda.empty_cache() if device_type == 'cuda' else None
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
        hf_config = GPTNeoXConfig(**{k: v for k, v in config_to_hf(gconf).items() if k not in ('architectures',)})
        hf = GPTNeoXForCausalLM(hf_config).to(device)
        hf.train()
        results['hf'] = time_training(hf, lambda x, y: torch.nn.functional.cross_entropy(
            hf(input_ids=x).logits.flatten(0, 1).float(), y.flatten()), label='transformers GPTNeoX')
        results['speedup_vs_hf'] = results['hf']['ms_per_iter'] / results['ours']['ms_per_iter']
        print(f"{'ours / transformers':>28s}: {results['speedup_vs_hf']:.2f}x tokens/s")
elif mode == 'sparse24':
    from prune import nm_mask
    import torch.utils.benchmark as benchmark
    half = torch.float16 if dtype == 'float16' else torch.bfloat16
    results['sparse24'] = []
    for out_f, in_f in sparse24_shapes:
        lin = torch.nn.Linear(in_f, out_f, bias=False).to(device, half)
        with torch.no_grad():
            lin.weight.mul_(nm_mask(lin.weight.abs(), 2, 4).to(half))
        x = torch.randn(sparse24_tokens, in_f, device=device, dtype=half)
        with torch.no_grad():
            dense_ms = benchmark.Timer('lin(x)', globals=dict(lin=lin, x=x)).blocked_autorange(min_run_time=1).median * 1e3
            ref = lin(x)
            converted = to_semi_structured(lin)
            sparse_ms = benchmark.Timer('lin(x)', globals=dict(lin=lin, x=x)).blocked_autorange(min_run_time=1).median * 1e3
            err = ((lin(x).float() - ref.float()).norm() / ref.float().norm()).item()
        row = dict(out_features=out_f, in_features=in_f, tokens=sparse24_tokens, dense_ms=dense_ms,
                   sparse_ms=sparse_ms, speedup=dense_ms / sparse_ms, converted=bool(converted), rel_err=err)
        results['sparse24'].append(row)
        print(f"{out_f:>6d}x{in_f:<6d} dense {dense_ms:7.3f} ms  2:4 {sparse_ms:7.3f} ms  "
              f"speedup {row['speedup']:.2f}x  converted={row['converted']}  rel.err {err:.1e}")
elif mode == 'expand':
    import gc
    from expand import expand_model, max_logit_diff
    model = GPT(preset_config(model_preset))  # random weights, float32, on the CPU where expand.py builds
    idx = torch.randint(model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(seed))
    print(f"{model_preset}: {model.param_counts()['total'] / 1e9:.3f} B params, float32, CPU")
    results['expand'] = []
    for method in expand_methods:
        t0 = time.perf_counter()
        big = expand_model(model, n_embd=expand_n_embd, n_layer=expand_n_layer, method=method, seed=seed)
        seconds = time.perf_counter() - t0
        c2 = big.config
        row = dict(method=method, n_embd=c2.n_embd, n_head=c2.n_head, n_layer=c2.n_layer, seconds=seconds,
                   params=big.param_counts()['total'], max_dlogits_fp32=max_logit_diff(model, big, idx, torch.float32))
        results['expand'].append(row)
        print(f"{method:>10s} -> {c2.n_embd}/{c2.n_head}H/{c2.n_layer}L, {row['params'] / 1e9:.3f} B params: "
              f"{seconds:.1f} s, max |dlogits| {row['max_dlogits_fp32']:.1e} (float32)")
        del big
        gc.collect()

if out_json:
    with open(out_json, 'w') as f:
        json.dump(results, f, indent=2)
