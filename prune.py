"""Pruning of the linear weights (the blocks' and the untied head's): the library train.py prunes with (final_sparsity),
gradually, or one-shot (one event at iteration 0, no training) into a model directory whose pruned weights are zeros:
  python train.py --init_from=out-pydoc --out_dir=out-24 --final_sparsity=0.5 --pattern=2:4 --score=sparsegpt \
      --prune_start=0 --prune_end=0 --max_iters=0 --save_hf=True --data_dir=data/pydoc
s of N weights prunes floor(s*N + .5). Scores: 'magnitude' |W|; 'balanced' |W| after row/column balancing (growth-
aware); calibrated on train batches no run trains on, one-shot: 'wanda' |W_ij| * ||X_j||_2 (Sun et al. 2023),
'sparsegpt' (Frantar & Alistarh 2023)."""
import itertools
import math

import torch

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

