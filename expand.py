"""
Grow a trained GPT / Pythia into a wider and/or deeper one that computes exactly the same function.
  python expand.py config/expand_70m_2x.py                                  # settings from a config file
  python expand.py --init_from=out/ckpt.pt --out_dir=out-grown --n_embd=768 --n_layer=12 --method=isotropic
init_from: a Hugging Face model directory, a hub id, or a train.py checkpoint (out_dir/ckpt.pt or its out_dir).
The result is a Hugging Face directory (GPT.from_pretrained, train.py's init_from, transformers). Before
writing, the script measures max |logits(grown) - logits(source)| on a random batch and refuses above tolerance.

Width grows by whole heads of the same head_size (rotary frequencies and the 1/sqrt(head_size) score scale
depend on it). Everything old keeps its index, everything new is appended:
  residual stream   x' = [x (k copies) ; mu(x) (d' - k*d coordinates)],   mu(x) = mean of x's d coordinates
                    top_left: k = 1;  isotropic: k = d' // d
  heads             appended as whole [q k v] row blocks of the head-by-head fused QKV weight, so old heads
                    keep their rows; top_left: fresh random heads; isotropic: copies of old heads, round robin
  MLP units         appended; top_left: fresh random units; isotropic: copies, round robin
  layers            new blocks are exact identities (both output projections zero), interleaved (default)
                    or appended
LayerNorm statistics of x' are those of x up to a constant factor rho^2 = k*d/d' on the variance, which a
standard LayerNorm absorbs exactly: eps' = rho^2*eps and gains' = rho*gains. The README has the algebra.
"""
import copy
import math
import os
import time
from collections import namedtuple
from dataclasses import replace

# huge pages for large CPU tensors (torch reads this at its first allocation, so only when expand.py is the
# script): first-touch page faults dominate writing a multi-GB grown model on a VM (README: 1.4b timing)
os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from hf_io import check_replaceable, load_model  # noqa: E402
from model import DTYPES, GPT  # noqa: E402
from data.tokenizer import model_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
init_from = None              # HF model dir | hub id | train.py checkpoint (ckpt.pt, or the out_dir holding one)
out_dir = None                # where the grown model's HF directory is written
overwrite = False             # True: replace out_dir if it is a model directory this codebase wrote
method = 'top_left'           # 'top_left' | 'isotropic'
depth_mode = 'interleave'     # 'interleave': new identity blocks spread between old ones | 'append': at the end
n_embd = None                 # target width; None: from n_head * head_size, or the source's
n_head = None                 # target heads; None: n_embd // head_size
n_layer = None                # target depth; None: the source's
mlp_width = None              # target MLP width; None: the source's mlp_width/n_embd ratio at the new width
noise = 1e-2                  # std of the symmetry-breaking noise on copies' fan-out, relative to the weight's
seed = 1337
check_dtype = 'float64'       # dtype of the exactness check ('float32' halves memory for big models)
tolerance = None              # max |dlogits| allowed; None: 1e-9 (float64) or 1e-4 (float32)
check_batch = 4
check_len = 64
save_dtype = None             # the grown model's dtype on disk; None: the source's
tokenizer = None              # None: the source's (its record, a tokenizer.json beside it, or its family's)
tokenizer_path = None         # a local tokenizer.json for gpt-neox-20b
# -----------------------------------------------------------------------------


# ------------------------------------------------------------------ lifts: where each new index comes from
# Every growth keeps old indices in place and appends: new index j < copies is a copy of old index j % n
# (round robin; j < n is the old index itself), j >= copies is new (a mean coordinate in the residual stream,
# a fresh head or unit elsewhere). top_left has copies = n; isotropic copies everything it can.
Lift = namedtuple('Lift', 'n copies size')


def _mult(lift):
    """How many copies each old index has (>= 1)."""
    return lift.copies // lift.n + (torch.arange(lift.n) < lift.copies % lift.n).long()


def _per_dim(lift, width):
    """A lift of heads (units of `width` consecutive rows/columns) as a lift of those rows/columns. Round robin
    over whole heads is round robin over their rows, because heads are laid out one after another."""
    return Lift(lift.n * width, lift.copies * width, lift.size * width)


def _tile(dst, w, rows, cols):
    """dst[:rows.copies, :cols.copies] = w copied round robin along both dims (block copies straight into dst:
    no gather, no temporaries)."""
    for a in range(0, rows.copies, rows.n):
        h = min(rows.n, rows.copies - a)
        for b in range(0, cols.copies, cols.n):
            c = min(cols.n, cols.copies - b)
            dst[a:a + h, b:b + c].copy_(w[:h, :c])


def _split(dst, lift):
    """Readers of a lifted space: the copies of old index i share its weight, 1/mult[i] each, so their sum is it."""
    mult = _mult(lift)
    if int(mult.max()) > 1:
        scale = (1.0 / mult.to(dst.dtype)).repeat(-(-lift.copies // lift.n))[:lift.copies]
        dst[:, :lift.copies].mul_(scale)


def _normal_(t, std, gen):
    """t ~ normal(0, std) in place; drawn into a contiguous buffer first (normal_ on a strided view is ~9x slower)."""
    if t.is_contiguous():
        return t.normal_(0.0, std, generator=gen)
    return t.copy_(torch.empty(t.shape, dtype=t.dtype).normal_(0.0, std, generator=gen))


def _lift_matrix(dst, w, rows, cols, row_fill, col_fill, std, gen, split=True):
    """Write the lifted w (out x in) into dst. Columns past cols.copies: 'zero', 'fresh' (normal(0, std)) or
    'mean' (each row's mean over the old columns); the copies' columns then split 1/mult (a reader's inputs; not
    for an embedding, whose columns are residual coordinates it writes); rows past rows.copies:
    'zero', 'fresh', or 'mean' (the mean of the old rows: what a residual writer writes into a mean coordinate)."""
    _tile(dst, w, rows, cols)
    top, new_cols = dst[:rows.copies], dst[:rows.copies, cols.copies:]
    if col_fill == 'fresh':
        _normal_(new_cols, std, gen)
    elif col_fill == 'mean':
        new_cols.copy_(w.mean(1, keepdim=True).repeat(-(-rows.copies // rows.n), 1)[:rows.copies])
    else:
        new_cols.zero_()
    if split:
        _split(top, cols)
    new_rows = dst[rows.copies:]
    if row_fill == 'fresh':
        _normal_(new_rows, std, gen)
    elif row_fill == 'mean':
        new_rows.copy_(dst[:rows.n].mean(0, keepdim=True))
    else:
        new_rows.zero_()
    return dst


def _lift_vector(dst, v, lift, fill):
    """1-D version (biases, LayerNorm): copies round robin, new entries 'zero' or 'mean'."""
    _lift_matrix(dst[:, None], v[:, None], lift, Lift(1, 1, 1), fill, 'zero', 0.0, None)
    return dst


def _cancelling_noise(w, cols, noise, gen, chunk=1 << 22):
    """Noise on the columns of w that copy an old index, zero-sum over each group of copies: copies hold equal
    values, so w @ x' is unchanged, but the copies' gradients now differ. Its std is noise * std(w). Copies are
    laid out round robin: the groups are the columns of an (ceil(copies/n), n) grid. Drawn a block of rows at a
    time so that no weight-sized temporary is allocated."""
    mult = _mult(cols)
    if noise == 0 or int(mult.max()) < 2:
        return w
    n, L = cols.n, cols.copies
    std = noise * w.std().item()
    grid = -(-L // n)
    inv_mult = 1.0 / mult.to(w.dtype)  # an index with one copy gets exactly 0
    step = max(1, chunk // (grid * n))
    for r in range(0, w.size(0), step):
        z = torch.randn(min(step, w.size(0) - r), grid * n, generator=gen, dtype=w.dtype).mul_(std)
        z[:, L:] = 0
        z = z.view(z.size(0), grid, n)
        z -= z.sum(1, keepdim=True) * inv_mult
        w[r:r + z.size(0), :L] += z.view(z.size(0), -1)[:, :L]
    return w


# ------------------------------------------------------------------ target shape
def target_config(c, n_embd=None, n_head=None, n_layer=None, mlp_width=None, method='top_left',
                  depth_mode='interleave'):
    """The grown GPTConfig, or ValueError naming what is wrong with the target."""
    if method not in ('top_left', 'isotropic'):
        raise ValueError(f"method={method!r}: use 'top_left' or 'isotropic'")
    if depth_mode not in ('interleave', 'append'):
        raise ValueError(f"depth_mode={depth_mode!r}: use 'interleave' or 'append'")
    hs = c.head_size
    if n_embd is None:
        n_embd = c.n_embd if n_head is None else n_head * hs
    if n_embd % hs:
        raise ValueError(f"n_embd={n_embd} is not a whole number of heads of size {hs} (the head size stays "
                         f"fixed when growing): use a multiple of {hs}, e.g. {(n_embd // hs + 1) * hs}")
    if n_head is None:
        n_head = n_embd // hs
    if n_head * hs != n_embd:
        raise ValueError(f"n_head={n_head} heads of size {hs} make a width of {n_head * hs}, not n_embd={n_embd}: "
                         f"set n_head={n_embd // hs} (or leave it out)")
    if mlp_width is None:
        if (c.mlp_width * n_embd) % c.n_embd:
            raise ValueError(f"mlp_width {c.mlp_width} * {n_embd}/{c.n_embd} is not a whole number: set mlp_width")
        mlp_width = c.mlp_width * n_embd // c.n_embd
    n_layer = c.n_layer if n_layer is None else n_layer
    for key, old, new in (('n_embd', c.n_embd, n_embd), ('n_head', c.n_head, n_head),
                          ('n_layer', c.n_layer, n_layer), ('mlp_width', c.mlp_width, mlp_width)):
        if new < old:
            raise ValueError(f"{key}={new} is smaller than the source's {old}: expansion only grows a model "
                             f"(prune.py removes weights)")
    k = 1 if method == 'top_left' else n_embd // c.n_embd
    rho2 = k * c.n_embd / n_embd  # var(x') / var(x), absorbed into eps
    return replace(c, n_embd=n_embd, n_head=n_head, n_layer=n_layer, mlp_width=mlp_width, head_size=hs,
                   layer_norm_eps=c.layer_norm_eps * rho2)


def layer_map(n_layer, n_layer2, depth_mode='interleave'):
    """For each new block, the old block it copies, or None for a new identity block."""
    if depth_mode == 'append':
        return list(range(n_layer)) + [None] * (n_layer2 - n_layer)
    out, extra = [], n_layer2 - n_layer
    for i in range(n_layer):  # old block i is followed by its share of the new blocks, spread evenly
        out += [i] + [None] * ((i + 1) * extra // n_layer - i * extra // n_layer)
    return out


# ------------------------------------------------------------------ expansion
@torch.no_grad()
def expand_model(model, n_embd=None, n_head=None, n_layer=None, mlp_width=None, method='top_left',
                 depth_mode='interleave', noise=1e-2, seed=0):
    """A new GPT of the target shape whose logits equal `model`'s (same dtype and device; `model` untouched)."""
    if not isinstance(model, GPT):
        raise ValueError(f"expand_model takes a model.GPT, not {type(model).__name__}: load it with "
                         f"GPT.from_pretrained (gpt_neox / gpt2 models)")
    if noise < 0:
        raise ValueError(f"noise={noise} must be >= 0")
    c = model.config
    c2 = target_config(c, n_embd, n_head, n_layer, mlp_width, method, depth_mode)
    p0 = next(model.parameters())
    device, dtype = p0.device, p0.dtype
    work = torch.promote_types(dtype, torch.float32)
    d, d2, hs = c.n_embd, c2.n_embd, c.head_size
    k = 1 if method == 'top_left' else d2 // d
    rho = math.sqrt(k * d / d2)
    copies = method == 'isotropic'
    res = Lift(d, k * d, d2)
    head = Lift(c.n_head, c2.n_head if copies else c.n_head, c2.n_head)
    head_dim, qkv = _per_dim(head, hs), _per_dim(head, 3 * hs)  # fused QKV rows: [q k v] head by head
    unit = Lift(c.mlp_width, c2.mlp_width if copies else c.mlp_width, c2.mlp_width)
    lmap = layer_map(c.n_layer, c2.n_layer, depth_mode)
    # fresh rows/columns: drawn like model.py's init of a linear of the grown model
    std = 0.02 if c2.arch == 'gpt2' else math.sqrt(2 / (5 * d2))
    gen = torch.Generator().manual_seed(seed)

    # the new model, built on the CPU in float32 (float64 for a float64 model), allocated but not initialised:
    # every tensor is written below, in place
    with torch.device('meta'):
        new = GPT(c2).to(work)
    new.to_empty(device='cpu')
    if c2.tie_embeddings:
        new.lm_head.weight = new.transformer.wte.weight
    if c.rotary_ndims:  # head_size, rotary_pct, block_size unchanged: same tables
        new.rope_cos.copy_(model.rope_cos)
        new.rope_sin.copy_(model.rope_sin)
    state = model.state_dict()
    src = lambda name: state[name].detach().to('cpu', work)
    params = dict(new.named_parameters())  # the tied head appears once, as wte

    def reader(name, w, out=None):
        """A linear reading LayerNorm(x'): its columns split over residual copies; columns of mean coordinates
        (whose LayerNorm output is exactly 0) random. Rows lifted by `out`, new rows random."""
        out = out or Lift(w.size(0), w.size(0), w.size(0))
        _lift_matrix(params[name], w, out, res, 'fresh', 'fresh', std, gen)
        _cancelling_noise(params[name], res, noise, gen)

    def writer(name, w, inputs):
        """A linear adding into the residual stream: columns split over copies of its input (new inputs read
        with 0); rows lifted to the residual (copies, and the mean row for mean coordinates)."""
        _lift_matrix(params[name], w, res, inputs, 'mean', 'zero', std, gen)
        _cancelling_noise(params[name], inputs, noise, gen)

    def layernorm(prefix, o, scale=1.0):
        # copies: rho * gain undoes var' = rho^2 var; mean coordinates normalise to exactly 0: bias 0
        _lift_vector(params[prefix + '.weight'], src(o + '.weight'), res, 'mean').mul_(rho * scale)
        _lift_vector(params[prefix + '.bias'], src(o + '.bias'), res, 'zero').mul_(scale)

    for key in ('transformer.wte.weight', 'transformer.wpe.weight'):
        if key in state:  # embeddings write the residual stream: coordinates lifted like a writer's rows
            w = src(key)
            _lift_matrix(params[key], w, Lift(w.size(0), w.size(0), w.size(0)), res, None, 'mean', std, gen,
                         split=False)
    if c.byte_pool:
        # byte_pool.py's modules keep their own width: copied as they are, but for the two that meet the residual
        # stream. The encoder's projection writes it (its rows lifted like an embedding's coordinates, its bias
        # like a writer's); the decoder's projection reads ln_f (its columns lifted like the head's)
        for name, w in state.items():
            if name.startswith(('byte_encoder.', 'byte_decoder.')) and name.split('.')[1] != 'proj':
                params[name].copy_(src(name))
        new.byte_table.copy_(model.byte_table)
        be = c.byte_embd
        writer('byte_encoder.proj.weight', src('byte_encoder.proj.weight'), Lift(be, be, be))
        _lift_vector(params['byte_encoder.proj.bias'], src('byte_encoder.proj.bias'), res, 'mean')
        reader('byte_decoder.proj.weight', src('byte_decoder.proj.weight'))
        params['byte_decoder.proj.bias'].copy_(src('byte_decoder.proj.bias'))
    ln_scale = 1.0 / k if c.tie_embeddings else 1.0  # the tied head reads every copy at full weight: sum is k*
    layernorm('transformer.ln_f', 'transformer.ln_f', ln_scale)
    if not c.tie_embeddings and not c.byte_pool:
        reader('lm_head.weight', src('lm_head.weight'))
    for i2, i in enumerate(lmap):
        if i is None:
            continue
        o, n_ = f'transformer.h.{i}.', f'transformer.h.{i2}.'
        layernorm(n_ + 'ln_1', o + 'ln_1')
        layernorm(n_ + 'ln_2', o + 'ln_2')
        reader(n_ + 'attn.c_attn.weight', src(o + 'attn.c_attn.weight'), qkv)
        _lift_vector(params[n_ + 'attn.c_attn.bias'], src(o + 'attn.c_attn.bias'), qkv, 'zero')
        writer(n_ + 'attn.c_proj.weight', src(o + 'attn.c_proj.weight'), head_dim)
        _lift_vector(params[n_ + 'attn.c_proj.bias'], src(o + 'attn.c_proj.bias'), res, 'mean')
        reader(n_ + 'mlp.c_fc.weight', src(o + 'mlp.c_fc.weight'), unit)
        _lift_vector(params[n_ + 'mlp.c_fc.bias'], src(o + 'mlp.c_fc.bias'), unit, 'zero')
        writer(n_ + 'mlp.c_proj.weight', src(o + 'mlp.c_proj.weight'), unit)
        _lift_vector(params[n_ + 'mlp.c_proj.bias'], src(o + 'mlp.c_proj.bias'), res, 'mean')
    for i2, i in enumerate(lmap):
        if i is None:  # an identity block: both residual writers zero; their inputs are not, so they train
            blk = new.transformer.h[i2]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1 + i2)
                for m in blk.modules():
                    if isinstance(m, nn.LayerNorm):
                        m.reset_parameters()
                blk.apply(new._init_weights)
            for m in (blk.attn.c_proj, blk.mlp.c_proj):
                m.weight.zero_()
                m.bias.zero_()
    new.train(model.training)
    return new.to(device=device, dtype=dtype)


@torch.no_grad()
def max_logit_diff(a, b, idx, dtype=torch.float64):
    """max |logits_a - logits_b| on idx, both models run in eval mode in dtype (a copy where that differs)."""
    def logits(m):
        if next(m.parameters()).dtype != dtype:
            m = copy.deepcopy(m).to(dtype)
        was_training = m.training
        x = idx.to(next(m.parameters()).device)
        if m.config.byte_pool:  # the decoder's byte logits for every next token of idx (teacher forcing)
            tgt = m.byte_targets(x[:, 1:])
            out = m.eval().byte_decoder(m(x[:, :-1])[0].flatten(0, 1), tgt[:, :-1], L=tgt.size(1))
        else:
            out = m.eval()(x)[0]
        m.train(was_training)
        return out
    return (logits(a) - logits(b)).abs().max().item()


def grow(model, idx, n_embd=None, n_head=None, n_layer=None, mlp_width=None, method='top_left',
         depth_mode='interleave', noise=1e-2, seed=0, check_dtype='float64', tolerance=None):
    """expand_model with its exactness measured: (grown model in `model`'s dtype, growth record), or ValueError.
    The growth runs in check_dtype (float64 by default, so the check measures the construction and not float32
    rounding) and max |logits(grown) - logits(model)| on idx must be <= tolerance (None: 1e-9 for float64, 1e-4
    for float32). `model` is cast to check_dtype in place (no second copy of a big model). expand.py and train.py's
    in-process growth both call this, which is why their grown weights are bit-identical."""
    if check_dtype not in ('float32', 'float64'):
        raise ValueError(f"check_dtype={check_dtype!r}: use 'float64' or 'float32'")
    tol = tolerance if tolerance is not None else (1e-9 if check_dtype == 'float64' else 1e-4)
    dtype = next(model.parameters()).dtype
    model = model.to(getattr(torch, check_dtype))
    t0 = time.time()
    grown = expand_model(model, n_embd, n_head, n_layer, mlp_width, method, depth_mode, noise, seed)
    seconds = time.time() - t0
    diff = max_logit_diff(model, grown, idx, getattr(torch, check_dtype))
    if not diff <= tol:
        raise ValueError(f"the grown model's logits differ from the source's by {diff:.3e} > tolerance {tol:g} "
                         f"({check_dtype}): the growth is not function-preserving for this model")
    c, c2 = model.config, grown.config
    record = dict(method=method, depth_mode=depth_mode, noise=noise, seed=seed,
                  source=dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, mlp_width=c.mlp_width,
                              layer_norm_eps=c.layer_norm_eps),
                  target=dict(n_layer=c2.n_layer, n_head=c2.n_head, n_embd=c2.n_embd, mlp_width=c2.mlp_width,
                              layer_norm_eps=c2.layer_norm_eps),
                  layer_map=layer_map(c.n_layer, c2.n_layer, depth_mode), max_abs_dlogits=diff,
                  check_dtype=check_dtype, check_tokens=int(idx.numel()), tolerance=tol, seconds=seconds)
    return grown.to(dtype), record


def describe(c):
    return f"{c.n_layer}L {c.n_head}H x {c.head_size} = {c.n_embd}, mlp {c.mlp_width}"


if __name__ == '__main__':
    from configurator import (configure, fail, CONFIG_ERROR, positive, non_negative, non_empty, one_of)
    config = configure(globals(), rules=dict(
        init_from=non_empty, out_dir=non_empty, method=one_of('top_left', 'isotropic'),
        depth_mode=one_of('interleave', 'append'), n_embd=positive, n_head=positive, n_layer=positive,
        mlp_width=positive, noise=non_negative, seed=non_negative, check_dtype=one_of('float64', 'float32'),
        tolerance=non_negative, check_batch=positive, check_len=positive, save_dtype=one_of(*DTYPES),
        tokenizer=one_of('gpt2', 'gpt-neox-20b', 'char')))
    if not init_from or not out_dir:
        fail("set --init_from (a model directory, hub id or train.py checkpoint) and --out_dir", CONFIG_ERROR)
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)) and not overwrite:
        fail(f"out_dir {out_dir} exists and is not empty: pick another out_dir, or pass --overwrite=True to replace "
             f"a model directory this codebase wrote")
    try:
        check_replaceable(out_dir)
    except ValueError as e:
        fail(e)
    try:
        model, source = load_model(init_from, dtype=None)  # as stored: the grown model is saved in that dtype
        tok = model_tokenizer(model.config.arch, source, tokenizer, tokenizer_path)  # exported beside the weights
        out_dtype = DTYPES[save_dtype] if save_dtype else next(model.parameters()).dtype
        c = model.config
        print(f"source: {describe(c)}; params {model.param_counts()}")
        idx = torch.randint(c.vocab_size, (check_batch, min(check_len, c.block_size)),
                            generator=torch.Generator().manual_seed(seed))
        grown, record = grow(model, idx, n_embd, n_head, n_layer, mlp_width, method, depth_mode, noise, seed,
                             check_dtype, tolerance)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    c2 = grown.config
    print(f"grown:  {describe(c2)}; params {grown.param_counts()}; layer_norm_eps {c.layer_norm_eps:g} -> "
          f"{c2.layer_norm_eps:g}; {method} in {record['seconds']:.2f}s")
    print(f"max |dlogits| ({check_dtype}, {check_batch}x{idx.size(1)} random tokens): "
          f"{record['max_abs_dlogits']:.3e} (tolerance {record['tolerance']:g})")
    meta = dict(expanded_from=init_from, **record, tokenizer=tok.meta(),
                **({'parent': source['record']} if source['record'] else {}))
    grown.to(out_dtype).save_pretrained(out_dir, extra_meta=meta, tokenizer=tok, replace=True)
    print(f"wrote {out_dir} ({str(out_dtype).removeprefix('torch.')}, with the {tok.name} tokenizer)")
