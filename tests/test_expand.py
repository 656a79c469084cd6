"""
expand.py: function-preserving growth. Exactness matrix (both archs x both methods x five growths x
float64/float32): max |dlogits| <= 1e-9 in float64, <= 1e-4 in float32, on random token batches of models
whose every parameter (LayerNorm gains and biases included) is moved off its init. Then trainability (every
new or copied unit gets gradient, copies diverge; without the noise they provably do not), bad targets,
and the script end to end: train.py checkpoint in, Hugging Face directory out, loaded by transformers.
CPU, tiny shapes (head_size 8, 4 heads).
"""
import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

from model import GPT, GPTConfig  # noqa: E402
from expand import expand_model, layer_map, max_logit_diff  # noqa: E402

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
V, T = 97, 24


def source(arch, dtype=torch.float64, seed=0, n_layer=2, n_head=4):
    """A tiny model (head_size 8) with every parameter off its init; gpt_neox: parallel residual and
    rotary on 2 of 8 dims per head; gpt2: sequential residual, learned positions, tied head."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(arch=arch, n_layer=n_layer, n_head=n_head, n_embd=8 * n_head, vocab_size=V, block_size=32))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m.to(dtype)


def batch(seed=0, B=3):
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(seed))


GROWTHS = {  # from 4 heads x 8 = 32 wide, 2 layers (the 70m shape in miniature: 512/8H/6L)
    'width_x2': [dict(n_head=8)],
    'width_x1.5': [dict(n_head=6)],                  # 512/8H -> 768/12H
    'depth': [dict(n_layer=4)],                      # 6 -> 12 layers
    'width_and_depth': [dict(n_head=6, n_layer=4)],  # 70m shape -> 160m shape
    'chain': [dict(n_head=6, n_layer=3), dict(n_head=15, n_layer=5, mlp_width=500)],  # x1.5 then x2.5, odd MLP
}


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
@pytest.mark.parametrize('growth', list(GROWTHS))
@pytest.mark.parametrize('method', ['top_left', 'isotropic'])
@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_logits_exact(arch, method, growth, dtype):
    src = source(arch, dtype)
    grown = src
    for i, target in enumerate(GROWTHS[growth]):
        grown = expand_model(grown, method=method, seed=i, **target)
    c = grown.config
    last = GROWTHS[growth][-1]
    assert (c.n_embd, c.n_layer, c.head_size) == (8 * last.get('n_head', 4), last.get('n_layer', 2), 8)
    assert next(grown.parameters()).dtype == dtype
    if arch == 'gpt2':
        assert grown.lm_head.weight is grown.transformer.wte.weight
    idx = batch()
    with torch.no_grad():
        diff = (src(idx)[0] - grown(idx)[0]).abs().max().item()
    assert diff <= TOL[dtype], f"max |dlogits| = {diff:.3e}"


@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_depth_modes(arch):
    assert layer_map(6, 12) == [0, None, 1, None, 2, None, 3, None, 4, None, 5, None]
    assert layer_map(2, 5) == [0, None, 1, None, None]
    assert layer_map(2, 4, 'append') == [0, 1, None, None]
    src, idx = source(arch), batch()
    for mode in ('interleave', 'append'):
        grown = expand_model(src, n_layer=5, depth_mode=mode)
        assert max_logit_diff(src, grown, idx) <= 1e-9
        new = [i2 for i2, i in enumerate(layer_map(2, 5, mode)) if i is None]
        for i2 in new:  # identity blocks: both residual writers exactly zero, everything else random
            blk = grown.transformer.h[i2]
            assert blk.attn.c_proj.weight.abs().max() == 0 and blk.mlp.c_proj.weight.abs().max() == 0
            assert blk.attn.c_attn.weight.std() > 0


@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_zero_padding_is_not_exact(arch):
    """Why top_left needs the mean coordinates: the naive copy-into-the-top-left-and-zero-pad (new heads, units
    and residual coordinates all zero, new LayerNorm gains 1) keeps every new coordinate at 0, but LayerNorm then
    averages over d' coordinates: mean (d/d')mu, a different variance, so the logits move."""
    src, idx = source(arch), batch()
    c = src.config
    naive = GPT(GPTConfig(**{**asdict(c), 'n_embd': 48, 'n_head': 6, 'mlp_width': None})).to(torch.float64)
    old = src.state_dict()
    with torch.no_grad():
        for name, p in naive.state_dict().items():
            if name.startswith('rope_'):
                continue
            p.fill_(1.0 if 'ln' in name and name.endswith('weight') else 0.0)
            p[tuple(slice(0, n) for n in old[name].shape)] = old[name]  # fused QKV: old heads are the first rows
    assert max_logit_diff(src, naive, idx) > 1e-2
    assert max_logit_diff(src, expand_model(src, n_head=6, method='top_left'), idx) <= 1e-9


def test_layernorm_eps_is_load_bearing():
    """The check above can fail: the grown model with the source's eps (zero-padding's mistake in another
    guise: LayerNorm statistics over d' coordinates) is measurably off."""
    src, idx = source('gpt_neox'), batch()
    grown = expand_model(src, n_head=6, method='top_left')
    assert grown.config.layer_norm_eps == pytest.approx(1e-5 * 32 / 48)
    for m in grown.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = src.config.layer_norm_eps
    assert max_logit_diff(src, grown, idx) > 1e-7


# ------------------------------------------------------------------ trainability
def train_and_probe(model, steps=3, seed=0):
    """A few AdamW steps on random tokens; then the gradients of one more batch and the activations
    (residual stream before ln_f, MLP pre-activations, per-head attention outputs) of block 0."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for s in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        idx = batch(100 + s, B=4)
        _, loss = model(idx, targets=batch(200 + s, B=4))
        loss.backward()
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


def col_norms(t, dim):
    return t.norm(dim=dim)


@pytest.mark.parametrize('method', ['top_left', 'isotropic'])
@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_trainable(arch, method):
    # x2.5 width: isotropic has 2 residual copies + mean coordinates, heads with 2 and 3 copies; plus a new block
    src = source(arch, torch.float32)
    d, H, m, hs = 32, 4, 128, 8
    grown = expand_model(src, n_head=10, n_layer=3, method=method, seed=0)
    assert max_logit_diff(src, grown, batch(), torch.float32) <= 1e-4  # step 0: exact
    acts = train_and_probe(grown)
    d2, H2, m2 = 80, 10, 320
    tr = grown.transformer
    assert (col_norms(tr.wte.weight.grad[:, d:], 0) > 0).all()
    for i2, i in enumerate(layer_map(2, 3)):
        blk = tr.h[i2]
        if i is None:
            assert all(p.grad.abs().max() > 0 for p in blk.parameters())
            continue
        g = {n: p.grad for n, p in blk.named_parameters()}
        assert (g['ln_1.weight'][d:].abs() > 0).all() and (g['ln_1.bias'][d:].abs() > 0).all()
        assert (col_norms(g['attn.c_attn.weight'][:, d:], 0) > 0).all()          # reading new coordinates
        assert (col_norms(g['attn.c_attn.weight'][3 * hs * H:], 1) > 0).all()   # new heads' q, k, v
        assert (col_norms(g['attn.c_proj.weight'][:, hs * H:], 0) > 0).all()    # new heads' output
        assert (col_norms(g['attn.c_proj.weight'][d:], 1) > 0).all()            # writing new coordinates
        assert (col_norms(g['mlp.c_fc.weight'][m:], 1) > 0).all()               # new units' fan-in
        assert (col_norms(g['mlp.c_proj.weight'][:, m:], 0) > 0).all()          # new units' fan-out
    # mean coordinates start equal to each other (all = mean(x)) and must have moved apart
    x = acts['x']
    k = 2 if method == 'isotropic' else 1
    assert x[:, k * d:].std(dim=1).min() > 1e-4
    if method == 'isotropic':  # copies computed identical values at step 0; now they differ
        assert diverged(acts, d, H, m, hs, d2, H2, m2) > 1e-4  # the noise=0 control below gives exactly 0


def diverged(acts, d, H, m, hs, d2, H2, m2):
    """The smallest difference between a copied unit and its original, over residual, head and MLP copies."""
    x, h, y = acts['x'], acts['h'], acts['y'].view(-1, H2, hs)
    k = d2 // d
    res = min((x[:, j] - x[:, j % d]).abs().max().item() for j in range(d, k * d))
    heads = min((y[:, j] - y[:, j % H]).abs().max().item() for j in range(H, H2))
    units = min((h[:, j] - h[:, j % m]).abs().max().item() for j in range(m, m2))
    return min(res, heads, units)


@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_copies_stay_tied_without_noise(arch):
    """Control for the divergence check: exact copies with identical fan-out get identical gradients forever."""
    grown = expand_model(source(arch, torch.float32), n_head=8, method='isotropic', noise=0.0)
    acts = train_and_probe(grown)
    assert diverged(acts, 32, 4, 128, 8, 64, 8, 256) < 1e-5


# ------------------------------------------------------------------ bad targets
@pytest.mark.parametrize('target, match', [
    (dict(n_embd=16), 'smaller than'),
    (dict(n_layer=1), 'smaller than'),
    (dict(n_head=6, mlp_width=100), 'smaller than'),
    (dict(n_embd=36), 'whole number of heads'),
    (dict(n_embd=48, n_head=5), 'n_head=5'),
    (dict(n_embd=44, mlp_width=None), 'whole number of heads'),
    (dict(n_head=6, method='net2net'), "method='net2net'"),
    (dict(n_layer=3, depth_mode='prepend'), "depth_mode='prepend'"),
    (dict(n_layer=3, noise=-1.0), 'noise'),
])
def test_bad_targets(target, match):
    with pytest.raises(ValueError, match=match):
        expand_model(source('gpt_neox'), **target)


def test_unsupported_model():
    with pytest.raises(ValueError, match='model.GPT'):
        expand_model(torch.nn.Linear(4, 4), n_head=2)


# ------------------------------------------------------------------ the script
def run_expand(tmp_path, *args):
    return subprocess.run([sys.executable, os.path.join(REPO, 'expand.py'), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_script_checkpoint_to_transformers(tmp_path):
    """train.py checkpoint -> expand.py (70m -> 160m shape in miniature) -> AutoModelForCausalLM."""
    transformers = pytest.importorskip('transformers')
    src = source('gpt_neox', torch.float32)
    (tmp_path / 'run').mkdir()
    (tmp_path / 'data').mkdir()  # the dataset the checkpoint was trained on names its tokenizer
    tok_meta = dict(tokenizer='char', vocab_size=27, eot=26, chars='abcdefghijklmnopqrstuvwxyz', dtype='uint16')
    (tmp_path / 'data' / 'meta.json').write_text(json.dumps(tok_meta))
    torch.save(dict(model=src.state_dict(), model_args=asdict(src.config), config=dict(data_dir=str(tmp_path / 'data'))),
               tmp_path / 'run' / 'ckpt.pt')
    r = run_expand(tmp_path, '--init_from=run', '--out_dir=grown', '--method=top_left', '--n_embd=48',
                   '--n_layer=4', '--check_len=16')
    assert r.returncode == 0, r.stderr
    assert 'max |dlogits|' in r.stdout and 'params' in r.stdout
    hf = json.load(open(tmp_path / 'grown' / 'config.json'))
    meta = hf['growing_sparse']
    assert meta['method'] == 'top_left' and meta['source']['n_embd'] == 32 and meta['max_abs_dlogits'] <= 1e-9
    tok_record = {k: v for k, v in tok_meta.items() if k != 'dtype'}  # the tokenizer, without the dataset's fields
    assert meta['tokenizer'] == tok_record  # sample.py and later scripts find the tokenizer in the directory
    assert (hf['hidden_size'], hf['num_attention_heads'], hf['num_hidden_layers']) == (48, 6, 4)
    idx = batch()
    with torch.no_grad():
        ref = src(idx)[0]
        ours = GPT.from_pretrained(str(tmp_path / 'grown'))(idx)[0]
        theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'grown')).eval()(idx).logits
    assert (ours - ref).abs().max() <= 1e-4
    assert (theirs - ref).abs().max() <= 1e-4
    # a chain from a grown directory records its parent's provenance
    r = run_expand(tmp_path, '--init_from=grown', '--out_dir=grown2', '--method=isotropic', '--n_head=12',
                   '--check_len=16')
    assert r.returncode == 0, r.stderr
    meta2 = json.load(open(tmp_path / 'grown2' / 'config.json'))['growing_sparse']
    assert meta2['parent']['method'] == 'top_left' and meta2['source']['n_embd'] == 48
    assert meta2['tokenizer'] == tok_record


def test_script_refuses_and_writes_nothing(tmp_path):
    src = source('gpt2', torch.float32)
    src.save_pretrained(str(tmp_path / 'src'))
    r = run_expand(tmp_path, '--init_from=src', '--out_dir=out', '--n_embd=36')
    assert r.returncode != 0 and 'whole number of heads' in r.stderr
    r = run_expand(tmp_path, '--init_from=src', '--out_dir=out', '--n_head=2')
    assert r.returncode != 0 and 'smaller than' in r.stderr
    assert not os.path.exists(tmp_path / 'out')
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('x')
    r = run_expand(tmp_path, '--init_from=src', '--out_dir=out', '--n_head=8')
    assert r.returncode != 0 and 'overwrite' in r.stderr
    assert os.listdir(tmp_path / 'out') == ['keep.txt']
    assert [p for p in os.listdir(tmp_path) if '.tmp' in p] == []
