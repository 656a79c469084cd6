"""Train a GPT (Pythia / GPT-2 architecture), nanoGPT style; optionally grow it first and prune it as it trains.
  python train.py config/train_pydoc_cpu.py                       # one process (CPU or one GPU)
  python train.py --out_dir=out-pydoc --init_from=resume          # continue out_dir/ckpt.pt exactly
  torchrun --standalone --nproc_per_node=8 train.py config/grow_70m.py   # DDP (fsdp=True: FSDP2), one rank per GPU
The sequences of iteration t are a function of (seed, t) alone, whatever the ranks and micro_batch_size, so a resume
replays the same tokens. One run owns out_dir (train.lock, taken before the first write): train_config.json, ckpt.pt
(atomic, with a checksum), metrics.jsonl, model/ with save_hf=True. A resume takes the checkpoint's settings.
"""
import configurator  # noqa: F401  (first: from here on Ctrl-C is one line and status 130)
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import files
from byte_pool import byte_table, check_byte_table
from data import estimate_loss, open_tokens, read_meta, sample_batch, windows
from data.tokenizer import check_tokenizers, tokenizer_from_meta, tokenizer_record
from expand import RULES as GROW_RULES, describe, grow as expand
from hf_io import check_replaceable, load_model, save_pretrained
from model import GPT, GPTConfig, PRESETS, peak_flops, preset_config

# -----------------------------------------------------------------------------
out_dir = 'out'
data_dir = 'data/pydoc'       # a prepared dataset: train.bin, val.bin (test.bin), meta.json
eval_interval = 250           # evaluate, log and save a checkpoint every this many iterations, and at the end
checkpoint_interval = None    # save ckpt.pt every this many iterations (a multiple of eval_interval); None: each eval
eval_iters = 20               # val batches per evaluation (the same batches in every run)
log_interval = 10
always_save_checkpoint = True  # False: save ckpt.pt only when the val loss improves (small corpora overfit)
save_hf = False               # at the end also write out_dir/model, a Hugging Face directory
overwrite = False             # True: a fresh run replaces the run in out_dir
init_from = 'scratch'         # 'scratch' | 'resume' | a model directory, hub id, or another run's ckpt.pt
grow = None                   # grow init_from first with expand.grow's settings, e.g. {'n_embd': 1024}
model_preset = 'pythia-14m'   # scratch: a model.PRESETS name; the shape keys below override it
arch = None                   # scratch shape keys (None: the preset's)
n_layer = None
n_head = None
n_embd = None
mlp_width = None
vocab_size = None             # None: the dataset's vocabulary rounded up to a multiple of 64
block_size = None             # training context; None: the model's
dropout = 0.0
byte_pool = False             # scratch: byte-level tokenization with pooling (byte_pool.py) instead of the embedding
byte_embd = 64                # and head; the width, heads and layers of its byte encoder and decoder
byte_head = 4
byte_layer = 2
byte_block = 16               # bytes per token (a longer token keeps its first byte_block)
batch_size = 12               # sequences per micro-step: the global batch is gradient_accumulation_steps * batch_size
gradient_accumulation_steps = 1  # micro-steps per iteration, over all ranks (a multiple of the world size)
micro_batch_size = None       # sequences per forward (None: batch_size): speed and memory only, same gradient
learning_rate = 6e-4          # AdamW; linear warmup, then cosine down to min_lr at lr_decay_iters
min_lr = None                 # None: learning_rate / 10
max_iters = 5000              # 0: no training, only growth and/or a one-shot prune, evaluated (and save_hf)
warmup_iters = 100
lr_decay_iters = None         # None: max_iters
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0               # 0: off
final_sparsity = 0.0          # pruning (prune.py), off at 0: the fraction of linear weights zero at prune_end
prune_start = 0               # events at prune_start, every prune_every, and at prune_end
prune_end = 0
prune_every = 100
prune_schedule = 'cubic'      # 'cubic' (Zhu & Gupta) | 'geometric' (Journey Matters)
scope = 'global'              # 'global' | 'layer' | 'row'
pattern = 'unstructured'      # or 'N:M'
score = 'magnitude'           # 'magnitude' | 'balanced' (growth-aware) | 'wanda' | 'sparsegpt' (one event only)
prune_head = True
calib_batches = 8             # wanda / sparsegpt: train batches (never trained on) that calibrate the event
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16'            # autocast dtype on a GPU ('bfloat16' | 'float32'); the CPU trains in float32
compile = False               # torch.compile the model (with fsdp: each block)
compile_mode = None           # torch.compile's mode: None | 'max-autotune-no-cudagraphs' | 'reduce-overhead' (graphs)
fsdp = False                  # torchrun only: shard weights, gradients and AdamW state over the ranks (FSDP2)
seed = 1337
wandb_log = False
wandb_project = 'growing-sparse'
wandb_run_name = None
# -----------------------------------------------------------------------------
from configurator import (CONFIG_ERROR, INTERRUPTED, Rule, between, check, configure, fail, non_empty,  # noqa: E402
                          non_negative, nullable, one_of, positive, device as device_rule)
from prune import CALIBRATED, SCORES, Pruner, check_pattern  # noqa: E402
config = configure(globals(), rules=dict(
    **dict.fromkeys('n_layer n_head n_embd mlp_width vocab_size block_size byte_embd byte_head byte_layer byte_block '
                    'batch_size micro_batch_size gradient_accumulation_steps learning_rate lr_decay_iters prune_every '
                    'eval_interval checkpoint_interval eval_iters log_interval calib_batches'.split(), positive),
    **dict.fromkeys('min_lr max_iters warmup_iters weight_decay grad_clip prune_start prune_end'.split(), non_negative),
    **dict.fromkeys('dropout beta1 beta2 final_sparsity'.split(), between(0, 1, hi_open=True)),
    out_dir=non_empty, data_dir=non_empty, init_from=non_empty, model_preset=nullable(one_of(*PRESETS)),
    grow=Rule(lambda v: isinstance(v, dict) and v, "a dict of settings"), arch=one_of('gpt_neox', 'gpt2'),
    prune_schedule=one_of('cubic', 'geometric'), scope=one_of('global', 'layer', 'row'), score=one_of(*SCORES),
    compile_mode=one_of('default', 'max-autotune-no-cudagraphs', 'max-autotune', 'reduce-overhead'), device=device_rule,
    dtype=one_of('bfloat16', 'float32'), seed=Rule(lambda v: 0 <= v < 2 ** 63, "in [0, 2**63)")))
ckpt_path, metrics_path = os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'metrics.jsonl')
if init_from == 'resume':  # the run continues as it was: the settings not given again are the checkpoint's
    try:
        saved = torch.load(ckpt_path, map_location='cpu', weights_only=True, mmap=True)['config']
    except FileNotFoundError:
        fail(f"init_from='resume' but {ckpt_path} does not exist: train into this out_dir first")
    except Exception as e:  # torch's own errors for a file that is not a checkpoint
        fail(f"{ckpt_path} is not a readable checkpoint ({type(e).__name__}): restore it, or start a new out_dir")
    # one given again must equal it, unless it only says how the run is watched, saved and computed, or how long
    free = {'out_dir', 'data_dir', 'eval_interval', 'checkpoint_interval', 'log_interval', 'eval_iters', 'save_hf',
            'always_save_checkpoint', 'overwrite', 'init_from', 'max_iters', 'micro_batch_size', 'device',
            'dtype', 'compile', 'compile_mode', 'wandb_log', 'wandb_project', 'wandb_run_name', 'calib_batches'}
    given = globals()['_given']  # what files and --key=value set (configure records it)
    for k in [k for k in saved if k in config and k not in free and k in given and saved[k] != config[k]][:1]:
        fail(f"{ckpt_path} was trained with {k}={saved[k]!r}, not {config[k]!r}: a resume keeps what the run is "
             f"(docs/guarantees.md); drop --{k}, or start a new out_dir", CONFIG_ERROR)
    config.update({k: v for k, v in saved.items() if k in config and k not in given and k != 'init_from'})
    globals().update(config)  # data_dir may move: the dataset itself is compared when loaded
config['min_lr'] = min_lr = learning_rate / 10 if min_lr is None else min_lr
calibrated, micro = final_sparsity > 0 and score in CALIBRATED, micro_batch_size or batch_size
ddp, world_size = 'RANK' in os.environ, int(os.environ.get('WORLD_SIZE', 1))  # torchrun's; every rank runs all this
local_seqs = gradient_accumulation_steps * batch_size // world_size  # this rank's sequences per iteration
try:
    other = Rule(lambda v: False, "a setting of expand.grow: " + ', '.join(GROW_RULES))
    for k, v in (grow or {}).items():
        check(f'grow[{k!r}]', v, None, GROW_RULES.get(k, other))
    check_pattern(pattern, final_sparsity or None, 'final_sparsity')
except ValueError as e:
    fail(e, CONFIG_ERROR)
for bad, msg in [
        (checkpoint_interval and checkpoint_interval % eval_interval, f"checkpoint_interval={checkpoint_interval} "
         f"must be a multiple of eval_interval={eval_interval}: checkpoints are saved at evaluations"),
        (grow is not None and init_from == 'scratch', "grow grows a pretrained model: set init_from to a model "
         "directory, hub id or checkpoint (for the grown shape from scratch, set n_embd, n_head, ... instead)"),
        (min_lr > learning_rate, f"min_lr={min_lr} is above learning_rate={learning_rate}: the cosine decays to it"),
        (prune_end < prune_start, f"prune_end={prune_end} is before prune_start={prune_start}"),
        (calibrated and prune_start != prune_end, f"score={score!r} prunes once with calibration: set prune_start = "
         f"prune_end (the iteration of the one event)"),
        (calibrated and fsdp, f"score={score!r} calibrates whole layers: use it without fsdp"),
        (fsdp and not ddp, "fsdp=True shards over the ranks of a torchrun launch: use torchrun --nproc_per_node=N"),
        (gradient_accumulation_steps % world_size or local_seqs % micro, f"gradient_accumulation_steps="
         f"{gradient_accumulation_steps} must be a multiple of the world size {world_size}, and each rank's "
         f"{local_seqs} sequences a multiple of micro_batch_size={micro}")]:
    fail(msg, CONFIG_ERROR) if bad else None

rank, local_rank = int(os.environ.get('RANK', 0)), int(os.environ.get('LOCAL_RANK', 0))
master, device_type = rank == 0, 'cuda' if device.startswith('cuda') else 'cpu'
if ddp:
    dist.init_process_group('nccl' if device_type == 'cuda' else 'gloo')
    torch.cuda.set_device(device := f'cuda:{local_rank}') if device_type == 'cuda' else None
autocast = torch.autocast(device_type, torch.bfloat16) if device_type == 'cuda' and dtype == 'bfloat16' else None
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
print0 = print if master else lambda *a: None  # a line for the run, said once (by rank 0)


def agree(error):
    """Every rank learns whether rank 0's step (claiming out_dir, a write) failed, and all stop with its one line."""
    if ddp:
        dist.broadcast(flag := torch.tensor([error is not None], device=device), 0)
        error = error or ('' if flag.item() else None)
    if error is not None:
        fail(error) if master else sys.exit(1)


def out_dir_error():
    """Why this run may not write into out_dir, or None. Asked before anything is loaded, and again once the lock
    is held (of two runs started at once, exactly one gets it): a run in out_dir is never replaced unless told to."""
    if (holder := files.lock_holder(os.path.join(out_dir, 'train.lock'))) and holder != str(os.getpid()):
        return f"{out_dir} is in use by pid {holder}: wait for it or choose another out_dir"
    if init_from != 'resume' and not overwrite and any(
            os.path.exists(os.path.join(out_dir, f)) for f in ('ckpt.pt', 'metrics.jsonl', 'train_config.json')):
        return (f"out_dir {out_dir} already holds a run: continue it with --init_from=resume, choose another "
                f"out_dir, or pass --overwrite=True to replace it")
    try:
        check_replaceable(os.path.join(out_dir, 'model')) if save_hf else None  # replaces only what it wrote
    except ValueError as e:
        return str(e)
    return files.check_dest(out_dir)


def to_device(xy):
    xy = torch.from_numpy(xy)
    xy = xy.pin_memory().to(device, non_blocking=True) if device_type == 'cuda' else xy
    return xy[:, :-1], xy[:, 1:]


def get_batch(it):
    """This rank's sequences of iteration it: micro-steps rank, rank + W, ... of batch_size each, each keyed (seed, it,
    micro-step), so the split into ranks and micro-batches never changes which sequences train."""
    return to_device(np.concatenate([sample_batch(splits['train'], seed, (it, m), batch_size, block_size)
                                     for m in range(rank, gradient_accumulation_steps, world_size)]))


def evaluate(m, split='val'):
    """(loss, bits per byte) over eval_iters fixed val batches (seed 0: the same in every run with this batch_size),
    or over the whole test split once, which no choice reads."""
    batches = (to_device(sample_batch(splits['val'], 0, (k,), batch_size, block_size)) for k in range(eval_iters)) \
        if split == 'val' else map(to_device, windows(splits['test'], block_size, batch_size))
    return estimate_loss(m, batches, nbytes_of, autocast)[:2]


def get_lr(it):
    """Linear warmup, then cosine from learning_rate to min_lr at lr_decay_iters (min_lr = learning_rate: constant)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    ratio = min(1.0, (it - warmup_iters) / max(1, (lr_decay_iters or max_iters) - warmup_iters))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def full_state():
    """(model, optimizer) state dicts as ckpt.pt holds them; with fsdp a collective gathering whole tensors."""
    if not fsdp:
        return raw_model.state_dict(), optimizer.state_dict()
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(raw_model, options=opts), get_optimizer_state_dict(raw_model, optimizer, options=opts)


def log(**record):
    """Rank 0 appends iter_num's record to metrics.jsonl (a torn last line is cut first, never merged), tells wandb."""
    record = dict(iter=iter_num, tokens=iter_num * tokens_per_iter, **record)
    try:
        files.append_jsonl(metrics_path, record) if master else None
        wandb.log(record, step=record['iter']) if master and wandb_log else None
        agree(None)
    except files.FileError as e:
        agree(f"{e} (resume from the last checkpoint)")


def evaluate_and_save():
    """Every rank evaluates (a sharded forward needs them all; a replicated one gives all the same loss) and saves
    (sharded states are gathered); rank 0 writes ckpt.pt atomically, with a checksum of the content."""
    global best_val_loss, best_iter
    val_loss, val_bpb = evaluate(fwd_model)
    if not math.isfinite(val_loss):
        fail(f"val loss is {val_loss} at iter {iter_num}: training diverged; {ckpt_path} keeps the last good state "
             f"(try a lower learning_rate or more warmup_iters)") if master else sys.exit(1)
    row = dict(val_loss=val_loss, val_bpb=val_bpb, lr=get_lr(iter_num - 1) if iter_num else None,
               **{f'params_{k}': v for k, v in raw_model.param_counts().items()},
               **(pruner.stats() if pruner is not None else {}))
    if iter_num == max_iters and 'test' in splits:
        row['test_loss'], row['test_bpb'] = evaluate(fwd_model, 'test')
    print0(f"iter {iter_num}: val loss {val_loss:.4f}" + (f" ({val_bpb:.4f} bits/byte)" if val_bpb else ""))
    log(**row)
    due = checkpoint_interval is None or iter_num % checkpoint_interval == 0 or iter_num == max_iters
    if iter_num == 0 or not due or (val_loss >= best_val_loss and not always_save_checkpoint):
        return
    best_val_loss, best_iter = (val_loss, iter_num) if val_loss < best_val_loss else (best_val_loss, best_iter)
    rng = dict(torch=torch.get_rng_state(), **({'cuda': torch.cuda.get_rng_state()} if device_type == 'cuda' else {}))
    ranks = [rng] * world_size  # every rank's dropout state, so a resume on as many ranks is exact
    dist.all_gather_object(ranks, rng) if ddp else None
    (model_sd, optim_sd), masks, error = full_state(), pruner.state_dict() if pruner is not None else None, None
    if master:
        ckpt = dict(model=model_sd, optimizer=optim_sd, model_args=asdict(raw_model.config), config=config,
                    iter_num=iter_num, best_val_loss=best_val_loss, best_iter=best_iter, rng_ranks=ranks, origin=origin,
                    log_window=(loss_sum.item(), iters_since_log), growth=growth, record=record, pruner=masks,
                    data={k: meta.get(k) for k in ('tokenizer', 'vocab_size', 'eot', 'chars', 'train_tokens')})
        ckpt['checksum'] = files.checksum(ckpt)
        try:
            files.write(ckpt_path, lambda f: torch.save(ckpt, f))
        except files.FileError as e:
            error = f"{e} ({ckpt_path} still holds the previous checkpoint; resume from it)"
    agree(error)


agree(out_dir_error() if master else None)

# data, its tokenizer (bits per byte for any model; byte-level models and exports need it), and the model
try:
    meta = read_meta(data_dir)
    splits = {s: open_tokens(data_dir, s, meta) for s in ('train', 'val', 'test')
              if s != 'test' or os.path.exists(os.path.join(data_dir, 'test.bin'))}
    try:
        tokenizer = tokenizer_from_meta(meta)
        nbytes_of = torch.tensor([len(b) for b in tokenizer.token_bytes()], dtype=torch.float64)
    except (ValueError, OSError) as e:
        if save_hf or byte_pool:
            raise
        tokenizer = nbytes_of = None
        print(f"note: no bits per byte ({e})")
    torch.manual_seed(seed)  # the same initial weights on every rank
    checkpoint, growth, record, origin = None, None, {}, init_from
    shape = {k: config[k] for k in ('arch', 'n_layer', 'n_head', 'n_embd', 'mlp_width', 'vocab_size', 'block_size')
             if config[k] is not None}
    if init_from == 'scratch':
        shape.setdefault('vocab_size', -(-meta['vocab_size'] // 64) * 64)  # a multiple of 64: matmul-friendly
        shape.update(dropout=dropout, **{k: v for k, v in config.items() if k.startswith('byte_') and byte_pool})
        model = GPT(preset_config(model_preset, **shape) if model_preset else GPTConfig(**shape))
        if byte_pool:
            model.byte_table.copy_(byte_table(tokenizer.token_bytes(), model.config.vocab_size, byte_block))
    elif init_from == 'resume':
        model, source = load_model(ckpt_path)  # float32: what AdamW updates; the checksum is verified
        checkpoint, seen = source['checkpoint'], source['checkpoint'].get('data') or {}
        if max_iters < checkpoint['iter_num']:
            raise ValueError(f"max_iters={max_iters} is below the checkpoint's iteration {checkpoint['iter_num']}: a "
                             f"resume only continues")
        growth, origin, record = checkpoint.get('growth'), checkpoint.get('origin', init_from), checkpoint['record']
        check_tokenizers(seen, meta, f'the checkpoint {ckpt_path}', f'the dataset {data_dir}')
        if seen.get('train_tokens', meta.get('train_tokens')) != meta.get('train_tokens'):
            raise ValueError(f"{ckpt_path} trained on a dataset of {seen['train_tokens']:,} tokens, {data_dir} holds "
                             f"{meta.get('train_tokens')}: resume on the run's own dataset")
    else:
        model, source = load_model(init_from)
        record = source['record']
        if tokenizer_record(source) is not None:  # a model records the tokenizer its ids belong to
            check_tokenizers(tokenizer_record(source), meta, f'the model {init_from}', f'the dataset {data_dir}')
        if extra := sorted(set(shape) - {'block_size'}):
            raise ValueError(f"init_from={init_from!r} takes the shape from the model: drop {extra}")
        model.config.dropout = dropout  # a pretrained model trains with this run's dropout
        for m in [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]:
            m.p = dropout
    check_tokenizers(model, meta, 'the model', f'the dataset {data_dir}')
    check_byte_table(model, tokenizer) if model.config.byte_pool else None
    config['block_size'] = block_size = block_size or model.config.block_size
    if block_size > model.config.block_size:
        raise ValueError(f"block_size={block_size} exceeds the model's context of {model.config.block_size}")
    if min(len(d) for d in splits.values()) <= block_size:
        raise ValueError(f"{data_dir}: a split has fewer than block_size+1={block_size + 1} tokens")
    if grow is not None and checkpoint is None:
        # grown on the CPU in float64 before compile and DDP (every rank grows the same model from the same seed);
        # exactness measured on real text: 4 sequences of val batch 0, up to 256 tokens each
        small_val_loss, small = evaluate(model.to(device))[0], model.config
        idx = to_device(sample_batch(splits['val'], 0, (0,), batch_size, block_size))[0][:4, :256].cpu()
        model, growth = expand(model.cpu(), idx, **{'seed': seed, **grow})
        growth = dict(expanded_from=init_from, **growth, small_val_loss=small_val_loss,
                      **({'parent': record} if record else {}))
        record = {}  # the growth record holds the source's; new units train from 0, so no source masks carry over
        print0(f"grew {describe(small)} -> {describe(model.config)}: max |dlogits| {growth['max_abs_dlogits']:.3e} vs "
               f"the small model (tolerance {growth['tolerance']:g}); small model val loss {small_val_loss:.4f}")
except (ValueError, OSError) as e:
    fail(e)
raw_model = model.to(device)  # the GPT itself (sharded in place with fsdp): state, pruning, evaluation, saving
if fsdp:  # FSDP2: each block one unit (gathered for its forward/backward); the root holds embeddings, ln_f and head
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_optimizer_state_dict)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device_type, (world_size,))
    for block in raw_model.transformer.h:
        block.compile() if compile else None
        fully_shard(block, mesh=mesh)
    fully_shard(raw_model, mesh=mesh)
fwd_model = torch.compile(model, mode=compile_mode) if compile and not fsdp else model  # evaluation's forward
model = DDP(fwd_model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp and not fsdp else fwd_model
optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
source_masks, pruner = None, None
if checkpoint is None and init_from != 'scratch' and grow is None:  # a pruned source keeps its zeros
    source_masks = ((source['checkpoint'] or {}).get('pruner') or {}).get('masks')
    if source_masks is None and (record.get('pruning') or (record.get('sparsity') or 0) > 0):
        source_masks = {n: w != 0 for n, w in raw_model.linear_weights().items()}
if final_sparsity > 0 or source_masks is not None or (checkpoint or {}).get('pruner'):
    # calibration: train batches keyed by an iteration no run reaches (never trained on), the same on every rank
    calib = (lambda: [to_device(sample_batch(splits['train'], seed, (2 ** 31 - 1, k), batch_size, block_size))[0]
                      for k in range(calib_batches)]) if calibrated else None
    pruner = Pruner(raw_model, final_sparsity=final_sparsity, prune_start=prune_start, prune_end=prune_end,
                    prune_every=prune_every, prune_schedule=prune_schedule, scope=scope, pattern=pattern, score=score,
                    prune_head=prune_head, calib=calib)
    pruner.set_masks(source_masks) if source_masks is not None else None
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
flops_per_iter, peak = raw_model.flops_per_token(block_size) * tokens_per_iter, peak_flops(device)
iter_num, best_val_loss, best_iter, loss_sum, iters_since_log = 0, float('inf'), None, torch.zeros((), device=device), 0
if checkpoint is not None:  # the optimizer (with fsdp saved whole, keyed by parameter name), the pruner, the counters
    set_optimizer_state_dict(raw_model, optimizer, checkpoint['optimizer'], options=StateDictOptions(
        full_state_dict=True)) if fsdp else optimizer.load_state_dict(checkpoint['optimizer'])
    pruner.load_state_dict(checkpoint['pruner']) if pruner is not None else None
    iter_num, best_val_loss, ranks = checkpoint['iter_num'], checkpoint['best_val_loss'], checkpoint['rng_ranks']
    best_iter, (loss_value, iters_since_log) = checkpoint.get('best_iter'), checkpoint['log_window']
    loss_sum.fill_(loss_value if master else 0.0)  # the open train-loss window: logged losses resume exactly
    try:  # another number of ranks: the data replays exactly, dropout cannot
        torch.manual_seed(seed + rank + iter_num * world_size) if len(ranks) != world_size else \
            torch.set_rng_state(ranks[rank]['torch'])
        torch.cuda.set_rng_state(ranks[rank]['cuda']) if device_type == 'cuda' and 'cuda' in ranks[rank] else None
    except (RuntimeError, KeyError, TypeError, IndexError) as e:
        fail(f"{ckpt_path}: its random state cannot be restored ({type(e).__name__}): the checkpoint is damaged; "
             f"restore it or start a new out_dir")
    checkpoint = source = None  # free the loaded weights and optimizer state
else:
    torch.manual_seed(seed + rank)  # after the (identical) init: dropout differs across ranks
agree((files.claim(out_dir) or out_dir_error()) if master else None)
if master:  # the record of what this run is; a resume drops the records of iterations it is about to replay
    try:
        if overwrite and init_from != 'resume':
            for name in ('ckpt.pt', 'metrics.jsonl', 'train_config.json', 'model'):
                files.remove(os.path.join(out_dir, name))
        files.write_json(os.path.join(out_dir, 'train_config.json'), dict(
            config=config, model_args=asdict(raw_model.config), world_size=world_size, tokens_per_iter=tokens_per_iter,
            flops_per_token=raw_model.flops_per_token(block_size), params=raw_model.param_counts(),
            dataset=meta.get('source'), growth=growth))
        kept = [r for r in files.read_jsonl(metrics_path) if r['iter'] <= iter_num]
        files.write_text(metrics_path, ''.join(json.dumps(r) + '\n' for r in kept))
    except (ValueError, OSError) as e:
        fail(e)
    print(f"model: {raw_model.param_counts()} | {tokens_per_iter:,} tokens/iter over {world_size} rank(s)")
    if wandb_log:
        import wandb
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)

# the loop; iter_num counts finished iterations, so a checkpoint at iter_num resumes with iteration iter_num
if init_from != 'resume':
    # max_iters=0 only exports: an event at iteration 0 (one-shot pruning), which training runs after iteration 0's
    # update, runs before the one evaluation instead, so that the val loss and save_hf's model are the pruned one's
    pruner.step(0) if max_iters == 0 and final_sparsity > 0 and prune_end == 0 else None
    evaluate_and_save()
t0, timed_iters, first_iter = None, 0, iter_num  # the first iteration (compile, warm-up) is not timed
try:
    while iter_num < max_iters:
        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group['lr'] = lr
        # this rank's sequences in chunks of micro_batch_size; each chunk's mean loss weighted by its share of the
        # batch, and the ranks' mean (DDP's all-reduce, FSDP's reduce-scatter): the gradient of the batch mean
        (x, y), chunks = get_batch(iter_num), local_seqs // micro
        for j in range(chunks):
            last = j == chunks - 1  # gradients are reduced across ranks after the last chunk only
            raw_model.set_requires_gradient_sync(last) if fsdp else None
            with model.no_sync() if ddp and not fsdp and not last else nullcontext():  # reduce in the last backward
                with autocast or nullcontext():
                    _, loss = model(x[j * micro:(j + 1) * micro], y[j * micro:(j + 1) * micro])
                (loss / chunks).backward()
            loss_sum += loss.detach() / (chunks * world_size)
        pruner.mask_grads() if pruner is not None else None  # pruned weights get no gradient: clipping sees live ones
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip) if grad_clip > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pruner.step(iter_num) if pruner is not None else None  # an event if due; pruned weights re-zeroed after AdamW
        iter_num, iters_since_log, timed_iters = iter_num + 1, iters_since_log + 1, timed_iters + 1
        if iter_num == first_iter + 1:
            torch.cuda.synchronize() if device_type == 'cuda' else None
            t0, timed_iters = time.time(), 0
        if iter_num % log_interval == 0 or iter_num == max_iters:
            dist.all_reduce(loss_sum) if ddp else None  # every rank learns the loss, so every rank stops on NaN
            train_loss, iters_since_log = loss_sum.item() / iters_since_log, 0
            loss_sum.zero_()
            if not math.isfinite(train_loss):
                fail(f"train loss is {train_loss} at iter {iter_num}: training diverged; {ckpt_path} keeps the last "
                     f"good state (try a lower learning_rate or more warmup_iters)") if master else sys.exit(1)
            dt, t0, timed_iters = (time.time() - t0) / timed_iters if timed_iters else None, time.time(), 0
            mfu = flops_per_iter / dt / (peak * world_size) if peak and dt else None
            speed = f", {dt * 1000:.1f} ms/iter, {tokens_per_iter / dt:,.0f} tok/s" if dt else " (warm-up, not timed)"
            print0(f"iter {iter_num}: loss {train_loss:.4f}, lr {lr:.3e}{speed}" + (f", mfu {mfu:.1%}" if mfu else ""))
            log(train_loss=train_loss, lr=lr, tok_per_sec=tokens_per_iter / dt if dt else None, mfu=mfu,
                **({'peak_mem_gib': torch.cuda.max_memory_allocated() / 2 ** 30} if device_type == 'cuda' else {}))
        if iter_num % eval_interval == 0 or iter_num == max_iters:
            if ddp and iters_since_log:  # the open train-loss window, folded into rank 0, which checkpoints it
                dist.all_reduce(loss_sum)
                loss_sum.zero_() if not master else None
            t_eval = time.time()
            evaluate_and_save()
            t0 = None if t0 is None else t0 + time.time() - t_eval  # evaluation is not training throughput
except KeyboardInterrupt:
    fail(f"interrupted at iteration {iter_num}: {ckpt_path} holds the last checkpoint; continue with "
         f"--init_from=resume", INTERRUPTED) if master else sys.exit(INTERRUPTED)

if save_hf:  # out_dir/model: the weights after the last iteration (a sharded model gathered first, by every rank)
    model_sd = full_state()[0] if fsdp else None
    if master:
        export = GPT(raw_model.config) if fsdp else raw_model
        export.load_state_dict(model_sd) if fsdp else None
        try:
            save_pretrained(export, os.path.join(out_dir, 'model'), tokenizer=tokenizer, replace=True, extra_meta=dict(
                growth or record, trained_from=origin, data_dir=data_dir, iter_num=iter_num, tokenizer=meta,
                weights='last', best_val_loss=best_val_loss, best_iter=best_iter,
                **(pruner.stats() if pruner is not None else {})))
        except (ValueError, OSError) as e:
            fail(e)
        print(f"wrote {out_dir}/model: the weights after iteration {iter_num}")
if ddp:
    dist.barrier()  # rank 0 may still be writing the export
    dist.destroy_process_group()
