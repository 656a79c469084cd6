"""
Train a GPT (Pythia / GPT-2 architecture), nanoGPT style, optionally pruning it as it trains.
  python train.py config/train_pydoc_cpu.py                     # one process (CPU or one GPU)
  python train.py config/x.py --init_from=resume                # continue out_dir/ckpt.pt exactly
  torchrun --standalone --nproc_per_node=8 train.py config/x.py # DDP, one process per GPU
init_from: 'scratch' (model_preset and/or the shape keys), 'resume', or a Hugging Face model directory / hub id /
another run's ckpt.pt (weights only).
Growth: with a pretrained init_from and a grow_* shape key set, the model is first grown function-preservingly
(expand.py's grow, exactness measured against the small model) and the grown model is what trains:
  python train.py config/grow_70m.py            # Recipe 2: Pythia-70m grown to 1024 wide, pruned back to 70m's count
Exactness: the global batch of iteration t is a function of (seed, t) alone, so resuming from a checkpoint or
changing the number of ranks (same gradient_accumulation_steps) replays the same tokens.
out_dir gets train_config.json (the resolved config), ckpt.pt (atomic), metrics.jsonl (one JSON object per line),
and model/ (a Hugging Face directory) with save_hf=True.
"""
import atexit
import json
import math
import os
import random
import shutil
import socket
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data import open_tokens, read_meta, sample_batch, windows
from data.tokenizer import tokenizer_from_meta
from hf_io import load_model, save_pretrained
from model import GPT, GPTConfig, preset_config, peak_flops

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
data_dir = 'data/pydoc'       # a folder with train.bin, val.bin, meta.json (data/*/prepare.py)
eval_interval = 250           # evaluate (and save a checkpoint) every this many iterations, and at the end
checkpoint_interval = None    # save ckpt.pt only every this many iterations (a multiple of eval_interval) and at the
                              # end; None: at every eval. Big models: a checkpoint holds weights + AdamW (16 B/param)
eval_iters = 20               # val batches per evaluation (always the same batches)
log_interval = 10
eval_only = False             # evaluate the initial model and exit
always_save_checkpoint = True # False: save only when val loss improves
save_hf = False               # at the end also write out_dir/model as a Hugging Face directory
overwrite = False             # True: a fresh run replaces the run in out_dir (ckpt.pt, metrics.jsonl, model/)
# model
init_from = 'scratch'         # 'scratch' | 'resume' | a model directory, hub id, or another run's ckpt.pt
model_preset = 'pythia-14m'   # scratch: a model.PRESETS name; the shape keys below override it (None: preset's)
arch = None
n_layer = None
n_head = None
n_embd = None
mlp_width = None
vocab_size = None             # scratch: the dataset's vocab rounded up to a multiple of 64
block_size = None             # training context; None: the model's
dropout = 0.0
# byte-level tokenization with pooling (byte_pool.py), from scratch: the token embedding and LM head replaced by a
# byte encoder and decoder built over the dataset tokenizer's bytes; the .bin files are the same
byte_pool = False
byte_embd = 64                # width of the byte encoder and decoder
byte_head = 4
byte_layer = 2                # layers of each
byte_block = 16               # bytes per token (a longer token keeps its first byte_block)
byte_decoder = 'causal'       # 'causal' (byte by byte within a token) | 'parallel'
# growth (expand.py), applied to init_from's pretrained model before compile and DDP; on when a grow_ shape key is set
grow_n_embd = None            # target width, whole heads of the source's head_size
grow_n_head = None            # or the target head count
grow_n_layer = None           # target depth (new blocks are identities)
grow_mlp_width = None         # None: the source's mlp_width/n_embd ratio at the new width
grow_method = 'top_left'      # 'top_left' | 'isotropic'
grow_depth_mode = 'interleave'  # new blocks between the old ones | 'append'
grow_noise = 1e-2             # std of the cancelling symmetry-breaking noise, relative to each weight's std
grow_check_dtype = 'float64'  # the growth and its max |dlogits| check against the small model run in this dtype
grow_tolerance = None         # max |dlogits| allowed; None: 1e-9 (float64) or 1e-4 (float32)
# batch: tokens per iteration = gradient_accumulation_steps * batch_size * block_size, for any number of ranks
batch_size = 12               # sequences per micro-step
gradient_accumulation_steps = 1  # micro-steps per iteration, over all ranks (a multiple of the world size)
# AdamW and the learning rate: linear warmup, then cosine down to min_lr at lr_decay_iters
learning_rate = 6e-4
max_iters = 5000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0               # 0: off
decay_lr = True
warmup_iters = 100
lr_decay_iters = None         # None: max_iters
min_lr = None                 # None: learning_rate / 10
# pruning (prune.py), off when final_sparsity == 0
final_sparsity = 0.0
prune_start = 0
prune_end = 0
prune_every = 100
prune_schedule = 'cubic'
scope = 'global'
pattern = 'unstructured'
score = 'magnitude'
prune_head = True
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16'            # autocast dtype on GPU ('bfloat16' | 'float32'); CPU always trains in float32
compile = False               # torch.compile the model (with fsdp: each block, before it is sharded)
fsdp = False                  # torchrun only: shard weights, gradients and AdamW state over the ranks (FSDP2)
seed = 1337
wandb_log = False
wandb_project = 'growing-sparse'
wandb_run_name = None
# -----------------------------------------------------------------------------
from configurator import (configure, fail, CONFIG_ERROR, INTERRUPTED, positive, non_negative, non_empty,  # noqa: E402
                          between, one_of, nullable, device as device_rule)
from model import PRESETS  # noqa: E402
config = configure(globals(), rules=dict(
    out_dir=non_empty, data_dir=non_empty, init_from=non_empty, eval_interval=positive,
    checkpoint_interval=positive, eval_iters=positive, log_interval=positive,
    model_preset=nullable(one_of(*PRESETS)), arch=one_of('gpt_neox', 'gpt2'), n_layer=positive, n_head=positive,
    n_embd=positive, mlp_width=positive, vocab_size=positive, block_size=positive, dropout=between(0, 1, hi_open=True),
    byte_embd=positive, byte_head=positive, byte_layer=positive, byte_block=positive,
    byte_decoder=one_of('causal', 'parallel'),
    grow_n_embd=positive, grow_n_head=positive, grow_n_layer=positive, grow_mlp_width=positive,
    grow_method=one_of('top_left', 'isotropic'), grow_depth_mode=one_of('interleave', 'append'),
    grow_noise=non_negative, grow_check_dtype=one_of('float64', 'float32'), grow_tolerance=non_negative,
    batch_size=positive, gradient_accumulation_steps=positive, learning_rate=positive, max_iters=non_negative,
    weight_decay=non_negative, beta1=between(0, 1, hi_open=True), beta2=between(0, 1, hi_open=True),
    grad_clip=non_negative, warmup_iters=non_negative, lr_decay_iters=positive, min_lr=non_negative,
    final_sparsity=between(0, 1, hi_open=True), prune_start=non_negative, prune_end=non_negative,
    prune_every=positive, prune_schedule=one_of('cubic', 'geometric'), scope=one_of('global', 'layer', 'row'),
    score=one_of('magnitude', 'balanced'), device=device_rule, dtype=one_of('bfloat16', 'float32'),
    seed=non_negative))
if min_lr is None:
    config['min_lr'] = min_lr = learning_rate / 10
if min_lr > learning_rate:
    fail(f"min_lr={min_lr} is above learning_rate={learning_rate}: the cosine decays from learning_rate down to "
         f"min_lr", CONFIG_ERROR)
growing = any(config[k] is not None for k in ('grow_n_embd', 'grow_n_head', 'grow_n_layer', 'grow_mlp_width'))
if checkpoint_interval is not None and checkpoint_interval % eval_interval:
    fail(f"checkpoint_interval={checkpoint_interval} must be a multiple of eval_interval={eval_interval}: "
         f"checkpoints are saved at evaluations", CONFIG_ERROR)
if growing and init_from == 'scratch':
    fail("the grow_* keys grow a pretrained model: set init_from to a model directory, hub id or checkpoint (for "
         "the grown shape from scratch, set n_embd/n_head/n_layer/mlp_width instead)", CONFIG_ERROR)
if final_sparsity > 0:
    from prune import check_settings
    try:
        check_settings(final_sparsity, scope, pattern, score, 'final_sparsity')
    except ValueError as e:
        fail(e, CONFIG_ERROR)
    if prune_end < prune_start:
        fail(f"prune_end={prune_end} is before prune_start={prune_start}", CONFIG_ERROR)

# distributed: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; every rank runs this whole script
ddp = 'RANK' in os.environ
if ddp:
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    rank, local_rank, world_size = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
else:
    rank, local_rank, world_size = 0, 0, 1
master = rank == 0
if fsdp and not ddp:
    fail("fsdp=True shards the model over the ranks of a torchrun launch: start it with torchrun "
         "--nproc_per_node=N (N >= 2)", CONFIG_ERROR)
if gradient_accumulation_steps % world_size:
    fail(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the world size "
         f"{world_size}: each rank runs an equal share of the micro-steps", CONFIG_ERROR)
local_steps = gradient_accumulation_steps // world_size
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
autocast = (torch.autocast(device_type, dtype=torch.bfloat16) if device_type == 'cuda' and dtype == 'bfloat16'
            else nullcontext())
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

# -----------------------------------------------------------------------------
# out_dir: one run at a time, and a fresh run never replaces a run it was not told to
RUN_FILES = ('ckpt.pt', 'metrics.jsonl', 'train_config.json', 'model')  # what a run writes into out_dir
ckpt_path = os.path.join(out_dir, 'ckpt.pt')
lock_path = os.path.join(out_dir, 'train.lock')
if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    fail(f"out_dir {out_dir} is a file, not a directory: choose another out_dir")
if init_from != 'resume' and not eval_only and not overwrite and any(
        os.path.exists(os.path.join(out_dir, f)) for f in RUN_FILES[:2]):
    fail(f"out_dir {out_dir} already holds a run: continue it with --init_from=resume, choose another out_dir, or "
         f"pass --overwrite=True to replace it")


def lock_holder():
    """The pid and host in out_dir/train.lock if that process still runs; None for no lock or a stale one."""
    try:
        with open(lock_path) as f:
            pid, host = f.read().split()[:2]
        pid = int(pid)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():
        return pid, host  # cannot tell from here whether it runs: assume it does
    try:
        os.kill(pid, 0)
        with open(f'/proc/{pid}/stat') as f:  # a zombie has exited
            if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                return None
    except ProcessLookupError:
        return None
    except (PermissionError, OSError):
        pass
    return pid, host


if master and not eval_only and lock_holder():
    pid, host = lock_holder()
    fail(f"out_dir {out_dir} is in use by train.py pid {pid} on {host} ({lock_path}): wait for it, or choose another "
         f"out_dir (if that process is gone, delete the lock file)")

# -----------------------------------------------------------------------------
# data: np.memmap'd token ids; batches drawn from seeded generators, never from global RNG state
try:
    meta = read_meta(data_dir)
    for split in ('train', 'val'):
        open_tokens(data_dir, split, meta)
    has_test = os.path.exists(os.path.join(data_dir, 'test.bin'))  # data/prepare.py test_fraction
    if has_test:
        open_tokens(data_dir, 'test', meta)
except (ValueError, FileNotFoundError, KeyError) as e:
    fail(e)
try:  # its UTF-8 bytes per id give val bits per byte for every model, BPE or byte-level, on the same text
    tokenizer = tokenizer_from_meta(meta)
    text_bytes = torch.tensor([len(b) for b in tokenizer.token_bytes()], dtype=torch.float64)
except (ValueError, FileNotFoundError, KeyError) as e:
    if save_hf or byte_pool:  # exported beside the weights; spelled by the byte table
        fail(e)
    tokenizer, text_bytes = None, None
    if master:
        print(f"note: no bits per byte ({e})")
hf_tokenizer = tokenizer if save_hf and master else None


def load_tokens(split):
    return open_tokens(data_dir, split, meta)


def get_batch(split, *key):
    """The batch_size sequences named by key: ('train', iter_num, micro_step) or ('val', k).
    The memmap is reopened each call (a long-lived one keeps growing resident memory)."""
    xy = torch.from_numpy(sample_batch(load_tokens(split), seed if split == 'train' else 0, key, batch_size,
                                       block_size))  # val batches: seed 0, the same for every run
    x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x, y


def val_batches():
    return (get_batch('val', k) for k in range(eval_iters))


def test_batches():
    """The whole test split once, in disjoint windows of block_size (each token predicted once): no run's choice
    reads it, so it scores the chosen runs without bias."""
    for xy in windows(load_tokens('test'), block_size, batch_size):
        xy = torch.from_numpy(xy).to(device)
        yield xy[:, :-1], xy[:, 1:]


@torch.no_grad()
def estimate_loss(m, batches):
    """(loss, bits per byte) of m over batches. loss: the training loss's mean (per token, or per target byte for
    byte_pool); bits per byte: the summed negative log-likelihood over the UTF-8 bytes of the targets' text,
    comparable across tokenizations."""
    m.eval()
    total, units, nbytes = 0.0, 0, 0.0
    for x, y in batches:
        with autocast:
            _, nll = m(x, y, reduction='none')
        total += nll.double().sum().item()
        units += m.loss_units(y)
        if text_bytes is not None:
            nbytes += float(text_bytes[y.cpu().clamp(max=len(text_bytes) - 1)].sum())
    m.train()
    return total / units, total / nbytes / math.log(2) if nbytes else None


def rng_state():
    np_state = np.random.get_state()
    py_state = random.getstate()
    rng = dict(torch=torch.get_rng_state(), numpy=torch.from_numpy(np_state[1].astype(np.int64)),
               numpy_pos=list(np_state[2:]), python=[py_state[0], list(py_state[1]), py_state[2]])
    if device_type == 'cuda':
        rng['cuda'] = torch.cuda.get_rng_state()
    return rng


def set_rng_state(rng):
    torch.set_rng_state(rng['torch'])
    if device_type == 'cuda' and 'cuda' in rng:
        torch.cuda.set_rng_state(rng['cuda'])
    np.random.set_state(('MT19937', rng['numpy'].numpy().astype(np.uint32), *rng['numpy_pos']))
    random.setstate((rng['python'][0], tuple(rng['python'][1]), rng['python'][2]))


# -----------------------------------------------------------------------------
# model
torch.manual_seed(seed)  # the same initial weights on every rank
checkpoint = None
shape = {k: v for k, v in dict(arch=arch, n_layer=n_layer, n_head=n_head, n_embd=n_embd, mlp_width=mlp_width,
                                vocab_size=vocab_size, dropout=dropout).items() if v is not None}
if byte_pool:
    shape.update(byte_pool=True, byte_embd=byte_embd, byte_head=byte_head, byte_layer=byte_layer,
                 byte_block=byte_block, byte_decoder=byte_decoder)
GROW_KEYS = ('grow_n_embd', 'grow_n_head', 'grow_n_layer', 'grow_mlp_width', 'grow_method', 'grow_depth_mode',
             'grow_noise')
# what a checkpoint means: a resume that changes any of these would train another run under this one's name
RESUME_KEYS = ('batch_size', 'gradient_accumulation_steps', 'block_size', 'seed', 'final_sparsity', 'prune_start',
               'prune_end', 'prune_every', 'prune_schedule', 'scope', 'pattern', 'score', 'prune_head', 'fsdp')
DATA_KEYS = ('tokenizer', 'vocab_size', 'eot', 'chars')  # the dataset's tokenizer: the ids' meaning
growth, provenance = None, {}  # the growth record (expand.grow); the source model directory's record
origin = init_from            # what the run's training started from (a resume keeps its checkpoint's)
source_masks = None           # keep masks of a pruned source model: its zeros stay zero
try:
    if init_from == 'scratch':
        shape.setdefault('vocab_size', -(-meta['vocab_size'] // 64) * 64)  # round up: matmul-friendly
        if block_size is not None:
            shape['block_size'] = block_size
        model_config = (preset_config(model_preset, **shape) if model_preset is not None else GPTConfig(**shape))
        model = GPT(model_config)
        if byte_pool:
            from byte_pool import byte_table
            model.byte_table.copy_(byte_table(tokenizer.token_bytes(), model_config.vocab_size, byte_block))
    elif init_from == 'resume':
        if not os.path.exists(ckpt_path):
            fail(f"init_from='resume' but {ckpt_path} does not exist: train into this out_dir first")
        model, source = load_model(ckpt_path)  # float32: the weights AdamW updates
        checkpoint = source.pop('checkpoint')  # the only reference: freed once restored
        missing = {'optimizer', 'iter_num', 'rng', 'config'} - set(checkpoint)
        if missing:
            fail(f"{ckpt_path} is missing {sorted(missing)}: not a checkpoint written by train.py")
        clash = {k: v for k, v in shape.items() if checkpoint['model_args'].get(k) != v and k != 'dropout'}
        if clash:
            fail(f"{ckpt_path} holds a model with {({k: checkpoint['model_args'].get(k) for k in clash})}, not "
                 f"{clash}: resume takes the shape from the checkpoint; drop those keys", CONFIG_ERROR)
        saved = checkpoint['config']
        if block_size is None:
            config['block_size'] = block_size = saved.get('block_size')
        changed = [k for k in RESUME_KEYS if k in saved and saved[k] != config[k]]
        if changed:
            k = changed[0]
            fail(f"{ckpt_path} was trained with {k}={saved[k]!r}, not {config[k]!r}: resuming with another {k} would "
                 f"change what the run is; keep it (the README lists what may change on resume), or start a new "
                 f"out_dir", CONFIG_ERROR)
        data = checkpoint.get('data') or {}
        changed = [k for k in DATA_KEYS if k in data and data[k] != meta.get(k)]
        if changed:
            fail(f"{data_dir}'s tokenizer differs from the one {ckpt_path} was trained with ({changed[0]}: "
                 f"{str(meta.get(changed[0]))[:40]!r} vs {str(data[changed[0]])[:40]!r}): resume on a dataset made "
                 f"with the same tokenizer", CONFIG_ERROR)
        growth, provenance = checkpoint.get('growth'), checkpoint.get('provenance') or {}
        origin = checkpoint.get('origin', origin)
        if growing:  # the grown model is in the checkpoint: it is restored, never grown again
            clash = {k: saved.get(k) for k in GROW_KEYS if saved.get(k) != config[k]}
            if clash:
                fail(f"{ckpt_path} was {'grown with ' + str(clash) if growth else 'not grown'}, not with "
                     f"{({k: config[k] for k in clash})}: resume restores the checkpoint's model and does not grow "
                     f"it again; drop the grow_* keys or use the checkpoint's", CONFIG_ERROR)
    else:  # weights only: a fresh optimizer and schedule
        model, source = load_model(init_from)
        provenance = source['record']
        if set(shape) - {'dropout'}:
            fail(f"init_from={init_from!r} takes the shape from the model; drop {sorted(set(shape) - {'dropout'})}",
                 CONFIG_ERROR)
        # a pruned source keeps its zeros: the masks of a train.py checkpoint, or the zeros of a model directory
        # whose record says it was pruned (prune.py's 'pruning', train.py's export of a pruning run)
        pruned = ((source['checkpoint'] or {}).get('pruner') or {}).get('masks')
        if pruned is not None:
            source_masks = pruned
        elif provenance.get('pruning') or (provenance.get('sparsity') or 0) > 0:
            source_masks = {n: w != 0 for n, w in model.linear_weights().items()}
        del source
        model.config.dropout = dropout
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = dropout
            if hasattr(m, 'dropout') and isinstance(m.dropout, float):
                m.dropout = dropout
except (ValueError, TypeError, FileNotFoundError) as e:
    fail(e)
if model.config.byte_pool:  # its byte table must spell this dataset's ids
    from byte_pool import check_byte_table
    if tokenizer is None:
        fail(f"a byte-level model reads the dataset's tokenizer, and {data_dir}'s ({meta['tokenizer']}) could not be "
             f"built: see the note above (e.g. its tokenizer_path)")
    try:
        check_byte_table(model, tokenizer)
    except ValueError as e:
        fail(f"{data_dir}: {e}")
if block_size is None:
    block_size = model.config.block_size
    config['block_size'] = block_size
if block_size > model.config.block_size:
    fail(f"block_size={block_size} exceeds the model's context of {model.config.block_size}", CONFIG_ERROR)
if meta['vocab_size'] > model.config.vocab_size:
    fail(f"the dataset's tokenizer ({meta['tokenizer']}) has {meta['vocab_size']} ids but the model only "
         f"{model.config.vocab_size}: use a dataset made with the model's tokenizer")
if len(load_tokens('train')) <= block_size or len(load_tokens('val')) <= block_size:
    fail(f"{data_dir}: a split has fewer than block_size+1={block_size + 1} tokens")
if growing and checkpoint is None:
    # grown on the CPU in grow_check_dtype, before compile and DDP (every rank grows the same model from the same
    # seed); exactness is measured on real text: 4 sequences of val batch 0, up to 256 tokens each
    from expand import grow, describe
    small_val_loss = estimate_loss(model.to(device), val_batches())[0] if master else None
    model.cpu()
    idx = get_batch('val', 0)[0][:4, :256].cpu()
    small = model.config
    try:
        model, growth = grow(model, idx, grow_n_embd, grow_n_head, grow_n_layer, grow_mlp_width, grow_method,
                             grow_depth_mode, grow_noise, seed, grow_check_dtype, grow_tolerance)
    except ValueError as e:
        fail(e)
    growth = dict(expanded_from=init_from, **growth, small_val_loss=small_val_loss,
                  **({'parent': provenance} if provenance else {}))
    provenance, source_masks = {}, None  # the record is the growth's parent now; new units must train from 0
    if master:
        print(f"grew {describe(small)} -> {describe(model.config)} ({grow_method}, {growth['seconds']:.1f}s): "
              f"max |dlogits| {growth['max_abs_dlogits']:.3e} against the small model ({grow_check_dtype}, "
              f"{growth['check_tokens']} val tokens; tolerance {growth['tolerance']:g}); small model val loss "
              f"{small_val_loss:.4f}")
raw_model = model  # the GPT itself (sharded in place with fsdp): state_dict, pruning, evaluation, saving
model.to(device)
if fsdp:
    # FSDP2: each block is one unit (its weights all-gathered for its forward and backward, its gradients
    # reduce-scattered), the root holds the embeddings, final LayerNorm and head (a tied head stays one parameter).
    # The weights, gradients and AdamW state of a rank are 1/world_size of the model's.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device_type, (world_size,))
    for block in raw_model.transformer.h:
        if compile:
            block.compile()
        fully_shard(block, mesh=mesh)
    fully_shard(raw_model, mesh=mesh)
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
pruner = None
if final_sparsity > 0 or source_masks is not None or (checkpoint or {}).get('pruner') is not None:
    from prune import Pruner
    try:
        pruner = Pruner(raw_model, final_sparsity, prune_start, prune_end, prune_every, prune_schedule=prune_schedule,
                        scope=scope, pattern=pattern, score=score, prune_head=prune_head)
        if source_masks is not None:
            pruner.set_masks(source_masks)
    except ValueError as e:
        fail(e)
iter_num, best_val_loss, best_iter = 0, float('inf'), None
loss_sum = torch.zeros((), device=device)  # sum over this rank's micro-steps of loss / gradient_accumulation_steps
iters_since_log = 0                        # iterations in loss_sum: the train-loss window of the next log line
if checkpoint is not None:
    if fsdp:  # saved whole, keyed by parameter name (every rank read the file: no broadcast needed)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(raw_model, optimizer, checkpoint['optimizer'],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(checkpoint['optimizer'])
    if pruner is not None:
        pruner.load_state_dict(checkpoint['pruner'])
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    best_iter = checkpoint.get('best_iter')
    window = checkpoint.get('log_window') or (0.0, 0)  # the open train-loss window, so logged losses resume exactly
    iters_since_log = window[1]
    if master:
        loss_sum.fill_(window[0])
    ranks = checkpoint.get('rng_ranks') or [checkpoint['rng']]
    same_world = len(ranks) == world_size
    set_rng_state(ranks[rank] if same_world else ranks[0])
    if not same_world:  # another number of ranks: the data replays exactly, dropout cannot
        torch.manual_seed(seed + rank + iter_num * world_size)
    checkpoint = None  # free the loaded weights and optimizer state
else:
    torch.manual_seed(seed + rank)  # after the (identical) init: dropout masks differ across ranks
fwd_model = torch.compile(model) if compile and not fsdp else model  # the forward used for evaluation (no DDP)
model = (DDP(fwd_model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp and not fsdp
         else fwd_model)

tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
flops_per_iter = raw_model.flops_per_token(block_size) * tokens_per_iter
peak = peak_flops(device)


def get_lr(it):
    """Linear warmup for warmup_iters, then cosine from learning_rate to min_lr at lr_decay_iters."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    decay_iters = lr_decay_iters or max_iters
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def stop(msg, status=1):
    """Stop every rank over a failure they all see (a diverged loss, Ctrl-C): rank 0 says it, once."""
    if master:
        fail(msg, status)
    sys.exit(status)


def agree(error):
    """After rank 0 wrote (a log line, a checkpoint): every rank learns whether that failed, and all stop together
    with rank 0's one line, instead of the others waiting on their next collective."""
    if ddp:
        flag = torch.tensor([0 if error is None else 1], device=device)
        dist.broadcast(flag, 0)
        error = error or ('' if flag.item() else None)
    if error is not None:
        stop(error)


def full_state():
    """(model, optimizer) state dicts as ckpt.pt holds them. With fsdp a collective (every rank calls it), the whole
    tensors gathered to rank 0, the optimizer's keyed by parameter name."""
    if not fsdp:
        return raw_model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(raw_model, options=options),
            get_optimizer_state_dict(raw_model, optimizer, options=options))


def save_checkpoint():
    """Temp file + fsync + rename: a crash, a full disk or Ctrl-C mid-save leaves the previous ckpt.pt whole and no
    temp file behind. Every rank's RNG state is kept (gathered at the eval), so dropout resumes exactly. Every rank
    calls it (the states of a sharded model are gathered); rank 0 writes, and says whether that worked."""
    model_sd, optim_sd = full_state()
    masks = pruner.state_dict() if pruner is not None else None
    if not master:
        return agree(None)
    ranks = rng_ranks if ddp else [rng_state()]
    ckpt = dict(model=model_sd, optimizer=optim_sd, model_args=asdict(raw_model.config),
                config=config, iter_num=iter_num, tokens=iter_num * tokens_per_iter, best_val_loss=best_val_loss,
                best_iter=best_iter, rng=ranks[0], rng_ranks=ranks, origin=origin,
                log_window=(loss_sum.item(), iters_since_log), data={k: meta.get(k) for k in DATA_KEYS})
    if masks is not None:
        ckpt['pruner'] = masks
    if growth is not None:
        ckpt['growth'] = growth
    if provenance:
        ckpt['provenance'] = provenance
    tmp, error = ckpt_path + '.tmp', None
    try:
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ckpt_path)
    except OSError as e:
        error = (f"cannot write {ckpt_path} ({e.strerror or e}): it still holds the previous checkpoint; free space "
                 f"or fix the out_dir's permissions, then resume")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    agree(error)


def log_metrics(record):
    """Rank 0 appends a line (and tells wandb); returns the error line if the write failed (see agree)."""
    try:
        with open(os.path.join(out_dir, 'metrics.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\n')
    except OSError as e:
        return (f"cannot append to {out_dir}/metrics.jsonl ({e.strerror or e}): free space or fix the out_dir's "
                f"permissions, then resume from the last checkpoint")
    if wandb_log:
        wandb.log(record, step=record['iter'])
    return None


def evaluate_and_save():
    """Every rank evaluates (a sharded model's forward needs them all; a replicated one gives every rank the same
    loss, so a divergence stops them all); rank 0 logs and writes."""
    global best_val_loss, best_iter
    val_loss, val_bpb = estimate_loss(fwd_model, val_batches())
    if ddp:  # rank 0's number for all: whether to save must be one decision
        v = torch.tensor([val_loss], dtype=torch.float64, device=device)
        dist.broadcast(v, 0)
        val_loss = v.item()
    if not math.isfinite(val_loss):
        stop(f"val loss is {val_loss} at iter {iter_num}: training diverged; {ckpt_path} keeps the last good "
             f"state (try a lower learning_rate or more warmup_iters)")
    # lr: the rate of the last iteration run (None before the first), as on the train-log lines
    record = dict(iter=iter_num, tokens=iter_num * tokens_per_iter, val_loss=val_loss, val_bpb=val_bpb,
                  lr=get_lr(iter_num - 1) if iter_num > 0 else None,
                  **{f'params_{k}': v for k, v in raw_model.param_counts().items()})
    if pruner is not None:
        record.update(pruner.stats())
    if iter_num == max_iters and has_test:
        record['test_loss'], record['test_bpb'] = estimate_loss(fwd_model, test_batches())
    if master:
        print(f"iter {iter_num}: val loss {val_loss:.4f}" + (f" ({val_bpb:.4f} bits/byte)" if val_bpb else ""))
    agree(log_metrics(record) if master else None)
    due = checkpoint_interval is None or iter_num % checkpoint_interval == 0 or iter_num == max_iters
    if iter_num > 0 and due and (val_loss < best_val_loss or always_save_checkpoint):
        if val_loss < best_val_loss:
            best_val_loss, best_iter = val_loss, iter_num
        save_checkpoint()


def release_lock():
    if lock_holder() == (os.getpid(), socket.gethostname()):
        os.remove(lock_path)


# -----------------------------------------------------------------------------
if eval_only:
    val_loss, val_bpb = estimate_loss(fwd_model, val_batches())  # every rank: a sharded model's forward needs them all
    if master:
        print(f"val loss {val_loss:.4f}" + (f" ({val_bpb:.4f} bits/byte)" if val_bpb else ""))
    sys.exit(0)  # an evaluation writes nothing


def start_run():
    """Rank 0 takes out_dir: the lock, the replaced run's files (overwrite), train_config.json. The error line, or
    None: every rank learns it through agree, so a failure here stops them all."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # atomic: one of two racing starts wins
    except FileExistsError:
        if lock_holder():
            return f"out_dir {out_dir} is in use by train.py pid {lock_holder()[0]} ({lock_path}): choose another " \
                   f"out_dir"
        os.remove(lock_path)  # stale: its process is gone
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except OSError as e:
        return f"cannot write to out_dir {out_dir} ({e.strerror or e}): choose a writable out_dir"
    with os.fdopen(fd, 'w') as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    atexit.register(release_lock)
    try:
        if init_from != 'resume' and overwrite:  # replace the previous run (checked at start: only with overwrite)
            for name in RUN_FILES:
                path = os.path.join(out_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        with open(os.path.join(out_dir, 'train_config.json.tmp'), 'w') as f:
            json.dump(dict(config=config, model_args=asdict(raw_model.config), world_size=world_size,
                           tokens_per_iter=tokens_per_iter, flops_per_token=raw_model.flops_per_token(block_size),
                           params=raw_model.param_counts(), dataset=meta.get('source'), growth=growth), f, indent=1)
        os.replace(os.path.join(out_dir, 'train_config.json.tmp'), os.path.join(out_dir, 'train_config.json'))
        if init_from == 'resume':  # drop metrics of iterations after the checkpoint: they are about to be replayed
            path = os.path.join(out_dir, 'metrics.jsonl')
            if os.path.exists(path):
                kept = []
                with open(path) as f:
                    for line in f:
                        try:
                            if json.loads(line)['iter'] <= iter_num:
                                kept.append(line)
                        except (json.JSONDecodeError, KeyError, TypeError):
                            pass  # a line half-written when the run was killed
                with open(path + '.tmp', 'w') as f:
                    f.writelines(kept)
                os.replace(path + '.tmp', path)
    except OSError as e:
        return f"cannot write to out_dir {out_dir} ({e.strerror or e}): free space or choose a writable out_dir"
    print(f"model: {raw_model.param_counts()} | {tokens_per_iter:,} tokens/iter over {world_size} rank(s)"
          + (" (FSDP2)" if fsdp else ""))
    return None


agree(start_run() if master else None)
if master and wandb_log:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

# the loop; iter_num counts finished iterations, so a checkpoint at iter_num resumes with iteration iter_num
if init_from != 'resume':
    evaluate_and_save()
first_iter = iter_num  # its time includes compile and warm-up: the throughput clock starts after it
timed_iters, t0 = 0, None
try:
    while iter_num < max_iters:
        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group['lr'] = lr
        # rank r runs micro-steps r, r+W, r+2W, ... of the global batch; scaling each loss by 1/local_steps and
        # the mean over W ranks (DDP's all-reduce, FSDP's reduce-scatter) together average the gradient over all
        # gradient_accumulation_steps micro-steps
        for j in range(local_steps):
            x, y = get_batch('train', iter_num, rank + j * world_size)
            last = j == local_steps - 1  # gradients are reduced across ranks only after the last micro-step
            if fsdp:
                raw_model.set_requires_gradient_sync(last)
            with model.no_sync() if ddp and not fsdp and not last else nullcontext():
                with autocast:
                    _, loss = model(x, y)
                (loss / local_steps).backward()
            loss_sum += loss.detach() / gradient_accumulation_steps
        if pruner is not None:
            pruner.mask_grads()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if pruner is not None:
            pruner.step(iter_num)
        iter_num += 1
        iters_since_log += 1
        if iter_num == first_iter + 1:
            if device_type == 'cuda':
                torch.cuda.synchronize()
            t0, timed_iters = time.time(), 0
        else:
            timed_iters += 1

        if iter_num % log_interval == 0 or iter_num == max_iters:
            if ddp:
                dist.all_reduce(loss_sum)  # every rank learns the loss, so every rank can stop on NaN
            train_loss = loss_sum.item() / iters_since_log  # mean over the global batches since the last log
            loss_sum.zero_()
            iters_since_log = 0
            if not math.isfinite(train_loss):
                stop(f"train loss is {train_loss} at iter {iter_num}: training diverged; "
                     f"{ckpt_path} keeps the last good state (try a lower learning_rate or more warmup_iters)")
            dt = (time.time() - t0) / timed_iters if timed_iters else None  # None: only the warm-up iteration
            if timed_iters:
                t0, timed_iters = time.time(), 0
            error = None
            if master:
                mfu = flops_per_iter / dt / (peak * world_size) if peak and dt else None
                speed = (f", {dt * 1000:.1f} ms/iter, {tokens_per_iter / dt:,.0f} tok/s" if dt else
                         " (first iteration: compile and warm-up, not timed)")
                print(f"iter {iter_num}: loss {train_loss:.4f}, lr {lr:.3e}" + speed +
                      (f", mfu {mfu * 100:.1f}%" if mfu else ""))
                error = log_metrics(dict(iter=iter_num, tokens=iter_num * tokens_per_iter, train_loss=train_loss,
                                         lr=lr, tok_per_sec=tokens_per_iter / dt if dt else None, mfu=mfu))
            agree(error)
        if iter_num % eval_interval == 0 or iter_num == max_iters:
            if ddp:
                if iters_since_log:  # fold the open train-loss window into rank 0, which checkpoints it
                    dist.all_reduce(loss_sum)
                    if not master:
                        loss_sum.zero_()
                rng_ranks = [None] * world_size
                dist.all_gather_object(rng_ranks, rng_state())
            t_eval = time.time()
            evaluate_and_save()
            if t0 is not None:
                t0 += time.time() - t_eval  # evaluation time is not training throughput
except KeyboardInterrupt:
    stop(f"interrupted at iteration {iter_num}: {ckpt_path} holds the last checkpoint; continue with "
         f"--init_from=resume", INTERRUPTED)

if save_hf:
    # out_dir/model holds the weights after the last iteration; ckpt.pt those of the last save (with
    # always_save_checkpoint=False, the best val loss, at best_iter): the record says which is which.
    # Sharded weights are gathered first (every rank), and rank 0 writes a plain model.
    model_sd = full_state()[0] if fsdp else None
    if master:
        export = raw_model
        if fsdp:
            export = GPT(raw_model.config)
            export.load_state_dict(model_sd)
        record = dict(growth or provenance, trained_from=origin, data_dir=data_dir, iter_num=iter_num, tokenizer=meta,
                      weights='last', best_val_loss=best_val_loss, best_iter=best_iter,
                      **(pruner.stats() if pruner is not None else {}))
        save_pretrained(export, os.path.join(out_dir, 'model'), extra_meta=record, tokenizer=hf_tokenizer,
                        replace=True)
        print(f"wrote {out_dir}/model: the weights after iteration {iter_num}" +
              ("" if always_save_checkpoint else f"; ckpt.pt holds the best val loss, at iteration {best_iter}"))
if ddp:
    dist.barrier()  # rank 0 may still be writing the export
    dist.destroy_process_group()
