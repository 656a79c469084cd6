"""
Magnitude pruning of the linear weights (every linear in the blocks + the untied head), one-shot or gradual.
One-shot, writing a Hugging Face model directory whose pruned weights are exact zeros:
  python prune.py --init_from=out/model --out_dir=out-pruned --sparsity=0.5
  python prune.py --init_from=out/ckpt.pt --out_dir=out-24 --pattern=2:4 --score=wanda --data_dir=data/pydoc
Gradual, inside train.py (final_sparsity > 0 there builds a Pruner):
  pruner = Pruner(model, final_sparsity, prune_start, prune_end, prune_every, prune_schedule='geometric')
  ... loss.backward(); pruner.mask_grads(); clip; optimizer.step(); pruner.step(iter_num)
Scores: 'magnitude' |W|; 'wanda' |W| * ||X_j||_2 (Sun et al. 2023, one-shot only, needs data_dir);
'balanced' |W| after row/column balancing: the growth-aware score (see balanced_scores).
Counting is exact: a target sparsity s over N weights prunes exactly floor(s*N + 0.5) of them.
"""
import json
import math
import os
import time

import torch
import torch.nn as nn

from data import open_tokens, read_meta, sample_batch

# -----------------------------------------------------------------------------
# one-shot CLI defaults (read by configure(globals()) in main(); importing prune changes nothing)
init_from = None              # a Hugging Face model directory, a train.py out_dir, or a ckpt.pt path
out_dir = None                # the pruned model directory (new or empty; see overwrite)
overwrite = False             # True: replace out_dir if it is a model directory this codebase wrote
save_dtype = None             # the pruned model's dtype on disk; None: the source's
tokenizer = None              # None: the source's (its record, a tokenizer.json beside it, or its family's)
tokenizer_path = None         # a local tokenizer.json for gpt-neox-20b
sparsity = 0.5                # fraction of the linear weights set to zero; N:M patterns fix it at 1 - N/M
scope = 'global'              # 'global': one threshold over all layers | 'layer': each layer at `sparsity` | 'row'
pattern = 'unstructured'      # 'unstructured' or 'N:M' (keep N of every M consecutive inputs), e.g. '2:4'
score = 'magnitude'           # 'magnitude' | 'wanda' | 'balanced' (growth-aware)
prune_head = True             # also prune the untied output head (a tied head is the embedding: never pruned)
data_dir = None               # a prepared dataset (train.bin, val.bin, meta.json): val loss before/after, calibration
batch_size = 8
block_size = None             # None: min(the model's, 1024)
eval_iters = 20               # val batches, the same ones train.py uses for its val loss at this batch shape
calib_batches = 8             # wanda: train batches whose activations weigh the scores
device = 'cuda' if torch.cuda.is_available() else 'cpu'
seed = 1337
# -----------------------------------------------------------------------------

_SCORES = ('magnitude', 'wanda', 'balanced')
_SCOPES = ('global', 'layer', 'row')
_SCHEDULES = ('cubic', 'geometric')


# ----------------------------------------------------------------------------- what is pruned
def prunable_weights(model, prune_head=True):
    """{name: weight} of the linears sparsity is measured against (GPT.linear_weights; else every nn.Linear)."""
    if hasattr(model, 'linear_weights'):
        weights = model.linear_weights(include_head=prune_head)
    else:
        weights = {(f'{n}.weight' if n else 'weight'): m.weight for n, m in model.named_modules()
                   if isinstance(m, nn.Linear)}
    if not weights:
        raise ValueError(f"{type(model).__name__} has no linear weights to prune (no transformer blocks, and the "
                         f"head is tied to the embedding or excluded by prune_head=False): nothing to sparsify")
    return weights


def parse_pattern(pattern):
    """None for 'unstructured', else (n, m) for 'N:M' with 0 < N < M."""
    if pattern == 'unstructured':
        return None
    try:
        n, m = (int(x) for x in pattern.split(':'))
    except (ValueError, AttributeError):
        n = m = None
    if n is None or not 0 < n < m:
        raise ValueError(f"pattern={pattern!r}: use 'unstructured' or 'N:M' with 0 < N < M, e.g. '2:4'")
    return n, m


def check_sparsity(s, name='sparsity'):
    if not (isinstance(s, (int, float)) and 0.0 <= s < 1.0):
        raise ValueError(f"{name}={s!r} must lie in [0, 1): it is the fraction of linear weights set to zero "
                         f"(1 would remove them all)")


def check_nm(weights, nm):
    n, m = nm
    for name, w in weights.items():
        if w.shape[-1] % m:
            raise ValueError(f"pattern {n}:{m} groups {m} consecutive inputs, but {name} has {w.shape[-1]} inputs, "
                             f"not a multiple of {m}: use another M, scope it out (prune_head=False), or "
                             f"pattern='unstructured'")


def check_settings(sparsity, scope, pattern, score, name='sparsity'):
    """The settings the one-shot script and Pruner share: one clear error each; returns parse_pattern(pattern)."""
    check_sparsity(sparsity, name)
    if scope not in _SCOPES:
        raise ValueError(f"scope={scope!r}: use 'global', 'layer' or 'row'")
    if score not in _SCORES:
        raise ValueError(f"score={score!r}: use 'magnitude', 'wanda' or 'balanced' (growth-aware)")
    nm = parse_pattern(pattern)
    if nm is not None and abs(sparsity - (1 - nm[0] / nm[1])) > 1e-9:
        raise ValueError(f"pattern {pattern} keeps {nm[0]} of every {nm[1]} weights: set {name}={1 - nm[0] / nm[1]}")
    return nm


def n_pruned(s, numel):
    """The exact number of weights a target sparsity s removes from numel: round half up."""
    return int(math.floor(s * numel + 0.5))


# ----------------------------------------------------------------------------- scores (higher = keep)
def magnitude_scores(w):
    return w.detach().float().abs()


def wanda_scores(w, act_norm):
    """Sun et al. 2023: S_ij = |W_ij| * ||X_j||_2, X_j the j-th input feature over all calibration tokens."""
    return w.detach().float().abs() * act_norm.float().to(w.device)[None, :]


def balanced_scores(w, iters=8, eps=1e-30):
    """Growth-aware magnitude: |W_ij| / (r_i c_j), with r (rows) and c (columns) found by Sinkhorn balancing so
    that every row and every column of the result has unit RMS. Expansion writes its fingerprints as row and
    column scales (new neurons' rows start small, their output columns at ~0, /n copies scale whole columns, a
    whole layer may be rescaled); balancing divides out any diag(a) W diag(b), so a global threshold compares the
    shape of the weights within each row/column rather than the scale the expansion gave them."""
    a2 = w.detach().float().square()
    out_f, in_f = a2.shape
    inv_c2 = torch.ones(in_f, device=a2.device)
    for _ in range(iters):
        inv_r2 = 1 / ((a2 @ inv_c2) / in_f).clamp_min(eps)      # 1 / r_i^2 = 1 / mean_j (W_ij / c_j)^2
        inv_c2 = 1 / ((a2.t() @ inv_r2) / out_f).clamp_min(eps)  # 1 / c_j^2 = 1 / mean_i (W_ij / r_i)^2
    return (a2 * inv_r2[:, None] * inv_c2[None, :]).sqrt()


# ----------------------------------------------------------------------------- masks from scores
def lowest_k(scores, k):
    """bool mask of the k smallest entries in each row of a 2-D tensor. Exactly k per row: ties at the k-th value
    go to the lower index, so the result is deterministic and counts are exact. Stays on the scores' device."""
    L = scores.size(1)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= L:
        return torch.ones_like(scores, dtype=torch.bool)
    if scores.size(0) == 1 and scores.is_cuda:  # CUDA kthvalue gives a row one thread block: ~1 s at 1e8 weights
        kth = scores.view(-1).sort().values[k - 1].view(1, 1)
    else:
        kth = scores.kthvalue(k, dim=1, keepdim=True).values
    below = scores < kth
    tie = scores == kth
    need = k - below.sum(1, keepdim=True, dtype=torch.int32)
    return below | (tie & (tie.cumsum(1, dtype=torch.int32) <= need))


def nm_mask(scores, n, m):
    """Keep mask (bool) holding the n largest of every m consecutive scores along the last (input) dimension."""
    if scores.shape[-1] % m:
        raise ValueError(f"N:M with M={m} needs the input dimension to be a multiple of {m}, got shape "
                         f"{tuple(scores.shape)}")
    return ~lowest_k(scores.reshape(-1, m), m - n).view(scores.shape)


def compute_masks(scores, sparsity, scope='global', nm=None, masks=None):
    """Keep masks {name: bool} pruning a fraction `sparsity` of the weights by lowest score.
    scope 'global': floor(s*N+.5) over all N weights together; 'layer': per tensor; 'row': per output row.
    nm=(n, m): each group of m consecutive inputs loses min(m-n, round(s*m)); at s = 1 - n/m exactly n:m.
    masks: the current keep masks; their pruned weights stay pruned (counted in the target, never revived, even
    when the target is below the sparsity they already have)."""
    check_sparsity(sparsity)
    if scope not in _SCOPES:
        raise ValueError(f"scope={scope!r}: use 'global', 'layer' or 'row'")
    if masks is not None:  # -inf sorts first, so already-pruned weights fill the quota before any live one
        scores = {k: s.masked_fill(~masks[k].to(s.device), -math.inf) for k, s in scores.items()}
    if nm is not None:
        n, m = nm
        check_nm(scores, nm)
        k = min(m - n, n_pruned(sparsity, m))
        keep = {name: ~lowest_k(s.reshape(-1, m), k).view(s.shape) for name, s in scores.items()}
    elif scope == 'row':
        keep = {name: ~lowest_k(s, n_pruned(sparsity, s.size(1))) for name, s in scores.items()}
    elif scope == 'layer':
        keep = {name: ~lowest_k(s.reshape(1, -1), n_pruned(sparsity, s.numel())).view(s.shape)
                for name, s in scores.items()}
    else:
        flat = torch.cat([s.reshape(-1) for s in scores.values()])[None]
        kept = ~lowest_k(flat, n_pruned(sparsity, flat.numel()))[0]
        keep = {name: part.view(s.shape) for (name, s), part in
                zip(scores.items(), kept.split([s.numel() for s in scores.values()]))}
    if masks is not None:  # a quota below what is already pruned must not bring weights back
        keep = {name: k & masks[name].to(k.device) for name, k in keep.items()}
    return keep


# ----------------------------------------------------------------------------- schedules
def _last_event(t, prune_start, prune_end, prune_every):
    """(k, n): index of the last pruning event at or before iteration t (-1: none yet), and n, the index of the
    event at prune_end. Events: prune_start + k*prune_every for k < n, and prune_end itself."""
    n = -(-(prune_end - prune_start) // prune_every)
    if t < prune_start:
        return -1, n
    return (n if t >= prune_end else (t - prune_start) // prune_every), n


def is_event(t, prune_start, prune_end, prune_every):
    return prune_start <= t <= prune_end and ((t - prune_start) % prune_every == 0 or t == prune_end)


def cubic_sparsity(t, final_sparsity, prune_start, prune_end, prune_every, initial_sparsity=0.0):
    """Zhu & Gupta (2017) as TensorFlow Model Optimization's PolynomialDecay computes it:
    s = s_f + (s_i - s_f)(1 - (t_k - t_0)/(t_end - t_0))^3 at the last event t_k <= t (t_0 = prune_start,
    t_end = prune_end); 0 before t_0. The event at t_0 takes the model to s_i (a no-op for s_i = 0), the one at
    prune_end to s_f. When prune_end is off the grid of events, the last regular event t_n-1 is still scaled by
    t_end - t_0 (not by n * prune_every), so the final event's step is the remainder."""
    k, n = _last_event(t, prune_start, prune_end, prune_every)
    if k < 0:
        return 0.0
    if k == n:
        return final_sparsity
    if k == 0:
        return initial_sparsity
    tk = prune_start + k * prune_every
    return final_sparsity + (initial_sparsity - final_sparsity) * (1 - (tk - prune_start) /
                                                                   (prune_end - prune_start)) ** 3


def geometric_sparsity(t, final_sparsity, prune_start, prune_end, prune_every):
    """Journey Matters (Jin et al. 2025): every one of the E events, prune_start and prune_end both counted
    (E = n + 1), removes the same fraction p = 1 - (1 - s_f)^(1/E) of the surviving weights:
    after event k (0-based) the density is (1 - s_f)^((k + 1)/E)."""
    k, n = _last_event(t, prune_start, prune_end, prune_every)
    if k < 0:
        return 0.0
    if k == n:
        return final_sparsity
    return 1 - (1 - final_sparsity) ** ((k + 1) / (n + 1))


def target_sparsity(t, final_sparsity, prune_start, prune_end, prune_every, prune_schedule='cubic',
                    initial_sparsity=0.0):
    """The sparsity in force after the pruning event (if any) at iteration t."""
    if prune_schedule == 'cubic':
        return cubic_sparsity(t, final_sparsity, prune_start, prune_end, prune_every, initial_sparsity)
    if prune_schedule == 'geometric':
        return geometric_sparsity(t, final_sparsity, prune_start, prune_end, prune_every)
    raise ValueError(f"prune_schedule={prune_schedule!r}: use 'cubic' or 'geometric'")


def average_density(max_iters, final_sparsity, prune_start, prune_end, prune_every, prune_schedule='geometric',
                    initial_sparsity=0.0):
    """Mean over iterations 0..max_iters-1 of the density each trained with: iteration i uses the masks of the
    events up to i-1 (Pruner.step(t) prunes after iteration t's update). N_avg = this * linear_params."""
    return sum(1 - target_sparsity(i - 1, final_sparsity, prune_start, prune_end, prune_every, prune_schedule,
                                   initial_sparsity) for i in range(max_iters)) / max_iters


# ----------------------------------------------------------------------------- gradual pruning
def _local(t):
    """The part of a tensor this process holds: an FSDP2-sharded DTensor's local shard (a view), else the tensor."""
    return t.to_local() if hasattr(t, 'to_local') else t


def _full(t):
    """The whole tensor (a collective for a sharded DTensor: every rank calls it, in the same order)."""
    return t.full_tensor() if hasattr(t, 'full_tensor') else t


def _shard_like(full, w):
    """This process's part of `full` for a weight w that may be sharded: DTensor's own split, so it lines up."""
    if not hasattr(w, 'device_mesh'):
        return full.to(w.device)
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(full.to(w.device), w.device_mesh, w.placements).to_local()


class Pruner:
    """Gradual magnitude pruning inside a training loop (call order: the README's pruning section).
    Masks only go 1 -> 0. Pruned weights are re-zeroed after every optimizer step (AdamW momentum and weight
    decay would otherwise move them) and their gradients zeroed before clipping. Masks live as tensors in the
    weights' dtype so masking is one torch._foreach_mul_; checkpoints hold them as bool.
    FSDP2-sharded weights (train.py fsdp=True): each rank keeps the masks of its own shards; an event gathers the
    full weights, selects on every rank alike (deterministic), and keeps each rank's part."""

    def __init__(self, model, final_sparsity, prune_start, prune_end, prune_every, prune_schedule='cubic',
                 scope='global', pattern='unstructured', score='magnitude', prune_head=True, initial_sparsity=0.0):
        if score == 'wanda':
            raise ValueError("score='wanda' needs calibration activations, which gradual pruning does not collect: "
                             "use it one-shot (python prune.py --score=wanda --data_dir=...), or score='magnitude' "
                             "or 'balanced' here")
        self.nm = check_settings(final_sparsity, scope, pattern, score, 'final_sparsity')
        if not 0.0 <= initial_sparsity <= final_sparsity:
            raise ValueError(f"initial_sparsity={initial_sparsity} must lie in [0, final_sparsity={final_sparsity}]")
        for key, v in dict(prune_start=prune_start, prune_end=prune_end, prune_every=prune_every).items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{key}={v!r} must be an integer (iterations)")
        if prune_start < 0 or prune_every < 1 or prune_end < prune_start:
            raise ValueError(f"need 0 <= prune_start <= prune_end and prune_every >= 1, got prune_start="
                             f"{prune_start}, prune_end={prune_end}, prune_every={prune_every}")
        if prune_schedule not in _SCHEDULES:
            raise ValueError(f"prune_schedule={prune_schedule!r}: use 'cubic' or 'geometric'")
        if prune_schedule == 'geometric' and initial_sparsity:
            raise ValueError("initial_sparsity is the cubic schedule's s_i; the geometric schedule starts dense")
        weights = prunable_weights(model, prune_head)
        if self.nm is not None:
            check_nm(weights, self.nm)
        self.settings = dict(final_sparsity=final_sparsity, prune_start=prune_start, prune_end=prune_end,
                             prune_every=prune_every, prune_schedule=prune_schedule, scope=scope, pattern=pattern,
                             score=score, prune_head=prune_head, initial_sparsity=initial_sparsity)
        self.names, self.weights = list(weights), list(weights.values())
        self.linear_params = sum(w.numel() for w in self.weights)
        self.masks = None            # keep masks in the weights' dtype, None until the first event
        self.live = self.linear_params
        self.live_sum = 0            # sum over iterations 0..last_iter of the live count each trained with
        self.last_iter = -1

    def target(self, t):
        s = self.settings
        return target_sparsity(t, s['final_sparsity'], s['prune_start'], s['prune_end'], s['prune_every'],
                               s['prune_schedule'], s['initial_sparsity'])

    @torch.no_grad()
    def mask_grads(self):
        if self.masks is None:
            return
        pairs = [(_local(w.grad), m) for w, m in zip(self.weights, self.masks) if w.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    @torch.no_grad()
    def step(self, iter_num):
        """After optimizer.step() of iteration iter_num: prune if iter_num is an event, then re-zero."""
        if iter_num > self.last_iter:  # iterations since the last call trained at the live count in force
            self.live_sum += (iter_num - self.last_iter) * self.live
            self.last_iter = iter_num
        s = self.settings
        event = is_event(iter_num, s['prune_start'], s['prune_end'], s['prune_every'])
        if event:
            self.prune_to(self.target(iter_num))
        if self.masks is not None:
            torch._foreach_mul_([_local(w) for w in self.weights], self.masks)
        return event

    @torch.no_grad()
    def prune_to(self, sparsity):
        """One pruning event: masks at `sparsity` among the surviving weights (on their device, no host copy)."""
        score_fn = balanced_scores if self.settings['score'] == 'balanced' else magnitude_scores
        scores = {n: score_fn(_full(w)) for n, w in zip(self.names, self.weights)}
        prev = None if self.masks is None else self.full_masks()
        keep = compute_masks(scores, sparsity, self.settings['scope'], self.nm, prev)
        self.masks = [_shard_like(keep[n], w).to(_local(w).dtype) for n, w in zip(self.names, self.weights)]
        self.live = int(sum(k.sum() for k in keep.values()))

    def full_masks(self):
        """{name: bool} whole masks (gathered from every rank's shards when the weights are sharded)."""
        out = {}
        for n, w, m in zip(self.names, self.weights, self.masks):
            if hasattr(w, 'device_mesh'):
                from torch.distributed.tensor import DTensor
                m = DTensor.from_local(m, w.device_mesh, w.placements, shape=w.shape, stride=w.stride()).full_tensor()
            out[n] = m.bool()
        return out

    def stats(self):
        t = self.last_iter
        avg = self.live_sum / (t + 1) if t >= 0 else float(self.live)
        return dict(sparsity=1 - self.live / self.linear_params, nonzero_linear=self.live,
                    linear_params=self.linear_params, avg_linear_params=avg,
                    avg_density=avg / self.linear_params, target_sparsity=self.target(t))

    @torch.no_grad()
    def set_masks(self, keep):
        """Start from these keep masks {name: bool}, e.g. a pruned model's non-zeros: its pruned weights stay 0."""
        self.masks = [_shard_like(keep[n], w).to(_local(w).dtype) for n, w in zip(self.names, self.weights)]
        self.live = int(sum(int(keep[n].sum()) for n in self.names))
        torch._foreach_mul_([_local(w) for w in self.weights], self.masks)

    def state_dict(self):
        """Whole bool masks (for sharded weights a collective: every rank calls it)."""
        return dict(settings=dict(self.settings), live=self.live, live_sum=self.live_sum, last_iter=self.last_iter,
                    masks=None if self.masks is None else {n: m.cpu() for n, m in self.full_masks().items()})

    @torch.no_grad()
    def load_state_dict(self, sd):
        masks = sd['masks']
        if masks is not None:
            if set(masks) != set(self.names):
                raise ValueError(f"pruner state masks {sorted(set(masks) ^ set(self.names))[:4]} do not match the "
                                 f"model's prunable weights (was prune_head or the model different?)")
            for n, w in zip(self.names, self.weights):
                if masks[n].shape != w.shape:
                    raise ValueError(f"pruner state mask for {n} has shape {tuple(masks[n].shape)}, weight "
                                     f"{tuple(w.shape)}")
            self.masks = [_shard_like(masks[n], w).to(_local(w).dtype) for n, w in zip(self.names, self.weights)]
            torch._foreach_mul_([_local(w) for w in self.weights], self.masks)
        self.live = int(sum(int(masks[n].sum()) for n in self.names)) if masks is not None else self.linear_params
        self.live_sum, self.last_iter = int(sd['live_sum']), int(sd['last_iter'])


# ----------------------------------------------------------------------------- Wanda calibration
@torch.no_grad()
def activation_norms(model, names, batches):
    """{weight name: ||X_j||_2}: the L2 norm of each input feature of that linear over every calibration token."""
    sums, hooks = {}, []
    for name in names:
        module = model.get_submodule(name.rsplit('.', 1)[0] if '.' in name else '')

        def hook(mod, inputs, name=name):
            x = inputs[0].detach().float()
            sq = x.reshape(-1, x.size(-1)).square().sum(0)
            sums[name] = sums[name] + sq if name in sums else sq
        hooks.append(module.register_forward_pre_hook(hook))
    try:
        byte_pool = getattr(getattr(model, 'config', None), 'byte_pool', False)
        for x in batches:  # a byte-level model's decoder runs on the next tokens' bytes: give it them. Its input
            # goes in as bytes, not ids, so that every position runs the encoder and each token weighs as often as
            # it occurs (from ids, the encoder sees each distinct id once: GPT.encode_bytes)
            model(model.byte_table[x[:, :-1]], x[:, 1:]) if byte_pool else model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: sums[n].sqrt() for n in names}


@torch.no_grad()
def wanda_prune(model, weights, sparsity, nm, batches):
    """Wanda, one block at a time as in its reference code: the activations weighing block i's scores come from
    the model whose earlier blocks are already pruned. Comparison within each output row (per-output sparsity)."""
    groups = {}
    for n in weights:
        groups.setdefault(n.split('.')[2] if n.startswith('transformer.h.') else n, []).append(n)
    for names in groups.values():
        norms = activation_norms(model, names, batches)
        keep = compute_masks({n: wanda_scores(weights[n], norms[n]) for n in names}, sparsity, 'row', nm)
        for n in names:
            weights[n].mul_(keep[n].to(weights[n].dtype))


# ----------------------------------------------------------------------------- 2:4 semi-structured (GPU)
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
        if not isinstance(mod, nn.Linear) or isinstance(mod.weight, SparseSemiStructuredTensor):
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
        mod.weight = nn.Parameter(sparse, requires_grad=False)
        converted.append(f'{name}.weight' if name else 'weight')
    return converted


# ----------------------------------------------------------------------------- one-shot script
def layer_report(weights):
    rows, total, nonzero = [], 0, 0
    for n, w in weights.items():
        nz = int(torch.count_nonzero(w))
        rows.append((n, tuple(w.shape), w.numel(), nz))
        total, nonzero = total + w.numel(), nonzero + nz
    width = max(len(r[0]) for r in rows)
    lines = [f"{'weight':<{width}s} {'shape':>14s} {'params':>12s} {'nonzero':>12s} {'sparsity':>8s}"]
    lines += [f"{n:<{width}s} {str(s):>14s} {p:>12,d} {nz:>12,d} {1 - nz / p:8.4f}" for n, s, p, nz in rows]
    lines.append(f"{'total (linear)':<{width}s} {'':>14s} {total:>12,d} {nonzero:>12,d} {1 - nonzero / total:8.4f}")
    return '\n'.join(lines), total, nonzero


def dataset_batches(data_dir, split, keys, batch_size, block_size, seed_):
    """(meta, [batch (batch_size, block_size + 1)]): the batches train.py draws for the same keys."""
    meta = read_meta(data_dir)
    data = open_tokens(data_dir, split, meta)
    if len(data) <= block_size:
        raise ValueError(f"{data_dir}/{split}.bin has {len(data)} tokens, fewer than block_size+1={block_size + 1}")
    out = [torch.from_numpy(sample_batch(data, seed_, key, batch_size, block_size)) for key in keys]
    return meta, out


@torch.no_grad()
def val_loss(model, batches, dev):
    model.eval()
    losses = [model(b[:, :-1].to(dev), b[:, 1:].to(dev))[1].item() for b in batches]
    return sum(losses) / len(losses)


def main():
    from configurator import (configure, fail, CONFIG_ERROR, positive, non_negative, non_empty, between, one_of,
                              device as device_rule)
    from data.tokenizer import model_tokenizer
    from hf_io import DTYPES, check_replaceable, load_model
    config = configure(globals(), rules=dict(
        init_from=non_empty, out_dir=non_empty, sparsity=between(0, 1, hi_open=True), scope=one_of(*_SCOPES),
        score=one_of(*_SCORES), data_dir=non_empty, batch_size=positive, block_size=positive, eval_iters=positive,
        calib_batches=positive, device=device_rule, seed=non_negative, save_dtype=one_of(*DTYPES),
        tokenizer=one_of('gpt2', 'gpt-neox-20b', 'char')))
    t0 = time.time()
    if init_from is None or out_dir is None:
        fail("pass --init_from=<model dir | out_dir with ckpt.pt | ckpt.pt> and --out_dir=<new directory>",
             CONFIG_ERROR)
    try:
        nm = check_settings(sparsity, scope, pattern, score, '--sparsity')
    except ValueError as e:
        fail(e, CONFIG_ERROR)
    if score == 'wanda' and data_dir is None:
        fail("score='wanda' weighs |W| by input activations: pass --data_dir=<prepared dataset> for calibration",
             CONFIG_ERROR)
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)) and not overwrite:
        fail(f"out_dir {out_dir} exists and is not empty: choose a new directory, or pass --overwrite=True to "
             f"replace a model directory this codebase wrote")
    try:
        check_replaceable(out_dir)
        if data_dir is not None:
            read_meta(data_dir)
        model, source = load_model(init_from, dtype=None)  # as stored: saved back in that dtype
        tok = model_tokenizer(model.config.arch, source, tokenizer, tokenizer_path)  # exported beside the weights
        out_dtype = DTYPES[save_dtype] if save_dtype else next(model.parameters()).dtype
        ckpt = source['checkpoint']
        # a checkpoint of a pruning run: its pruned weights stay pruned whatever the new score says
        prev_masks = ((ckpt or {}).get('pruner') or {}).get('masks')
        # provenance: whatever the source recorded (e.g. its expansion); this pruning is appended below
        provenance = dict(source['record'], tokenizer=tok.meta())
        weights = prunable_weights(model, prune_head)
        if nm is not None:
            check_nm(weights, nm)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    model.to(device)
    T = block_size or min(model.config.block_size, 1024)
    if T > model.config.block_size:
        fail(f"block_size={T} exceeds the model's context of {model.config.block_size}", CONFIG_ERROR)
    val = calib = None
    if data_dir is not None:
        try:
            meta, val = dataset_batches(data_dir, 'val', [(k,) for k in range(eval_iters)], batch_size, T, 0)
            if score == 'wanda':  # train.py's key for iteration 2**31-1, which no run reaches: unseen batches
                _, calib = dataset_batches(data_dir, 'train', [(2**31 - 1, k) for k in range(calib_batches)],
                                           batch_size, T, seed)
                calib = [b[:, :-1].to(device) for b in calib]
        except (ValueError, FileNotFoundError) as e:
            fail(e)
        if meta['vocab_size'] > model.config.vocab_size:
            fail(f"the dataset's tokenizer has {meta['vocab_size']} ids but the model only "
                 f"{model.config.vocab_size}: use a dataset made with the model's tokenizer")
    before = val_loss(model, val, device) if val else None

    with torch.no_grad():
        if prev_masks is not None:
            for n, w in weights.items():
                w.mul_(prev_masks[n].to(w.device, w.dtype))
        if score == 'wanda':
            model.eval()
            wanda_prune(model, weights, sparsity, nm, calib)
            eff_scope = 'row'
        else:
            fn = balanced_scores if score == 'balanced' else magnitude_scores
            masks = None if prev_masks is None else {n: m.to(device) for n, m in prev_masks.items()}
            keep = compute_masks({n: fn(w) for n, w in weights.items()}, sparsity, scope, nm, masks)
            for n, w in weights.items():
                w.mul_(keep[n].to(w.dtype))
            eff_scope = scope
    after = val_loss(model, val, device) if val else None

    report, total, nonzero = layer_report(weights)
    print(report)
    record = dict(method='one-shot', sparsity=sparsity, scope=eff_scope, pattern=pattern, score=score,
                  prune_head=prune_head, linear_params=total, nonzero_linear=nonzero,
                  achieved_sparsity=1 - nonzero / total, source=os.path.abspath(source['path']) if
                  os.path.exists(source['path']) else source['path'],
                  **({'source_iter_num': ckpt['iter_num']} if ckpt else {}))
    if val:
        record.update(data_dir=data_dir, eval_tokens=eval_iters * batch_size * T, val_loss_before=before,
                      val_loss_after=after)
        print(f"val loss {before:.4f} -> {after:.4f}   perplexity {math.exp(before):.2f} -> {math.exp(after):.2f}")
    if score == 'wanda':
        record['calib_tokens'] = calib_batches * batch_size * T
    meta = provenance
    meta['pruning'] = meta.get('pruning', []) + [record]
    model.to(out_dtype).save_pretrained(out_dir, extra_meta=meta, tokenizer=tok, replace=True)  # new/empty/ours
    print(f"wrote {out_dir}: {nonzero:,} of {total:,} linear weights non-zero (sparsity {1 - nonzero / total:.4f}), "
          f"{time.time() - t0:.1f}s; config {json.dumps({k: config[k] for k in ('sparsity', 'scope', 'pattern', 'score')})}")


if __name__ == '__main__':
    main()
