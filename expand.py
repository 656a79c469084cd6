"""Grow a trained GPT / Pythia into a wider and/or deeper one that computes exactly the same function (docs/growth.md):
grown, record = grow(model, idx, n_embd=1024, method='isotropic'), refused unless max |dlogits| on idx is within
tolerance. train.py's grow setting calls it; to write a grown model without training it:
  python train.py --init_from=out-pydoc --grow="{'n_embd': 256, 'n_layer': 8, 'method': 'isotropic'}" \
      --max_iters=0 --save_hf=True --out_dir=out-grown --data_dir=data/pydoc   # out-grown/model: the grown model"""
import copy
import math
import time
from collections import namedtuple
from dataclasses import replace

import torch

from configurator import non_negative, one_of, positive
from model import GPT

# grow's keyword settings (train.py's grow dict): the target shape (None: n_embd = n_head * head_size or the source's,
# mlp_width at the source's ratio); method 'top_left' (new heads and units fresh) | 'isotropic' (copies of the old
# ones); new identity blocks spread between the old ones or appended; noise: the copies' cancelling symmetry-breaking
# noise, relative to each weight's std; check_dtype: of the growth and its check; tolerance: None: 1e-9 | 1e-4
RULES = dict(n_embd=positive, n_head=positive, n_layer=positive, mlp_width=positive,
             method=one_of('top_left', 'isotropic'), depth_mode=one_of('interleave', 'append'), noise=non_negative,
             seed=non_negative, check_dtype=one_of('float64', 'float32'), tolerance=non_negative)
# New index j < copies copies old index j % n (round robin), j >= copies is new (a mean coordinate of the residual
# stream, else a fresh head or unit); mult: each old index's copies. _fill: 'fresh' ~ normal(0, std) (drawn contiguous:
# normal_ on a strided view is ~9x slower), 'mean', else 0. _lift_vector: a bias or LayerNorm lifted as one column.
Lift = namedtuple('Lift', 'n copies size')
same = lambda n: Lift(n, n, n)
describe = lambda c: f"{c.n_layer}L {c.n_head}H x {c.head_size} = {c.n_embd}, mlp {c.mlp_width}"  # a shape, for logs
mult = lambda lift: lift.copies // lift.n + (torch.arange(lift.n) < lift.copies % lift.n).long()
_fill = lambda t, how, std, gen, mean: t.copy_(torch.empty(t.shape, dtype=t.dtype).normal_(
    0.0, std, generator=gen) if how == 'fresh' else mean()) if how in ('fresh', 'mean') else t.zero_()
_lift_vector = lambda dst, v, lift, fill: _lift_matrix(dst[:, None], v[:, None], lift, same(1), fill, 'zero', 0.0, None)


def _lift_matrix(dst, w, rows, cols, row_fill, col_fill, std, gen, split=True):
    """dst = w (out x in) lifted: copied round robin; new columns filled (mean: each row's over the old columns); for a
    reader, the copies of input i share its weight, 1/mult[i] each, so their sum is w's (not for an embedding: its
    columns are what it writes); new rows filled (mean: the old rows', what a residual writer writes to a mean one)."""
    for a in range(0, rows.copies, rows.n):
        for b in range(0, cols.copies, cols.n):
            h, c = min(rows.n, rows.copies - a), min(cols.n, cols.copies - b)
            dst[a:a + h, b:b + c].copy_(w[:h, :c])
    _fill(dst[:rows.copies, cols.copies:], col_fill, std, gen,
          lambda: w.mean(1, keepdim=True).repeat(-(-rows.copies // rows.n), 1)[:rows.copies])
    if split and int((m := mult(cols)).max()) > 1:
        dst[:rows.copies, :cols.copies].mul_((1.0 / m.to(dst.dtype)).repeat(-(-cols.copies // cols.n))[:cols.copies])
    _fill(dst[rows.copies:], row_fill, std, gen, lambda: dst[:rows.n].mean(0, keepdim=True))
    return dst


def _cancelling_noise(w, cols, noise, gen, chunk=1 << 22):
    """Noise of std noise * std(w) on the columns of w that copy an old index, summing to zero over each group of
    copies: copies hold equal values, so w @ x' is unchanged, but their gradients now differ. Round robin lays the
    groups out as the columns of a (ceil(copies / n), n) grid; drawn a block of rows at a time (no big temporary)."""
    if noise == 0 or int((m := mult(cols)).max()) < 2:
        return
    n, L, std = cols.n, cols.copies, noise * w.std().item()
    grid, inv_mult = -(-L // n), 1.0 / m.to(w.dtype)  # an index with one copy gets exactly 0
    step = max(1, chunk // (grid * n))
    for r in range(0, w.size(0), step):
        z = torch.randn(min(step, w.size(0) - r), grid, n, generator=gen, dtype=w.dtype).mul_(std)
        z.view(z.size(0), -1)[:, L:] = 0
        z -= z.sum(1, keepdim=True) * inv_mult
        w[r:r + z.size(0), :L] += z.view(z.size(0), -1)[:, :L]


def target_config(c, n_embd=None, n_head=None, n_layer=None, mlp_width=None, method='top_left'):
    """The grown GPTConfig, or a ValueError naming what is wrong with the target for this source."""
    hs, n_embd = c.head_size, n_embd or (n_head * c.head_size if n_head else c.n_embd)
    if n_embd % hs:
        raise ValueError(f"n_embd={n_embd} is not a whole number of heads of size {hs} (the head size stays fixed "
                         f"when growing): use a multiple of {hs}, e.g. {(n_embd // hs + 1) * hs}")
    n_head = n_head or n_embd // hs
    if n_head * hs != n_embd:
        raise ValueError(f"n_head={n_head} heads of size {hs} make a width of {n_head * hs}, not n_embd={n_embd}: "
                         f"set n_head={n_embd // hs} (or leave it out)")
    if mlp_width is None and (c.mlp_width * n_embd) % c.n_embd:
        raise ValueError(f"mlp_width {c.mlp_width} * {n_embd}/{c.n_embd} is not a whole number: set mlp_width")
    mlp_width, n_layer = mlp_width or c.mlp_width * n_embd // c.n_embd, n_layer or c.n_layer
    for key, new in dict(n_embd=n_embd, n_head=n_head, n_layer=n_layer, mlp_width=mlp_width).items():
        if new < getattr(c, key):
            raise ValueError(f"{key}={new} is smaller than the source's {getattr(c, key)}: expansion only grows a "
                             f"model (pruning removes weights)")
    eps = c.layer_norm_eps * ((1 if method == 'top_left' else n_embd // c.n_embd) * c.n_embd / n_embd)  # var(x')/var(x)
    return replace(c, n_embd=n_embd, n_head=n_head, n_layer=n_layer, mlp_width=mlp_width, layer_norm_eps=eps)


def layer_map(n_layer, n_layer2, depth_mode='interleave'):
    """For each new block, the old block it copies, or None for a new identity block."""
    if depth_mode == 'append':
        return list(range(n_layer)) + [None] * (n_layer2 - n_layer)
    extra = n_layer2 - n_layer  # old block i is followed by its share of the new blocks, spread evenly
    return [j for i in range(n_layer) for j in [i] + [None] * ((i + 1) * extra // n_layer - i * extra // n_layer)]


@torch.no_grad()
def expand_model(model, *, n_embd=None, n_head=None, n_layer=None, mlp_width=None, method='top_left',
                 depth_mode='interleave', noise=1e-2, seed=1337):
    """A new GPT of the target shape whose logits are model's (same dtype and device; model untouched)."""
    assert isinstance(model, GPT) and method in ('top_left', 'isotropic') and depth_mode in ('interleave', 'append') \
        and noise >= 0, "expand_model takes a model.GPT and RULES' settings"
    c, p0 = model.config, next(model.parameters())
    c2 = target_config(c, n_embd, n_head, n_layer, mlp_width, method)
    d, d2, hs, copies = c.n_embd, c2.n_embd, c.head_size, method == 'isotropic'
    k = d2 // d if copies else 1  # the residual stream: k copies of each coordinate, then mean coordinates, so
    rho, res = math.sqrt(k * d / d2), Lift(d, k * d, d2)  # LayerNorm sees rho^2 times the variance of x
    head = Lift(c.n_head, c2.n_head if copies else c.n_head, c2.n_head)
    # heads lie one after another (fused QKV rows: [q k v] head by head): round robin over heads is over their rows
    head_dim, qkv = (Lift(head.n * w, head.copies * w, head.size * w) for w in (hs, 3 * hs))
    unit = Lift(c.mlp_width, c2.mlp_width if copies else c.mlp_width, c2.mlp_width)
    std = 0.02 if c2.arch == 'gpt2' else math.sqrt(2 / (5 * d2))  # fresh weights: model.py's init of the grown model
    gen, work = torch.Generator().manual_seed(seed), torch.promote_types(p0.dtype, torch.float32)
    with torch.device('meta'):  # built on the CPU in float32 (float64 for a float64 model), every tensor written below
        new = GPT(c2).to(work).to_empty(device='cpu')
    if c2.tie_embeddings:
        new.lm_head.weight = new.transformer.wte.weight
    for name, buf in model.named_buffers():  # rotary tables (head_size, block_size unchanged), a byte table
        new.get_buffer(name).copy_(buf)
    state, params = model.state_dict(), dict(new.named_parameters())  # a tied head appears once, as wte
    src = lambda name: state[name].detach().to('cpu', work)

    def reader(name, old=None, out=None):
        """Reads LayerNorm(x'): columns split over residual copies, random for mean coordinates (LayerNorm gives 0)."""
        w, old = src((old or name) + 'weight'), old or name
        w = _lift_matrix(params[name + 'weight'], w, out := out or same(w.size(0)), res, 'fresh', 'fresh', std, gen)
        _cancelling_noise(w, res, noise, gen)
        if name + 'bias' in params:
            _lift_vector(params[name + 'bias'], src(old + 'bias'), out, 'zero')

    def writer(name, old, inputs):
        """Adds to the residual stream: rows lifted like its coordinates; columns split over input copies, 0 for new."""
        w = _lift_matrix(params[name + 'weight'], src(old + 'weight'), res, inputs, 'mean', 'zero', std, gen)
        _cancelling_noise(w, inputs, noise, gen)
        _lift_vector(params[name + 'bias'], src(old + 'bias'), res, 'mean')

    def layernorm(prefix, old, scale=1.0):  # rho * gain undoes var' = rho^2 var; mean coordinates normalise to 0
        _lift_vector(params[prefix + 'weight'], src(old + 'weight'), res, 'mean').mul_(rho * scale)
        _lift_vector(params[prefix + 'bias'], src(old + 'bias'), res, 'zero').mul_(scale)

    for name in ('transformer.wte.weight', 'transformer.wpe.weight'):
        if name in state:  # embeddings write the residual stream: their columns are lifted like a writer's rows
            _lift_matrix(params[name], src(name), same(state[name].size(0)), res, None, 'mean', std, gen, split=False)
    if c.byte_pool:  # byte_pool.py's modules keep their width; the encoder's projection writes the residual stream,
        for name in state:  # the decoder's reads ln_f
            if name.startswith(('byte_encoder.', 'byte_decoder.')) and name.split('.')[1] != 'proj':
                params[name].copy_(src(name))
        writer('byte_encoder.proj.', 'byte_encoder.proj.', same(c.byte_embd))
        reader('byte_decoder.proj.')
    layernorm('transformer.ln_f.', 'transformer.ln_f.', 1.0 / k if c.tie_embeddings else 1.0)  # a tied head reads
    if not c.tie_embeddings and not c.byte_pool:  # every copy at full weight: ln_f absorbs the sum's k
        reader('lm_head.')
    for i2, i in enumerate(layer_map(c.n_layer, c2.n_layer, depth_mode)):
        o, n_ = f'transformer.h.{i}.', f'transformer.h.{i2}.'
        if i is None:  # an identity block: both residual writers zero; their inputs are not, so they train
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1 + i2)
                for m in new.transformer.h[i2].modules():
                    m.reset_parameters() if isinstance(m, torch.nn.LayerNorm) else new._init_weights(m)
            for m in (new.transformer.h[i2].attn.c_proj, new.transformer.h[i2].mlp.c_proj):
                m.weight.zero_(), m.bias.zero_()
            continue
        layernorm(n_ + 'ln_1.', o + 'ln_1.'), layernorm(n_ + 'ln_2.', o + 'ln_2.')
        for lift, x, inputs in ((reader, 'attn.c_attn.', qkv), (writer, 'attn.c_proj.', head_dim),
                                (reader, 'mlp.c_fc.', unit), (writer, 'mlp.c_proj.', unit)):
            lift(n_ + x, o + x, inputs)
    return new.train(model.training).to(device=p0.device, dtype=p0.dtype)


@torch.no_grad()
def max_logit_diff(a, b, idx, dtype=torch.float64):
    """max |logits_a - logits_b| on idx, both models in eval mode in dtype (a copy where that differs); byte_pool: the
    decoder's byte logits of every next token of idx (teacher forcing)."""
    def logits(m):
        m = m if next(m.parameters()).dtype == dtype else copy.deepcopy(m).to(dtype)
        training, x = m.training, idx.to(next(m.parameters()).device)
        tgt = m.byte_targets(x[:, 1:]) if m.eval().config.byte_pool else None
        out = m.byte_decoder(m(x[:, :-1])[0].flatten(0, 1), tgt[:, :-1]) if tgt is not None else m(x)[0]
        m.train(training)
        return out
    return (logits(a) - logits(b)).abs().max().item()


def grow(model, idx, *, n_embd=None, n_head=None, n_layer=None, mlp_width=None, method='top_left',
         depth_mode='interleave', noise=1e-2, seed=1337, check_dtype='float64', tolerance=None):
    """expand_model, measured: (the grown model in model's dtype, its record), or a ValueError unless max |dlogits| on
    idx <= tolerance (None: 1e-9 in float64, 1e-4 in float32). It grows in check_dtype (float64 measures the
    construction, not float32 rounding), casting model in place (no second copy of a big model)."""
    settings = {k: v for k, v in locals().items() if k not in ('model', 'idx', 'check_dtype', 'tolerance')}
    assert check_dtype in ('float32', 'float64'), "grow takes RULES' settings"
    tol = tolerance if tolerance is not None else 1e-9 if check_dtype == 'float64' else 1e-4
    dtype, t0 = next(model.parameters()).dtype, time.time()
    grown = expand_model(model := model.to(getattr(torch, check_dtype)), **settings)
    seconds, diff = time.time() - t0, max_logit_diff(model, grown, idx, getattr(torch, check_dtype))
    if not diff <= tol:
        raise ValueError(f"the grown model's logits differ from the source's by {diff:.3e} > tolerance {tol:g} "
                         f"({check_dtype}): the growth is not function-preserving for this model")
    shape = lambda c: {k: getattr(c, k) for k in ('n_layer', 'n_head', 'n_embd', 'mlp_width', 'layer_norm_eps')}
    return grown.to(dtype), dict(
        method=method, depth_mode=depth_mode, noise=noise, seed=seed, source=shape(model.config),
        target=shape(grown.config), layer_map=layer_map(model.config.n_layer, grown.config.n_layer, depth_mode),
        max_abs_dlogits=diff, check_dtype=check_dtype, check_tokens=int(idx.numel()), tolerance=tol, seconds=seconds)

