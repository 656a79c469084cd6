"""
model.py against transformers (logits, both directions of the HF format), the KV cache against full
recomputation, sampling filters, parameter counts, presets, tokenizers (offline) and load errors.
CPU, tiny shapes. Logit parity tolerance: max |ours - HF| <= 1e-4 in fp32.
"""
import json
import lzma
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.environ.get('SHARED_DATA', os.path.join(REPO, '..', 'shared', 'data'))
os.environ.setdefault('TIKTOKEN_CACHE_DIR', os.path.join(SHARED, 'tiktoken_cache'))
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

from model import GPT, GPTConfig, preset_config, sample_next  # noqa: E402
from data.tokenizer import get_tokenizer  # noqa: E402

transformers = pytest.importorskip('transformers')
TOL = 1e-4  # max abs logit difference vs transformers, fp32


def perturb_(model, seed, std=0.1):
    """Move every parameter off its init (biases, LayerNorm gains too) so nothing is tested at a zero/one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def hf_neox(seed=0, hidden=48, n_head=3, n_layer=2, inter=72, vocab=97, block=64, rotary_pct=0.25,
            parallel=True, eps=1e-5, theta=10000.0, tie=False):
    cfg = transformers.GPTNeoXConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=n_layer, num_attention_heads=n_head,
        intermediate_size=inter, max_position_embeddings=block, layer_norm_eps=eps, use_parallel_residual=parallel,
        rope_parameters=dict(rope_type='default', rope_theta=theta, partial_rotary_factor=rotary_pct),
        tie_word_embeddings=tie)
    torch.manual_seed(seed)
    return perturb_(transformers.GPTNeoXForCausalLM(cfg), seed).eval()


def hf_gpt2(seed=0, hidden=48, n_head=3, n_layer=2, inter=None, vocab=97, block=64, eps=1e-5):
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=block, n_embd=hidden, n_layer=n_layer,
                                  n_head=n_head, n_inner=inter, layer_norm_epsilon=eps,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return perturb_(transformers.GPT2LMHeadModel(cfg), seed).eval()


def tokens(vocab=97, B=2, T=40, seed=0):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def max_diff(ours, hf, idx):
    with torch.no_grad():
        return (ours(idx)[0] - hf(idx).logits).abs().max().item()


# ------------------------------------------------------------------ logits vs transformers
NEOX_CASES = [  # (rotary_pct, parallel, n_head, eps, inter, theta)
    (0.25, True, 3, 1e-5, 72, 10000.0),     # Pythia defaults, head_size 16 -> 4 rotary dims
    (1.0, True, 2, 1e-5, 200, 10000.0),     # full rotary, MLP not 4x
    (0.25, False, 6, 1e-3, 192, 500.0),     # sequential residual, 6 heads of 8, odd eps, other base
    (1.0, False, 12, 1e-6, 100, 10000.0),   # 12 heads of 4
]


@pytest.mark.parametrize('rotary_pct,parallel,n_head,eps,inter,theta', NEOX_CASES)
def test_neox_logits_match_transformers(tmp_path, rotary_pct, parallel, n_head, eps, inter, theta):
    hf = hf_neox(seed=n_head, n_head=n_head, rotary_pct=rotary_pct, parallel=parallel, eps=eps, inter=inter,
                 theta=theta)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(str(tmp_path)).eval()
    c = ours.config
    assert (c.arch, c.n_head, c.head_size, c.mlp_width, c.layer_norm_eps, c.rotary_pct, c.rotary_base,
            c.parallel_residual, c.tie_embeddings) == ('gpt_neox', n_head, 48 // n_head, inter, eps, rotary_pct,
                                                       theta, parallel, False)
    assert max_diff(ours, hf, tokens()) <= TOL


@pytest.mark.parametrize('n_head,inter,eps', [(3, None, 1e-5), (4, 120, 1e-3)])
def test_gpt2_logits_match_transformers(tmp_path, n_head, inter, eps):
    hf = hf_gpt2(seed=n_head, n_head=n_head, inter=inter, eps=eps)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(str(tmp_path)).eval()
    assert ours.config.tie_embeddings and ours.lm_head.weight is ours.transformer.wte.weight
    assert ours.config.mlp_width == (inter or 4 * 48)
    # the full context, so every learned position is used
    assert max_diff(ours, hf, tokens(T=64)) <= TOL


@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_load_pytorch_model_bin(tmp_path, arch):
    # transformers 5 only writes safetensors: convert its files to the legacy torch.save format
    from safetensors.torch import load_file
    hf = hf_neox(seed=5) if arch == 'gpt_neox' else hf_gpt2(seed=5)
    hf.save_pretrained(tmp_path)
    torch.save(load_file(str(tmp_path / 'model.safetensors')), tmp_path / 'pytorch_model.bin')
    os.remove(tmp_path / 'model.safetensors')
    ours = GPT.from_pretrained(str(tmp_path)).eval()
    assert max_diff(ours, hf, tokens()) <= TOL


def test_load_bare_gpt2_checkpoint(tmp_path):
    # the hub's 'gpt2' is a GPT2Model checkpoint: tensor names lack the 'transformer.' prefix
    hf = hf_gpt2(seed=6)
    hf.config.save_pretrained(tmp_path)
    from safetensors.torch import save_file
    save_file({k.removeprefix('transformer.'): v.contiguous() for k, v in hf.state_dict().items()
               if k != 'lm_head.weight'}, str(tmp_path / 'model.safetensors'))
    assert max_diff(GPT.from_pretrained(str(tmp_path)).eval(), hf, tokens()) <= TOL


# ------------------------------------------------------------------ round trip through the HF format
ROUND_TRIP = [dict(arch='gpt_neox', n_layer=2, n_head=4, n_embd=32, mlp_width=72, vocab_size=89, block_size=48,
                   layer_norm_eps=1e-3, rotary_pct=0.5, rotary_base=1000.0),
              dict(arch='gpt_neox', n_layer=2, n_head=2, n_embd=32, vocab_size=89, block_size=48,
                   parallel_residual=False, rotary_pct=1.0),
              dict(arch='gpt2', n_layer=2, n_head=4, n_embd=32, mlp_width=40, vocab_size=89, block_size=48,
                   layer_norm_eps=1e-4)]


@pytest.mark.parametrize('kw', ROUND_TRIP, ids=lambda kw: f"{kw['arch']}-{kw['n_head']}h")
def test_save_pretrained_round_trip(tmp_path, kw):
    torch.manual_seed(0)
    ours = perturb_(GPT(GPTConfig(**kw)), seed=1).eval()
    ours.save_pretrained(str(tmp_path), extra_meta={'note': 'round trip'})
    assert sorted(f for f in os.listdir(tmp_path)) == ['config.json', 'model.safetensors']  # no temp left over
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert max_diff(ours, hf, tokens(vocab=89, T=48)) <= TOL
    back = GPT.from_pretrained(str(tmp_path))
    assert back.config == ours.config
    sd0, sd1 = ours.state_dict(), back.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    with open(tmp_path / 'config.json') as f:
        assert json.load(f)['growing_sparse'] == {'note': 'round trip'}


# ------------------------------------------------------------------ generation: KV cache vs recomputation
def greedy_by_recomputation(model, idx, n):
    """Independent of generate(): re-run the whole (cropped) context for every new token."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx


@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_kv_cache_greedy_equals_recomputation(arch):
    # float64 so that a near tie between two logits cannot flip the argmax between the two code paths;
    # block_size 16 with 6 + 30 tokens: the cache covers the first 16, then the window slides
    torch.manual_seed(0)
    model = perturb_(GPT(GPTConfig(arch=arch, n_layer=2, n_head=4, n_embd=32, vocab_size=61, block_size=16)),
                     seed=2, std=0.3).double().eval()
    idx = tokens(vocab=61, B=3, T=6)
    with torch.no_grad():
        ref = greedy_by_recomputation(model, idx, 30)
        cached = model.generate(idx, 30, temperature=0, use_cache=True)
        uncached = model.generate(idx, 30, temperature=0, use_cache=False)
    assert torch.equal(cached, ref) and torch.equal(uncached, ref)
    assert len(set(ref[0, 6:].tolist())) > 3  # a model stuck on one token would make this test vacuous


def test_kv_cache_matches_transformers_generate(tmp_path):
    hf = hf_neox(seed=3, block=64)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(str(tmp_path), dtype=torch.float64).eval()
    idx = tokens(B=1, T=5)
    with torch.no_grad():
        out = ours.generate(idx, 40, temperature=0)
        ref = hf.double().generate(idx, max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref)


@pytest.mark.parametrize('chunks', [(8,) + (1,) * 16, (5, 7, 1, 11)], ids=['prefill+1s', 'chunked'])
def test_kv_cache_logits_match_full_forward(chunks):
    # the cached path's logits themselves, not only their argmax; chunks of several tokens appended to a
    # non-empty cache need the bottom-right aligned causal mask
    from model import KVCache
    torch.manual_seed(0)
    model = perturb_(GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=61, block_size=24)), seed=4).eval()
    idx = tokens(vocab=61, B=2, T=24)
    with torch.no_grad():
        full, _ = model(idx)
        cache, steps, t = KVCache(model.config, 2, 'cpu', torch.float32), [], 0
        for n in chunks:
            steps.append(model(idx[:, t:t + n], kv_cache=cache)[0])
            t += n
    assert t == 24 and cache.pos == 24
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5


def test_sampling_reproducible_and_top_k_1_is_greedy():
    torch.manual_seed(0)
    model = perturb_(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=31, block_size=32)), seed=5).eval()
    idx = tokens(vocab=31, B=2, T=4)
    gen = lambda s, **kw: model.generate(idx, 12, generator=torch.Generator().manual_seed(s), **kw)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(gen(1, temperature=1.0), gen(1, temperature=1.0))
        assert not torch.equal(gen(1, temperature=2.0), gen(2, temperature=2.0))
        assert torch.equal(gen(3, temperature=1.0, top_k=1), model.generate(idx, 12, temperature=0))


# ------------------------------------------------------------------ sample_next filters
def drawn(logits, n=4000, **kw):
    g = torch.Generator().manual_seed(0)
    return sample_next(logits.expand(n, -1).clone(), generator=g, **kw).flatten()


def test_sample_next_top_k():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, 1.0, top_k=1, generator=g), logits.argmax(-1, keepdim=True))
    assert torch.equal(sample_next(logits, 0), logits.argmax(-1, keepdim=True))
    row = torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0, 2.9]])
    assert set(drawn(row, top_k=3).tolist()) == {1, 3, 5}
    assert set(drawn(row, top_k=100).tolist()) == set(range(6))  # k beyond the vocab keeps everything
    assert torch.equal(row, torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0, 2.9]]))  # input not modified


# probabilities in a scrambled order, so the filter must map sorted positions back to token ids
PROBS = {4: 0.5, 0: 0.3, 2: 0.15, 1: 0.04, 3: 0.01}


@pytest.mark.parametrize('top_p,kept', [(0.4, {4}), (0.75, {4, 0}), (0.9, {4, 0, 2}), (0.97, {4, 0, 2, 1}),
                                        (1.0, {4, 0, 2, 1, 3}), (None, {4, 0, 2, 1, 3})])
def test_sample_next_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    logits = torch.log(torch.tensor([[PROBS[i] for i in range(5)]]))
    # 20000 draws: a kept token of renormalized probability >= 0.01 is missed with probability < 1e-80
    draws = drawn(logits, n=20000, top_p=top_p)
    assert set(draws.tolist()) == kept
    # what is kept is renormalized, not reshaped: P(token 4 | kept) = 0.5 / sum(kept)
    p4 = (draws == 4).float().mean().item()
    assert abs(p4 - 0.5 / sum(PROBS[i] for i in kept)) < 0.02


def test_sample_next_top_p_with_temperature_and_top_k():
    # temperature comes first: at 0.5, p ~ probs^2 gives token 4 mass 0.25/0.3642 = 0.686, so top_p=0.6 keeps
    # only token 4 (at temperature 1 it keeps {4, 0}); top_k=2 then top_p=0.99 keeps {4, 0}
    logits = torch.log(torch.tensor([[PROBS[i] for i in range(5)]]))
    assert set(drawn(logits, temperature=0.5, top_p=0.6).tolist()) == {4}
    assert set(drawn(logits, temperature=1.0, top_p=0.6).tolist()) == {4, 0}
    assert set(drawn(logits, top_k=2, top_p=0.99).tolist()) == {4, 0}


# ------------------------------------------------------------------ parameter counts and presets
def hf_counts(hf):
    named = dict(hf.named_parameters())  # tied weights appear once
    emb = ('embed_in', 'embed_out', 'wte', 'wpe', 'lm_head')
    total = sum(p.numel() for p in named.values())
    non_emb = sum(p.numel() for n, p in named.items() if n.split('.')[-2] not in emb)
    linear = sum(p.numel() for n, p in named.items() if p.dim() == 2 and ('.h.' in n or '.layers.' in n))
    if not hf.config.tie_word_embeddings:
        linear += hf.get_output_embeddings().weight.numel()
    return dict(total=total, non_embedding=non_emb, linear=linear)


@pytest.mark.parametrize('make', [lambda: hf_neox(n_head=3, inter=72), lambda: hf_gpt2(n_head=4, inter=120)],
                         ids=['gpt_neox', 'gpt2'])
def test_param_counts_match_transformers(tmp_path, make):
    hf = make()
    hf.save_pretrained(tmp_path)
    assert GPT.from_pretrained(str(tmp_path)).param_counts() == hf_counts(hf)


def meta_model(name, **kw):
    with torch.device('meta'):  # shapes only: no memory, no init time
        return GPT(preset_config(name, **kw))


def test_param_counts_published():
    # Pythia paper, Table 1 (total / non-embedding); 12d^2+13d per layer + final LayerNorm 2d, embeddings 2Vd
    assert meta_model('pythia-70m').param_counts() == dict(
        total=70_426_624, non_embedding=18_915_328, linear=6 * 12 * 512 ** 2 + 50304 * 512)
    assert meta_model('EleutherAI/pythia-160m-deduped').param_counts()['total'] == 162_322_944
    assert meta_model('pythia-160m').param_counts()['non_embedding'] == 85_056_000
    # GPT-2 small with OpenAI's unpadded vocabulary: 124,439,808 (tied head counted once)
    c = meta_model('gpt2', vocab_size=50257).param_counts()
    assert c['total'] == 124_439_808 and c['linear'] == 12 * 12 * 768 ** 2


@pytest.mark.parametrize('name,shape', [
    ('pythia-14m', (6, 128, 4)), ('pythia-70m', (6, 512, 8)), ('pythia-160m', (12, 768, 12)),
    ('pythia-410m', (24, 1024, 16)), ('pythia-1b', (16, 2048, 8)), ('pythia-1.4b', (24, 2048, 16)),
    ('pythia-2.8b', (32, 2560, 32)), ('pythia-6.9b', (32, 4096, 32)), ('pythia-12b', (36, 5120, 40)),
    ('gpt2', (12, 768, 12)), ('gpt2-medium', (24, 1024, 16)), ('gpt2-large', (36, 1280, 20)),
    ('gpt2-xl', (48, 1600, 25))])
def test_presets(name, shape):
    c = preset_config(name)
    assert (c.n_layer, c.n_embd, c.n_head) == shape and c.mlp_width == 4 * c.n_embd
    if name.startswith('gpt2'):
        assert (c.arch, c.block_size, c.tie_embeddings, c.rotary_pct, c.gelu) == ('gpt2', 1024, True, 0.0, 'tanh')
    else:
        assert (c.arch, c.block_size, c.tie_embeddings, c.rotary_pct, c.gelu, c.parallel_residual) == (
            'gpt_neox', 2048, False, 0.25, 'erf', True)
    with pytest.raises(ValueError, match='unknown preset'):
        preset_config('pythia-7b')


# ------------------------------------------------------------------ tokenizers, offline
def sample_texts():
    with open(os.path.join(SHARED, 'tinyshakespeare', 'input.txt')) as f:
        shakespeare = f.read(20000)
    with lzma.open(os.path.join(SHARED, 'enwiki', 'enwiki_val.jsonl.xz'), 'rt') as f:
        wiki = [json.loads(next(f))['text'][:5000] for _ in range(4)]
    return [shakespeare, *wiki]


@pytest.fixture(scope='module')
def texts():
    if not os.path.isdir(SHARED):
        pytest.skip(f'shared data not found at {SHARED}')
    return sample_texts()


def test_tokenizer_gpt2(texts):
    tok = get_tokenizer('gpt2')
    assert tok.encode('hello world') == [31373, 995] and (tok.eot, tok.vocab_size) == (50256, 50257)
    assert tok.encode('<|endoftext|>') != [50256]  # ordinary text, never the special token
    for t in texts:
        assert tok.decode(tok.encode(t)) == t


def test_tokenizer_neox(texts):
    tok = get_tokenizer('gpt-neox-20b', path=os.path.join(SHARED, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json'))
    assert tok.encode('hello world') == [25521, 1533] and tok.eot == 0 and tok.vocab_size == 50277
    for t in texts:
        assert tok.decode(tok.encode(t)) == t
    with pytest.raises(FileNotFoundError, match='does not exist'):
        get_tokenizer('gpt-neox-20b', path='/nonexistent/tokenizer.json')


def test_tokenizer_char(texts):
    chars = ''.join(sorted(set(''.join(texts))))
    tok = get_tokenizer('char', chars=chars)
    assert tok.vocab_size == len(chars) + 1 and tok.eot == len(chars)
    for t in texts:
        ids = tok.encode(t)
        assert len(ids) == len(t) and tok.decode(ids + [tok.eot]) == t
    with pytest.raises(ValueError, match='not in this char'):
        get_tokenizer('char', chars='abc').encode('abd')


# ------------------------------------------------------------------ load errors
@pytest.fixture
def neox_dir(tmp_path):
    d = tmp_path / 'm'
    hf_neox(hidden=32, n_head=2).save_pretrained(d)
    return d


def edit_config(d, **changes):
    with open(d / 'config.json') as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(d / 'config.json', 'w') as f:
        json.dump(cfg, f)


def test_error_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match='has no config.json'):
        GPT.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='no such model directory'):
        GPT.from_pretrained(str(tmp_path / 'nope'))


def test_error_missing_weights(neox_dir):
    os.remove(neox_dir / 'model.safetensors')
    with pytest.raises(FileNotFoundError, match=r'no \*\.safetensors or pytorch_model\*\.bin'):
        GPT.from_pretrained(str(neox_dir))


def test_error_unknown_model_type(tmp_path):
    with open(tmp_path / 'config.json', 'w') as f:
        json.dump(dict(model_type='llama', hidden_size=32, num_hidden_layers=2, num_attention_heads=2), f)
    with pytest.raises(ValueError, match="model_type 'llama' is not supported"):
        GPT.from_pretrained(str(tmp_path))


def test_error_shape_mismatch(neox_dir):
    edit_config(neox_dir, hidden_size=64)  # the weights are 32 wide
    with pytest.raises(ValueError, match=r'has shape \(97, 32\) but config.json implies \(97, 64\)'):
        GPT.from_pretrained(str(neox_dir))


def test_error_missing_tensor(neox_dir):
    from safetensors.torch import load_file, save_file
    sd = load_file(str(neox_dir / 'model.safetensors'))
    del sd['gpt_neox.layers.1.mlp.dense_4h_to_h.weight']
    save_file(sd, str(neox_dir / 'model.safetensors'))
    with pytest.raises(ValueError, match=r"missing \['transformer.h.1.mlp.c_proj.weight'\]"):
        GPT.from_pretrained(str(neox_dir))


@pytest.mark.parametrize('change,message', [
    (dict(rope_parameters=dict(rope_type='linear', factor=2.0, rope_theta=10000.0, partial_rotary_factor=0.25)),
     "rope type 'linear' is not supported"),
    # transformers 4.x spelling: {'type': 'linear'} next to the flat rotary keys
    (dict(rope_parameters=None, rope_scaling=dict(type='linear', factor=2.0), rotary_pct=0.25),
     "rope type 'linear' is not supported"),
    (dict(attention_bias=False), 'attention_bias=False is not supported'),
    (dict(hidden_act='relu'), "hidden_act='relu' is not supported"),
])
def test_error_unsupported_option(neox_dir, change, message):
    edit_config(neox_dir, **change)
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(str(neox_dir))


@pytest.mark.parametrize('key,value', [('scale_attn_by_inverse_layer_idx', True), ('tie_word_embeddings', False),
                                       ('scale_attn_weights', False)])
def test_error_unsupported_gpt2_option(tmp_path, key, value):
    hf_gpt2(hidden=32, n_head=2).save_pretrained(tmp_path)
    edit_config(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=f'GPT-2 option {key}={value} is not supported'):
        GPT.from_pretrained(str(tmp_path))


def test_error_sequence_too_long():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=11, block_size=8))
    with pytest.raises(ValueError, match='exceeds block_size=8'):
        model(torch.zeros(1, 9, dtype=torch.long))
