"""Pruning of the linear weights (the blocks' and the untied head's), one-shot into a Hugging Face model directory
(pruned weights exact zeros) or in training (Pruner: train.py's final_sparsity); s of N weights prunes floor(s*N + .5).
  python prune.py --init_from=out/ckpt.pt --out_dir=out-24 --pattern=2:4 --score=sparsegpt --data_dir=data/pydoc
Scores: 'magnitude' |W|; 'balanced' |W| after row/column balancing (growth-aware); calibrated on train batches no
run trains on, one-shot: 'wanda' |W_ij| * ||X_j||_2 (Sun et al. 2023), 'sparsegpt' (Frantar & Alistarh 2023)."""
import configurator  # noqa: F401  (first: from here on Ctrl-C is one line and status 130)
import itertools
import math
import os
import time

import torch

from data import estimate_loss, open_tokens, read_meta, sample_batch

# -----------------------------------------------------------------------------
init_from = None              # a Hugging Face model directory, a train.py out_dir, or a ckpt.pt path
out_dir = None                # the pruned model directory (new or empty; see overwrite)
overwrite = False             # True: replace out_dir if it is a model directory this codebase wrote
save_dtype = None             # the pruned model's dtype on disk; None: the source's
tokenizer = None              # None: the source's (its record, a tokenizer.json beside it, or its family's)
tokenizer_path = None         # a local tokenizer.json for gpt-neox-20b
sparsity = 0.5                # fraction of the linear weights set to zero; N:M patterns fix it at 1 - N/M
scope = 'global'              # 'global': one threshold over all layers | 'layer': each layer at `sparsity` | 'row'
pattern = 'unstructured'      # 'unstructured' or 'N:M' (keep N of every M consecutive inputs), e.g. '2:4'
score = 'magnitude'           # 'magnitude' | 'balanced' (growth-aware) | 'wanda' | 'sparsegpt' (need data_dir)
prune_head = True             # also prune the untied output head (a tied head is the embedding: never pruned)
data_dir = None               # a prepared dataset (train.bin, val.bin, meta.json): val loss before/after, calibration
batch_size = 8
block_size = None             # None: min(the model's, 1024)
eval_iters = 20               # val batches, the same ones train.py uses for its val loss at this batch shape
calib_batches = 8             # wanda, sparsegpt: train batches whose activations weigh the scores
device = 'cuda' if torch.cuda.is_available() else 'cpu'
seed = 1337
# -----------------------------------------------------------------------------
CALIBRATED = ('wanda', 'sparsegpt')  # scores weighed by input activations: one-shot, on calibration batches
SCORES = ('magnitude', 'balanced', *CALIBRATED)
n_pruned = lambda s, numel: int(math.floor(s * numel + 0.5))  # what a sparsity s removes of numel: round half up
is_event = lambda t, prune_start, prune_end, prune_every: prune_start <= t <= prune_end and (
    (t - prune_start) % prune_every == 0 or t == prune_end)  # events: prune_start + k * prune_every, and prune_end


def check_pattern(pattern, sparsity, key='sparsity'):
    """The scripts' one check of `pattern` and of the sparsity an N:M pattern fixes (1 - N/M)."""
    n, _, m = pattern.partition(':')
    if pattern != 'unstructured' and not (n.isdigit() and m.isdigit() and 0 < int(n) < int(m)):
        raise ValueError(f"pattern={pattern!r}: use 'unstructured' or 'N:M' with 0 < N < M, e.g. '2:4'")
    if pattern != 'unstructured' and sparsity is not None and abs(sparsity - (1 - int(n) / int(m))) > 1e-9:
        raise ValueError(f"pattern {pattern} keeps {n} of every {m} weights: set {key}={1 - int(n) / int(m)}")


def balanced_scores(w, iters=8, eps=1e-30):
    """Growth-aware magnitude: |W_ij| / (r_i c_j), r (rows) and c (columns) by Sinkhorn balancing to unit RMS in every
    row and column. Expansion leaves row and column scales (new rows start small, new output columns at ~0, /n copies
    scale whole columns); dividing out any diag(a) W diag(b) lets a global threshold compare the weights' shape."""
    a2 = w.detach().float().square()
    inv_c2 = torch.ones(a2.size(1), device=a2.device)
    for _ in range(iters):
        inv_r2 = 1 / ((a2 @ inv_c2) / a2.size(1)).clamp_min(eps)      # 1 / r_i^2 = 1 / mean_j (W_ij / c_j)^2
        inv_c2 = 1 / ((a2.t() @ inv_r2) / a2.size(0)).clamp_min(eps)  # 1 / c_j^2 = 1 / mean_i (W_ij / r_i)^2
    return (a2 * inv_r2[:, None] * inv_c2[None, :]).sqrt()


def lowest_k(scores, k):
    """bool mask of exactly the k smallest of each row of a 2-D tensor: ties at the k-th go to the lower index."""
    if k <= 0 or k >= scores.size(1):
        return torch.full_like(scores, k > 0, dtype=torch.bool)
    kth = scores.view(-1).sort().values[k - 1].view(1, 1) if scores.size(0) == 1 and scores.is_cuda else \
        scores.kthvalue(k, dim=1, keepdim=True).values  # CUDA kthvalue gives a row one thread block: ~1 s at 1e8
    below, tie = scores < kth, scores == kth  # of the ties, the first k - below in each row
    return below | (tie & (tie.cumsum(1, dtype=torch.int32) <= k - below.sum(1, keepdim=True, dtype=torch.int32)))


# the keep mask (bool) of the n largest of every m consecutive scores along the last (input) dimension
nm_mask = lambda scores, n, m: ~lowest_k(scores.reshape(-1, m), m - n).view(scores.shape)


def compute_masks(scores, sparsity, scope='global', nm=None, masks=None):
    """Keep masks {name: bool} pruning the lowest-scored fraction `sparsity`: scope 'global' over all weights at once,
    'layer' per tensor, 'row' per output row; nm=(n, m) per group of m consecutive inputs (m - n at s = 1 - n/m).
    masks: the current keep masks, whose pruned weights stay pruned (counted in the target, never revived)."""
    if masks is not None:  # -inf sorts first, so already-pruned weights fill the quota before any live one
        scores = {k: s.masked_fill(~masks[k].to(s.device), -math.inf) for k, s in scores.items()}
    if nm is None and scope == 'global':  # one row of every score, split back
        flat = torch.cat([s.reshape(-1) for s in scores.values()])[None]
        kept = (~lowest_k(flat, n_pruned(sparsity, flat.numel()))[0]).split([s.numel() for s in scores.values()])
        keep = {name: part.view(s.shape) for (name, s), part in zip(scores.items(), kept)}
    else:  # the rows of the selection: groups of m inputs, output rows, or the whole tensor as one
        rows = lambda s: s.reshape(-1, nm[1]) if nm else s if scope == 'row' else s.reshape(1, -1)
        keep = {name: ~lowest_k(rows(s), n_pruned(sparsity, rows(s).size(1))).view(s.shape)
                for name, s in scores.items()}
    # a quota below what is already pruned must not bring weights back
    return keep if masks is None else {name: k & masks[name].to(k.device) for name, k in keep.items()}


def _last_event(t, prune_start, prune_end, prune_every):
    """(k, n): the last event at or before t (-1: none) and prune_end's; event k < n is prune_start + k*prune_every."""
    n = -(-(prune_end - prune_start) // prune_every)
    return (-1 if t < prune_start else n if t >= prune_end else (t - prune_start) // prune_every), n


def cubic_sparsity(t, final_sparsity, prune_start, prune_end, prune_every):
    """Zhu & Gupta (2017) as TF Model Optimization's PolynomialDecay: s = s_f + (s_i - s_f)(1 - (t_k - t_0) /
    (t_end - t_0))^3, s_i = 0, at the last event t_k <= t (t_0 = prune_start, t_end = prune_end); 0 before t_0. With
    t_end off the events' grid the last regular one is still scaled by t_end - t_0: the final step is the remainder."""
    k, n = _last_event(t, prune_start, prune_end, prune_every)
    return 0.0 if k < 0 else final_sparsity if k == n else \
        final_sparsity - final_sparsity * (1 - k * prune_every / (prune_end - prune_start)) ** 3


def geometric_sparsity(t, final_sparsity, prune_start, prune_end, prune_every):
    """Journey Matters (Jin et al. 2025): each of the E = n + 1 events (prune_start and prune_end both count) removes
    the same fraction p = 1 - (1 - s_f)^(1/E) of the surviving weights: density (1 - s_f)^((k + 1)/E) after event k."""
    k, n = _last_event(t, prune_start, prune_end, prune_every)
    return 0.0 if k < 0 else final_sparsity if k == n else 1 - (1 - final_sparsity) ** ((k + 1) / (n + 1))


_local = lambda t: t.to_local() if hasattr(t, 'to_local') else t  # an FSDP2 DTensor's shard (a view) here


class Pruner:
    """Pruning events in a training loop (call order: README, pruning). Masks only go 1 -> 0; pruned weights are
    re-zeroed after every optimizer step (AdamW momentum and weight decay would move them), their gradients zeroed
    before clipping. Masks: the weights' dtype (one torch._foreach_mul_), bool in checkpoints; FSDP2: each rank's shard.
    Calibrated scores prune once, on calib() ((B, T) ids on the model's device); their zeros are the masks."""

    def __init__(self, model, final_sparsity, *, prune_start, prune_end, prune_every, prune_schedule='geometric',
                 scope='global', pattern='unstructured', score='magnitude', prune_head=True, calib=None):
        self.settings = {k: v for k, v in locals().items() if k not in ('self', 'model', 'calib')}  # checkpointed
        if score in CALIBRATED and prune_start != prune_end:
            raise ValueError(f"score={score!r} prunes once, from calibration activations: set prune_start = "
                             f"prune_end (the iteration of its one event), or use 'magnitude' or 'balanced'")
        assert (score in CALIBRATED) == (calib is not None) and 0 <= prune_start <= prune_end and prune_every > 0
        weights = model.linear_weights(include_head=prune_head)
        assert score not in CALIBRATED or not any(hasattr(w, 'device_mesh') for w in weights.values()), 'no FSDP'
        self.nm = None if pattern == 'unstructured' else tuple(int(x) for x in pattern.split(':'))
        for name, w in ((n, w) for n, w in weights.items() if self.nm and w.shape[-1] % self.nm[1]):  # the model
            raise ValueError(f"pattern {pattern} groups {self.nm[1]} consecutive inputs, but {name} has "
                             f"{w.shape[-1]} inputs: use another M, prune_head=False, or pattern='unstructured'")
        self.model, self.calib, self.names, self.weights = model, calib, list(weights), list(weights.values())
        self.card = (final_sparsity, prune_start, prune_end, prune_every)  # the schedule's arguments after t
        self.linear_params = sum(w.numel() for w in self.weights)
        # masks: None until the first event; live_sum: over iterations 0..last_iter, the live count each trained with
        self.masks, self.live, self.live_sum, self.last_iter = None, self.linear_params, 0, -1

    def target(self, t):
        return (cubic_sparsity if self.settings['prune_schedule'] == 'cubic' else geometric_sparsity)(t, *self.card)

    @torch.no_grad()
    def mask_grads(self):
        pairs = [(_local(w.grad), m) for w, m in zip(self.weights, self.masks or []) if w.grad is not None]
        torch._foreach_mul_(*map(list, zip(*pairs))) if pairs else None

    @torch.no_grad()
    def step(self, iter_num):
        """After optimizer.step() of iteration iter_num: prune if iter_num is an event, then re-zero."""
        self.live_sum += max(0, iter_num - self.last_iter) * self.live  # since the last call: at the count in force
        self.last_iter = max(self.last_iter, iter_num)
        if event := is_event(iter_num, *self.card[1:]):
            self.prune_to(self.target(iter_num))
        if self.masks is not None:
            torch._foreach_mul_([_local(w) for w in self.weights], self.masks)
        return event

    @torch.no_grad()
    def prune_to(self, sparsity):
        """One pruning event: masks at `sparsity` among the surviving weights (on their device, no host copy)."""
        score, weights, training = self.settings['score'], dict(zip(self.names, self.weights)), self.model.training
        if score in CALIBRATED:  # the weights pruned before are 0 (re-zeroed every step): its zeros keep them
            prune = wanda_prune if score == 'wanda' else sparsegpt_prune
            prune(self.model.eval(), weights, self.calib(), sparsity, self.nm)
            self.model.train(training)
            return self.set_masks({n: w != 0 for n, w in weights.items()})
        fn = balanced_scores if score == 'balanced' else lambda w: w.detach().float().abs()
        # sharded: every rank gathers the whole weights and selects alike (deterministic), then keeps its own part
        scores = {n: fn(w.full_tensor() if hasattr(w, 'full_tensor') else w) for n, w in weights.items()}
        self.set_masks(compute_masks(scores, sparsity, self.settings['scope'], self.nm,
                                     None if self.masks is None else self.full_masks()))

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
        n, avg = self.linear_params, self.live_sum / (self.last_iter + 1) if self.last_iter >= 0 else float(self.live)
        return dict(sparsity=1 - self.live / n, nonzero_linear=self.live, linear_params=n, avg_linear_params=avg,
                    avg_density=avg / n, target_sparsity=self.target(self.last_iter))

    @torch.no_grad()
    def set_masks(self, keep):
        """Start from these keep masks {name: bool}, e.g. a pruned model's non-zeros: its pruned weights stay 0."""
        self.masks = []
        for n, w in zip(self.names, self.weights):
            m = keep[n].to(w.device)
            if hasattr(w, 'device_mesh'):  # this rank's part, split as the weight is, so that the two line up
                from torch.distributed.tensor import distribute_tensor
                m = distribute_tensor(m, w.device_mesh, w.placements).to_local()
            self.masks.append(m.to(_local(w).dtype))
        self.live = int(sum(keep[n].sum() for n in self.names))
        torch._foreach_mul_([_local(w) for w in self.weights], self.masks)

    def state_dict(self):
        """Whole bool masks (for sharded weights a collective: every rank calls it)."""
        return dict(settings=dict(self.settings), live=self.live, live_sum=self.live_sum, last_iter=self.last_iter,
                    masks=None if self.masks is None else {n: m.cpu() for n, m in self.full_masks().items()})

    def load_state_dict(self, sd):
        if sd['masks'] is not None:  # only the checkpoint and the model can tell whether they match
            if {n: m.shape for n, m in sd['masks'].items()} != {n: w.shape for n, w in zip(self.names, self.weights)}:
                raise ValueError("the pruner state's masks do not match the model's prunable weights (prune_head?)")
            self.set_masks(sd['masks'])
        self.live_sum, self.last_iter = int(sd['live_sum']), int(sd['last_iter'])


@torch.no_grad()
def calibrate(model, weights, batches, stat):
    """Per block (a weight outside them alone): its names, {name: sum over the batches of stat(X)}, X (tokens, inputs)
    what it reads; the caller prunes each block before the next runs (it sees them pruned, as both papers do)."""
    for _, names in itertools.groupby(weights, lambda n: n.split('.')[2] if n.startswith('transformer.h.') else n):
        names, sums, hooks = list(names), {}, []
        for name in names:
            def hook(mod, inputs, name=name):
                sums[name] = sums.get(name, 0) + stat(inputs[0].detach().reshape(-1, inputs[0].size(-1)))
            hooks.append(model.get_submodule(name.rpartition('.')[0]).register_forward_pre_hook(hook))
        try:  # a byte-level model reads bytes and its decoder the next tokens' bytes: as bytes, every position runs
            for x in batches:  # the encoder, so each token weighs as often as it occurs (ByteEncoder.ids)
                model(model.byte_table[x[:, :-1]], x[:, 1:]) if model.config.byte_pool else model(x)
        finally:
            for h in hooks:
                h.remove()
        yield names, sums


@torch.no_grad()
def wanda_prune(model, weights, batches, sparsity, nm=None):
    """Wanda (Sun et al. 2023), block by block: S_ij = |W_ij| * ||X_j||_2, X_j the j-th input over every calibration
    token, compared within each output row (per-output sparsity)."""
    for names, sq in calibrate(model, weights, batches, lambda x: x.float().square().sum(0)):
        for n, w in ((n, weights[n]) for n in names):
            w.mul_(compute_masks({n: w.float().abs() * sq[n].sqrt()}, sparsity, 'row', nm)[n].to(w.dtype))


@torch.no_grad()
def sparsegpt_prune(model, weights, batches, sparsity, nm=None, blocksize=128, percdamp=0.01):
    """SparseGPT (Frantar & Alistarh 2023), block by block: each linear gets H = 2 X^T X over its calibration
    inputs (float64: train.py's TF32 matmuls would blur it), then sparsegpt_layer."""
    for names, H in calibrate(model, weights, batches, lambda x: 2 * x.double().t() @ x.double()):
        for n in names:
            weights[n].copy_(sparsegpt_layer(weights[n], H[n], sparsity, nm, blocksize, percdamp))


def sparsegpt_layer(W, H, sparsity, nm=None, blocksize=128, percdamp=0.01):
    """SparseGPT's Algorithm 1 on W (out, in), in float64. Columns are pruned left to right; pruning w_j (OBS) moves
    the later ones by -(w_j / [H_F^-1]_jj) [H_F^-1]_j,: (F: the columns not yet done), read off an upper Cholesky factor
    U of H^-1: U_j,j: = [H_F^-1]_j,: / sqrt([H_F^-1]_jj); a block's updates reach the later columns at once (lazy batch
    updates). Masks by OBS saliency (w_j / U_jj)^2: the lowest `sparsity` of a block when it starts; N:M, the m-n lowest
    of each row's m columns. Dampening percdamp * mean(diag H) keeps H invertible; dead inputs: H_jj = 1, weights 0."""
    W, H = W.detach().double().clone(), H.double().clone()
    pre, dead = W == 0, H.diagonal() == 0  # pre: weights already 0 stay 0 (a pruned checkpoint's masks hold)
    H[dead, dead], W[:, dead] = 1, 0
    H.diagonal().add_(percdamp * H.diagonal().mean())
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i in range(0, W.size(1), blocksize):
        W1, U1, pre1 = W[:, i:i + blocksize], U[i:i + blocksize, i:i + blocksize], pre[:, i:i + blocksize]
        saliency = lambda a, b: (W1[:, a:b] / U1.diagonal()[a:b]).square().masked_fill(pre1[:, a:b], -math.inf)
        prune = pre1.clone() if nm else pre1 | lowest_k(saliency(0, None).reshape(1, -1),
                                                        n_pruned(sparsity, W1.numel())).view(W1.shape)
        err = torch.zeros_like(W1)
        for j in range(W1.size(1)):
            if nm and j % nm[1] == 0:
                prune[:, j:j + nm[1]] |= lowest_k(saliency(j, j + nm[1]), nm[1] - nm[0])
            err[:, j] = W1[:, j] * prune[:, j] / U1[j, j]
            W1[:, j:] -= err[:, j, None] * U1[j, j:]
            W1[:, j].masked_fill_(prune[:, j], 0)  # exactly 0, not w - (w / d) d
        W[:, i + blocksize:] -= err @ U[i:i + blocksize, i + blocksize:]
    return W


if __name__ == '__main__':
    from configurator import (configure, fail, CONFIG_ERROR, positive, non_negative, non_empty, between, one_of,
                              device as device_rule)
    from data.tokenizer import TOKENIZERS, check_tokenizers, model_tokenizer
    from files import check_dest
    from hf_io import check_replaceable, load_model, save_pretrained
    from model import DTYPES
    configure(globals(), rules=dict(init_from=non_empty, out_dir=non_empty, data_dir=non_empty,
        sparsity=between(0, 1, hi_open=True), score=one_of(*SCORES), scope=one_of('global', 'layer', 'row'),
        save_dtype=one_of(*DTYPES), tokenizer=one_of(*TOKENIZERS), device=device_rule, seed=non_negative,
        batch_size=positive, block_size=positive, eval_iters=positive, calib_batches=positive))
    t0, calibrated = time.time(), score in CALIBRATED
    try:
        if init_from is None or out_dir is None:
            raise ValueError("pass --init_from=<model dir | out_dir with ckpt.pt | ckpt.pt> and --out_dir=<new dir>")
        if calibrated and data_dir is None:
            raise ValueError(f"score={score!r} weighs |W| by input activations: pass --data_dir=<prepared dataset>")
        check_pattern(pattern, sparsity, '--sparsity')
    except ValueError as e:
        fail(e, CONFIG_ERROR)
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)) and not overwrite:
        fail(f"out_dir {out_dir} is not empty: choose a new one, or pass --overwrite=True to replace a model made here")
    try:
        check_replaceable(out_dir)
        if why := check_dest(out_dir):
            raise ValueError(why)
        model, source = load_model(init_from, dtype=None)  # as stored: saved back in that dtype
        tok = model_tokenizer(model.config.arch, source, tokenizer, tokenizer_path)  # exported beside the weights
        check_tokenizers(model, tok, 'the model', f'the {tok.name} tokenizer')
        out_dtype, ckpt = DTYPES[save_dtype] if save_dtype else next(model.parameters()).dtype, source['checkpoint']
        pruner = Pruner(model.to(device).eval(), sparsity, prune_start=0, prune_end=0, prune_every=1, pattern=pattern,
                        score=score, scope=scope, prune_head=prune_head, calib=(lambda: calib) if calibrated else None)
        T, meta = block_size or min(model.config.block_size, 1024), read_meta(data_dir) if data_dir else None
        if meta:  # calibration and val batches must spell the model's ids
            check_tokenizers(tok.meta(), meta, f"the model's tokenizer ({init_from})", f'the dataset {data_dir}')
        def batches(split, seed_, keys):  # the batches train.py draws for these keys
            data = open_tokens(data_dir, split, meta)
            if len(data) <= T:
                raise ValueError(f"{data_dir}/{split}.bin has {len(data)} tokens, fewer than block_size+1={T + 1}")
            return [torch.from_numpy(sample_batch(data, seed_, k, batch_size, T)).to(device) for k in keys]
        val = batches('val', 0, [(k,) for k in range(eval_iters)]) if meta else None
        if calibrated:  # train.py's batches of iteration 2**31-1, which no run reaches: never trained on
            calib = [b[:, :-1] for b in batches('train', seed, [(2**31 - 1, k) for k in range(calib_batches)])]
    except (ValueError, OSError) as e:
        fail(e)
    if T > model.config.block_size:
        fail(f"block_size={T} exceeds the model's context of {model.config.block_size}", CONFIG_ERROR)
    val_loss = lambda: estimate_loss(model, [(b[:, :-1], b[:, 1:]) for b in val])[0] if val else None
    before = val_loss()
    if ((ckpt or {}).get('pruner') or {}).get('masks') is not None:  # a pruning run's checkpoint: its pruned
        pruner.set_masks(ckpt['pruner']['masks'])                    # weights stay pruned whatever the score
    pruner.step(0)
    after, weights = val_loss(), dict(zip(pruner.names, pruner.weights))
    rows = [(n, str(tuple(w.shape)), w.numel(), int(torch.count_nonzero(w))) for n, w in weights.items()]
    total, nonzero = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"{'weight':<40s} {'shape':>14s} {'params':>12s} {'nonzero':>12s} {'sparsity':>8s}")
    for n, s, p, nz in [*rows, ('total (linear)', '', total, nonzero)]:
        print(f"{n:<40s} {s:>14s} {p:>12,d} {nz:>12,d} {1 - nz / p:8.4f}")
    record = dict(method='one-shot', sparsity=sparsity, scope=dict(wanda='row', sparsegpt='layer').get(score, scope),
                  pattern=pattern, score=score, prune_head=prune_head, linear_params=total, nonzero_linear=nonzero,
                  achieved_sparsity=1 - nonzero / total, source=os.path.abspath(source['path']),
                  **({'source_iter_num': ckpt['iter_num']} if ckpt else {}),
                  **(dict(calib_tokens=calib_batches * batch_size * T) if calibrated else {}),
                  **(dict(data_dir=data_dir, eval_tokens=eval_iters * batch_size * T, val_loss_before=before,
                          val_loss_after=after) if val else {}))
    if val:
        print(f"val loss {before:.4f} -> {after:.4f}   perplexity {math.exp(before):.2f} -> {math.exp(after):.2f}")
    try:  # provenance: the source's record (e.g. its expansion), this pruning appended; new, empty or ours
        save_pretrained(model.to(out_dtype), out_dir, tokenizer=tok, replace=True, extra_meta=dict(
            source['record'], tokenizer=tok.meta(), pruning=source['record'].get('pruning', []) + [record]))
    except (ValueError, OSError) as e:
        fail(e)
    print(f"wrote {out_dir}: {nonzero:,} of {total:,} linear weights non-zero (sparsity {1 - nonzero / total:.4f}; "
          f"{pattern}, {score}), {time.time() - t0:.1f}s")
