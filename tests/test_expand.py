"""expand.py: function-preserving growth (docs/growth.md). Exactness on both architectures, both methods and every kind
of growth, on models whose every parameter is moved off its init; the two non-obvious parts of the construction shown
load-bearing; isotropic = HyperCloning and top_left = the old weights in the top-left corner, weight for weight;
trainability; bad targets and settings; grow's record; train.py exporting a grown model. CPU, tiny shapes (head 8)."""
import json
import math
import os
from dataclasses import asdict

import pytest
import torch

from conftest import run_script
from configurator import check
from expand import RULES, expand_model, grow, layer_map, max_logit_diff
from model import GPT, GPTConfig
from hf_io import from_pretrained

V = 97


def source(arch, dtype=torch.float64, n_layer=2, n_head=4):
    """A tiny model (head_size 8) with every parameter off its init; gpt_neox: parallel residual, rotary on 2 of 8 dims
    per head, untied head; gpt2: sequential residual, learned positions, tied head."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(arch=arch, n_layer=n_layer, n_head=n_head, n_embd=8 * n_head, vocab_size=V, block_size=32))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m.to(dtype)


def batch(seed=0, B=3, T=24):
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(seed))


GROWTHS = {  # from 4 heads x 8 = 32 wide, 2 layers: the 70m shape in miniature (512 wide, 8 heads, 6 layers)
    'width_x2': [dict(n_head=8)],                               # isotropic: pure duplication, eps unchanged
    'width_x1.5_and_depth': [dict(n_head=6, n_layer=4)],       # 70m -> 160m: uneven copies, mean coordinates
    'depth_append': [dict(n_layer=3, depth_mode='append')],
    'chain': [dict(n_head=6, n_layer=3), dict(n_head=15, n_layer=5, mlp_width=500)],  # x1.5 then x2.5, odd MLP
}


@pytest.mark.parametrize('growth', list(GROWTHS))
@pytest.mark.parametrize('method', ['top_left', 'isotropic'])
@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_logits_exact(arch, method, growth):
    """max |dlogits| <= 1e-9 in float64 (measured here, not by expand.py), the target shape reached with head_size and
    the dtype kept, LayerNorm eps scaled by k*d/d', a tied head still tied."""
    src = grown = source(arch)
    for i, target in enumerate(GROWTHS[growth]):
        grown = expand_model(grown, method=method, seed=i, **target)
    c, last = grown.config, GROWTHS[growth][-1]
    assert (c.n_embd, c.n_layer, c.head_size, next(grown.parameters()).dtype) == \
        (8 * last.get('n_head', 4), last['n_layer'] if 'n_layer' in last else 2, 8, torch.float64)
    if len(GROWTHS[growth]) == 1:
        k = c.n_embd // 32 if method == 'isotropic' else 1
        assert c.layer_norm_eps == pytest.approx(1e-5 * k * 32 / c.n_embd, rel=1e-12)
    assert arch == 'gpt_neox' or grown.lm_head.weight is grown.transformer.wte.weight
    with torch.no_grad():
        assert (src(batch())[0] - grown(batch())[0]).abs().max().item() <= 1e-9


@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_float32_growth_within_1e4(arch):
    """Grown in float32 (check_dtype='float32', for models too big for float64): max |dlogits| <= 1e-4."""
    src = source(arch, torch.float32)
    grown, record = grow(source(arch, torch.float32), batch(), n_head=6, n_layer=3, method='isotropic',
                         check_dtype='float32')
    assert next(grown.parameters()).dtype == torch.float32 and record['tolerance'] == 1e-4
    assert max_logit_diff(src, grown, batch(), torch.float32) <= 1e-4


def test_depth_is_identity_blocks():
    """New blocks are spread between the old ones (6 -> 12: one after each) or appended; each has both residual writers
    exactly zero (an identity), its other weights random so that it trains."""
    assert layer_map(6, 12) == [0, None, 1, None, 2, None, 3, None, 4, None, 5, None]
    assert layer_map(2, 5) == [0, None, 1, None, None] and layer_map(2, 4, 'append') == [0, 1, None, None]
    grown = expand_model(source('gpt_neox'), n_layer=5)
    for i2 in (1, 3, 4):
        blk = grown.transformer.h[i2]
        assert all(t.abs().max() == 0 for m in (blk.attn.c_proj, blk.mlp.c_proj) for t in (m.weight, m.bias))
        assert blk.attn.c_attn.weight.std() > 0.01 and blk.mlp.c_fc.weight.std() > 0.01


@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_mean_coordinates_and_eps_are_load_bearing(arch):
    """The naive copy-into-the-top-left-and-zero-pad (new heads, units and residual coordinates 0, new LayerNorm gains
    1) moves the logits (> 1e-2): LayerNorm then averages over d' coordinates. And the grown model with the source's
    eps is measurably off (> 1e-7), so the exactness check can fail."""
    src, idx = source(arch), batch()
    naive = GPT(GPTConfig(**{**asdict(src.config), 'n_embd': 48, 'n_head': 6, 'mlp_width': None})).double()
    with torch.no_grad():
        for name, p in naive.state_dict().items():
            if not name.startswith('rope_'):
                old = src.state_dict()[name]
                p.fill_(1.0 if 'ln' in name and name.endswith('weight') else 0.0)
                p[tuple(slice(0, n) for n in old.shape)] = old  # fused QKV: old heads are the first rows
    assert max_logit_diff(src, naive, idx) > 1e-2
    grown = expand_model(src, n_head=6)
    for m in grown.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = src.config.layer_norm_eps
    assert max_logit_diff(src, grown, idx) > 1e-7


@pytest.mark.parametrize('method', ['top_left', 'isotropic'])
def test_weight_for_weight(method):
    """isotropic x2 without noise is HyperCloning's symmetric expansion: every hidden-to-hidden weight 1/2 [[W, W],
    [W, W]], the embedding [E, E], the head 1/2 [W, W], biases and LayerNorms duplicated, eps unchanged. top_left: every
    old weight is the top-left block of its grown one (LayerNorm gains times sqrt(d/d')), the rest fresh or zero."""
    src = source('gpt_neox')
    grown = expand_model(src, n_head=8, method=method, noise=0.0)
    new = grown.state_dict()
    for name, w in src.state_dict().items():
        if name.startswith('rope_'):
            continue
        if method == 'top_left':
            scale = math.sqrt(32 / 64) if 'ln' in name and name.endswith('weight') else 1.0
            assert torch.equal(new[name][tuple(slice(0, n) for n in w.shape)], w * scale), name
            continue
        reps = [s2 // s for s, s2 in zip(w.shape, new[name].shape)]  # 2 along every grown dimension
        split = reps[-1] if w.dim() == 2 and 'wte' not in name else 1  # readers' inputs split over the copies
        assert torch.equal(new[name], w.repeat(*reps) / split), name
    assert grown.config.layer_norm_eps == (src.config.layer_norm_eps if method == 'isotropic' else 0.5e-5)
    blk = grown.transformer.h[0]  # top_left: new heads and units read at random and write 0; so do mean coordinates
    assert method == 'isotropic' or (blk.attn.c_proj.weight[:, 32:].abs().max() == 0 == blk.mlp.c_proj.weight[
        :, 128:].abs().max() and min(blk.attn.c_attn.weight[96:].std(), blk.mlp.c_fc.weight[128:].std(),
                                     blk.attn.c_attn.weight[:96, 32:].std()) > 0.01)


def train_and_probe(model, steps=3):
    """A few AdamW steps on random tokens; then the gradients of one more batch and block 0's activations: the residual
    stream before ln_f, the MLP pre-activations, and each head's attention output."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for s in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        model(batch(100 + s, B=4), targets=batch(200 + s, B=4))[1].backward()
        if s < steps:
            opt.step()
    acts = {}
    hooks = [model.transformer.ln_f.register_forward_pre_hook(lambda m, a: acts.__setitem__('x', a[0])),
             model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, a, o: acts.__setitem__('h', o)),
             model.transformer.h[0].attn.c_proj.register_forward_pre_hook(lambda m, a: acts.__setitem__('y', a[0]))]
    with torch.no_grad():
        model(batch(300))
    for h in hooks:
        h.remove()
    return {k: v.reshape(-1, v.size(-1)) for k, v in acts.items()}


def copies_apart(acts, d=32, H=4, m=128, hs=8):
    """The smallest difference between a copied residual coordinate, head or MLP unit and its original (residual
    copies are the first k*d coordinates, the rest mean coordinates)."""
    x, h, y = acts['x'], acts['h'], acts['y'].view(-1, acts['y'].size(-1) // hs, hs)
    return min(min((t[:, j] - t[:, j % n]).abs().max().item() for j in range(n, end))
               for t, n, end in ((x, d, x.size(1) // d * d), (y, H, y.size(1)), (h, m, h.size(1))))


@pytest.mark.parametrize('method', ['top_left', 'isotropic'])
@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_trainable(arch, method):
    """x2.5 wide (isotropic: 2 residual copies plus mean coordinates, heads with 2 and 3 copies) and a new block: every
    new or copied coordinate, head, unit and block gets gradient, mean coordinates move apart, and copies diverge
    (> 1e-4)."""
    grown = expand_model(source(arch, torch.float32), n_head=10, n_layer=3, method=method)
    acts, d, H, m, hs = train_and_probe(grown), 32, 4, 128, 8
    nonzero = lambda t, dim: bool((t.norm(dim=dim) > 0).all())  # noqa: E731
    assert nonzero(grown.transformer.wte.weight.grad[:, d:], 0)
    for i2, i in enumerate(layer_map(2, 3)):
        g = {n: p.grad for n, p in grown.transformer.h[i2].named_parameters()}
        if i is None:
            assert all(t.abs().max() > 0 for t in g.values())
            continue
        assert (g['ln_1.weight'][d:].abs() > 0).all() and (g['ln_1.bias'][d:].abs() > 0).all()
        assert nonzero(g['attn.c_attn.weight'][:, d:], 0) and nonzero(g['attn.c_attn.weight'][3 * hs * H:], 1)
        assert nonzero(g['attn.c_proj.weight'][:, hs * H:], 0) and nonzero(g['attn.c_proj.weight'][d:], 1)
        assert nonzero(g['mlp.c_fc.weight'][m:], 1) and nonzero(g['mlp.c_proj.weight'][:, m:], 0)
    k = 2 if method == 'isotropic' else 1
    assert acts['x'][:, k * d:].std(dim=1).min() > 1e-4  # mean coordinates start equal, must move apart
    assert method == 'top_left' or copies_apart(acts) > 1e-4


@pytest.mark.parametrize('noise', [0.0, 1e-2])
def test_noise_breaks_the_symmetry_of_copies(noise):
    """x2 isotropic (pure copies, no mean coordinates): exact copies with identical fan-out get identical gradients, so
    without the cancelling noise they never diverge (< 1e-5); with it they do (> 1e-4)."""
    grown = expand_model(source('gpt_neox', torch.float32), n_head=8, method='isotropic', noise=noise)
    apart = copies_apart(train_and_probe(grown))
    assert apart < 1e-5 if noise == 0 else apart > 1e-4


@pytest.mark.parametrize('target, match', [
    (dict(n_embd=16), 'n_embd=16 is smaller than'),
    (dict(n_layer=1), 'n_layer=1 is smaller than'),
    (dict(n_head=6, mlp_width=100), 'mlp_width=100 is smaller than'),
    (dict(n_embd=36), 'n_embd=36 is not a whole number of heads of size 8'),
    (dict(n_embd=48, n_head=5), 'n_head=5 heads of size 8 make a width of 40'),
])
def test_bad_targets(target, match):
    """A target this source cannot grow to is one ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        expand_model(source('gpt_neox'), **target)


def test_settings_rules():
    """RULES names exactly grow's keyword settings and refuses bad values the way every script does."""
    import inspect
    assert list(RULES) == [p for p in inspect.signature(grow).parameters if p not in ('model', 'idx')]
    for key, value, fragment in (('method', 'net2net', "method='net2net': must be one of 'top_left', 'isotropic'"),
                                 ('depth_mode', 'prepend', "must be one of 'interleave', 'append'"),
                                 ('noise', -1.0, 'noise=-1.0: must be >= 0'), ('n_embd', 0, 'n_embd=0: must be > 0'),
                                 ('check_dtype', 'float16', "must be one of 'float64', 'float32'")):
        with pytest.raises(ValueError, match=fragment):
            check(key, value, None, RULES[key])
    assert check('method', 'isotropic', None, RULES['method']) == 'isotropic'


def test_grow_record_and_refusal():
    """grow returns the model in the source's dtype and a record of the growth (shapes, layer map, the measured
    max |dlogits| on idx); a tolerance below what float32 rounding gives is refused with a ValueError."""
    src = source('gpt2', torch.float32)
    grown, r = grow(src, batch(), n_embd=48, n_layer=3, method='isotropic', seed=3)
    assert next(grown.parameters()).dtype == torch.float32 and r['check_dtype'] == 'float64'
    assert (r['method'], r['seed'], r['layer_map'], r['check_tokens'], r['tolerance']) == \
        ('isotropic', 3, [0, 1, None], 72, 1e-9)
    assert r['source']['n_embd'] == 32 and r['target']['n_embd'] == 48 and 0 <= r['max_abs_dlogits'] <= 1e-9
    with pytest.raises(ValueError, match='not function-preserving'):
        grow(source('gpt2', torch.float32), batch(), n_embd=48, check_dtype='float32', tolerance=1e-30)


def test_train_py_exports_a_grown_model_transformers_loads(tmp_path, data_dir):
    """train.py checkpoint -> train.py --grow=... --max_iters=0 --save_hf=True (70m -> 160m shape in miniature) -> a
    Hugging Face directory that our GPT and transformers both load to the source's logits (1e-4: saved in float32),
    with the growth record, the small model's val loss (the grown model's: exact) and the dataset's tokenizer;
    growing that directory again records its parent."""
    transformers = pytest.importorskip('transformers')
    src = source('gpt_neox', torch.float32)
    (tmp_path / 'run').mkdir()  # the dataset the checkpoint was trained on names its tokenizer
    torch.save(dict(model=src.state_dict(), model_args=asdict(src.config), config=dict(data_dir=data_dir)),
               tmp_path / 'run' / 'ckpt.pt')
    for src_dir, out, how in (('run', 'grown', "{'n_embd': 48, 'n_layer': 4}"),
                               ('grown/model', 'grown2', "{'method': 'isotropic', 'n_head': 12}")):
        r = run_script('train.py', f'--init_from={tmp_path / src_dir}', f'--grow={how}', f'--data_dir={data_dir}',
                       f'--out_dir={tmp_path / out}', '--max_iters=0', '--save_hf=True', '--device=cpu',
                       '--dtype=float32', '--batch_size=4', '--block_size=16', '--eval_iters=2',
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / 'grown' / 'ckpt.pt').exists()  # nothing trained, nothing to resume
    hf = json.loads((tmp_path / 'grown' / 'model' / 'config.json').read_text())
    meta, val = hf['growing_sparse'], json.loads((tmp_path / 'grown' / 'metrics.jsonl').read_text())['val_loss']
    assert (meta['method'], meta['source']['n_embd'], meta['tokenizer']) == ('top_left', 32, json.loads(
        open(os.path.join(data_dir, 'meta.json')).read()))
    assert meta['max_abs_dlogits'] <= 1e-9 and meta['expanded_from'] == str(tmp_path / 'run') and meta['iter_num'] == 0
    assert val == pytest.approx(meta['small_val_loss'], abs=1e-5, rel=0)
    assert (hf['hidden_size'], hf['num_attention_heads'], hf['num_hidden_layers']) == (48, 6, 4)
    with torch.no_grad():
        ref = src(batch())[0]
        ours = from_pretrained(str(tmp_path / 'grown' / 'model'))(batch())[0]
        theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'grown' / 'model')).eval()(
            batch()).logits
    assert (ours - ref).abs().max() <= 1e-4 and (theirs - ref).abs().max() <= 1e-4
    assert (tmp_path / 'grown' / 'model' / 'tokenizer.json').exists()
    meta2 = json.loads((tmp_path / 'grown2' / 'model' / 'config.json').read_text())['growing_sparse']
    assert meta2['parent']['method'] == 'top_left' and meta2['source']['n_embd'] == 48
