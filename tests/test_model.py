"""
model.py and hf_io.py against transformers (logits both ways through the HF format, max |ours - HF| <= 1e-4 in
float32; parameter counts), exact dtypes, the chunked loss against plain cross-entropy, the KV cache against
recomputation, sampling filters, presets, tokenizers (offline), load_model's checkpoints and every load error.
CPU, tiny shapes.
"""
import json
import lzma
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA

import files
from data.tokenizer import get_tokenizer
from hf_io import check_replaceable, from_pretrained, load_model, save_pretrained
from model import DTYPES, GPT, GPTConfig, chunked_cross_entropy, preset_config, sample_next

torch.set_num_threads(1)  # tiny models: threads only add overhead, on a busy machine a lot
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
transformers = pytest.importorskip('transformers')
TOL = 1e-4  # max abs logit difference vs transformers, float32
NEOX_JSON = os.path.join(SHARED_DATA, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')


def perturb_(model, seed, std=0.1):
    """Every parameter off its init (biases, LayerNorm gains too), so that nothing is tested at a zero or a one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def hf_neox(seed=0, hidden=48, n_head=3, inter=72, rotary_pct=0.25, parallel=True, eps=1e-5, theta=10000.0):
    cfg = transformers.GPTNeoXConfig(
        vocab_size=97, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=n_head, intermediate_size=inter,
        max_position_embeddings=64, layer_norm_eps=eps, use_parallel_residual=parallel, tie_word_embeddings=False,
        rope_parameters=dict(rope_type='default', rope_theta=theta, partial_rotary_factor=rotary_pct))
    torch.manual_seed(seed)
    return perturb_(transformers.GPTNeoXForCausalLM(cfg), seed).eval()


def hf_gpt2(seed=0, hidden=48, n_head=3, inter=None, eps=1e-5):
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=hidden, n_layer=2, n_head=n_head,
                                  n_inner=inter, layer_norm_epsilon=eps, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return perturb_(transformers.GPT2LMHeadModel(cfg), seed).eval()


def tokens(vocab=97, B=2, T=40, seed=0):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def max_diff(ours, hf, idx):
    with torch.no_grad():
        return (ours(idx)[0] - hf(idx).logits).abs().max().item()


def hf_counts(hf):
    named = dict(hf.named_parameters())  # tied weights appear once
    total = sum(p.numel() for p in named.values())
    non_emb = sum(p.numel() for n, p in named.items()
                  if n.split('.')[-2] not in ('embed_in', 'embed_out', 'wte', 'wpe', 'lm_head'))
    linear = sum(p.numel() for n, p in named.items() if p.dim() == 2 and ('.h.' in n or '.layers.' in n))
    return dict(total=total, non_embedding=non_emb,
                linear=linear + (0 if hf.config.tie_word_embeddings else hf.get_output_embeddings().weight.numel()))


# ------------------------------------------------------------------ transformers, both directions
@pytest.mark.parametrize('kw', [
    dict(),                                                                   # Pythia's: 16-wide heads, 4 rotary dims
    dict(rotary_pct=1.0, parallel=False, n_head=6, eps=1e-3, inter=200, theta=500.0),  # sequential, MLP not 4x
    dict(rotary_pct=1.0, n_head=12, eps=1e-6, inter=100)], ids=['pythia', 'sequential', '12-heads-of-4'])
def test_neox_logits_and_counts_match_transformers(tmp_path, kw):
    """A GPTNeoX directory loads with every option read (heads, rotary share and base, residual, eps, MLP width)
    and gives transformers' logits and parameter counts."""
    hf = hf_neox(seed=len(kw), **kw)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(str(tmp_path)).eval()
    c, want = ours.config, dict(dict(n_head=3, inter=72, rotary_pct=0.25, parallel=True, eps=1e-5, theta=1e4), **kw)
    assert (c.arch, c.n_head, c.head_size, c.mlp_width, c.layer_norm_eps, c.rotary_pct, c.rotary_base,
            c.parallel_residual, c.tie_embeddings) == ('gpt_neox', want['n_head'], 48 // want['n_head'],
                                                       want['inter'], want['eps'], want['rotary_pct'], want['theta'],
                                                       want['parallel'], False)
    assert max_diff(ours, hf, tokens()) <= TOL
    assert ours.param_counts() == hf_counts(hf)


@pytest.mark.parametrize('n_head,inter,eps', [(3, None, 1e-5), (4, 120, 1e-3)])
def test_gpt2_logits_and_counts_match_transformers(tmp_path, n_head, inter, eps):
    """A GPT-2 directory (Conv1D weights, QKV grouped [q | k | v]) loads tied and gives transformers' logits over
    every learned position, and its parameter counts."""
    hf = hf_gpt2(seed=n_head, n_head=n_head, inter=inter, eps=eps)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(str(tmp_path)).eval()
    assert ours.lm_head.weight is ours.transformer.wte.weight and ours.config.mlp_width == (inter or 4 * 48)
    assert max_diff(ours, hf, tokens(T=64)) <= TOL
    assert ours.param_counts() == hf_counts(hf)


@pytest.mark.parametrize('kind', ['neox-bin', 'gpt2-bin', 'gpt2-bare'])
def test_legacy_checkpoints_load(tmp_path, kind):
    """pytorch_model.bin files (transformers 5 writes safetensors only: converted here), and the hub's 'gpt2', a bare
    GPT2Model whose tensor names lack 'transformer.', give transformers' logits."""
    from safetensors.torch import load_file, save_file
    hf = hf_neox(seed=5) if kind == 'neox-bin' else hf_gpt2(seed=5)
    hf.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / 'model.safetensors'))
    os.remove(tmp_path / 'model.safetensors')
    if kind == 'gpt2-bare':
        save_file({k.removeprefix('transformer.'): v for k, v in sd.items() if k != 'lm_head.weight'},
                  str(tmp_path / 'model.safetensors'))
    else:
        torch.save(sd, tmp_path / 'pytorch_model.bin')
    assert max_diff(from_pretrained(str(tmp_path)).eval(), hf, tokens()) <= TOL


@pytest.mark.parametrize('kw', [
    dict(arch='gpt_neox', mlp_width=72, layer_norm_eps=1e-3, rotary_pct=0.5, rotary_base=1000.0),
    dict(arch='gpt_neox', n_head=2, parallel_residual=False, rotary_pct=1.0),
    dict(arch='gpt2', mlp_width=40, layer_norm_eps=1e-4)], ids=['neox', 'neox-sequential', 'gpt2'])
def test_save_pretrained_round_trip(tmp_path, kw):
    """save_pretrained writes what AutoModelForCausalLM loads to our logits and from_pretrained to the same config
    and bit-identical weights, with the provenance record in config.json and no temporary left beside it."""
    torch.manual_seed(0)
    ours = perturb_(GPT(GPTConfig(**dict(dict(n_layer=2, n_head=4, n_embd=32, vocab_size=89, block_size=48), **kw))),
                    seed=1).eval()
    save_pretrained(ours, str(tmp_path / 'm'), extra_meta={'note': 'round trip'})
    assert os.listdir(tmp_path) == ['m'] and sorted(os.listdir(tmp_path / 'm')) == ['config.json', 'model.safetensors']
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'm')).eval()
    assert max_diff(ours, hf, tokens(vocab=89, T=48)) <= TOL
    back = from_pretrained(str(tmp_path / 'm'))
    sd0, sd1 = ours.state_dict(), back.state_dict()
    assert back.config == ours.config and sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert json.loads((tmp_path / 'm' / 'config.json').read_text())['growing_sparse'] == {'note': 'round trip'}


def test_weights_load_and_save_exactly_in_their_dtype(tmp_path):
    """float64 weights (digits float32 cannot hold) load bit for bit as float64, not through float32, and as stored
    when dtype is None; bf16 saves as bf16 and loads back bit for bit, or cast once into any dtype asked for."""
    from safetensors.torch import load_file
    m = perturb_(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=32, block_size=16)).double(), 0, 1e-9)
    save_pretrained(m, str(tmp_path / 'f64'))
    for dtype in (torch.float64, None):
        loaded = from_pretrained(str(tmp_path / 'f64'), dtype).state_dict()
        assert all(v.dtype == torch.float64 and torch.equal(v, m.state_dict()[k]) for k, v in loaded.items())
    save_pretrained(m.to(torch.bfloat16), str(tmp_path / 'bf16'))
    assert {v.dtype for v in load_file(str(tmp_path / 'bf16' / 'model.safetensors')).values()} == {torch.bfloat16}
    assert json.loads((tmp_path / 'bf16' / 'config.json').read_text())['torch_dtype'] == 'bfloat16'
    for dtype in (None, torch.float32):
        sd = load_model(str(tmp_path / 'bf16'), dtype)[0].state_dict()
        assert all(torch.equal(v, m.state_dict()[k].to(dtype or torch.bfloat16)) for k, v in sd.items())
    assert set(DTYPES) == {'float32', 'bfloat16', 'float16', 'float64'}


# ------------------------------------------------------------------ the chunked loss
def plain_loss(h, w, targets, reduction):
    return F.cross_entropy((h @ w.t()).float(), targets, ignore_index=-1, reduction=reduction)


@pytest.mark.parametrize('reduction', ['mean', 'none'])
def test_chunked_loss_equals_plain_cross_entropy(reduction):
    """Rows in chunks of 7 (30 rows, vocab 37: neither a multiple of it), two targets ignored: the loss and the
    gradients of h and w equal F.cross_entropy's of the whole float64 logits (1e-12) and of the plain float32 path
    (1e-5), for any upstream gradient."""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(30, 16, generator=g, dtype=torch.float64), torch.randn(37, 16, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 37, (30,), generator=g)
    targets[[3, 17]] = -1
    upstream = torch.randn(30 if reduction == 'none' else (), generator=g, dtype=torch.float64)
    results = []
    for f in (lambda a, b: chunked_cross_entropy(a, b, targets, reduction, chunk=7),
              lambda a, b: F.cross_entropy(a @ b.t(), targets, ignore_index=-1, reduction=reduction),
              lambda a, b: plain_loss(a, b, targets, reduction)):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = f(hh, ww)
        results.append((loss, *torch.autograd.grad((loss * upstream).sum(), (hh, ww))))
    got, exact, plain = results
    assert got[0].dtype == torch.float64 and got[0].shape == exact[0].shape
    assert reduction == 'mean' or not got[0][[3, 17]].any()  # ignored rows: no loss
    for a, b, c in zip(got, exact, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a, c.to(a.dtype), rtol=1e-5, atol=1e-6)


def tiny(arch='gpt_neox', seed=0, **kw):
    torch.manual_seed(seed)
    c = dict(n_layer=2, n_head=4, n_embd=32, vocab_size=61, block_size=24, arch=arch)
    return perturb_(GPT(GPTConfig(**dict(c, **kw))), seed=seed + 1).eval()


def test_chunked_loss_under_autocast_equals_the_plain_path():
    """Under bf16 autocast GPT's loss and every gradient equal those of the plain path, lm_head(h) in bf16 followed
    by F.cross_entropy(logits.float()); without targets the forward still returns the whole (bf16) logits."""
    m = tiny().train()
    idx, targets = tokens(61, B=2, T=24, seed=1), tokens(61, B=2, T=24, seed=2)
    targets[0, :5] = -1
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits, loss = m(idx, targets)
        assert logits is None
        grads = torch.autograd.grad(loss, list(m.parameters()))
        logits, none = m(idx)
        assert none is None and logits.shape == (2, 24, 61) and logits.dtype == torch.bfloat16
        ref = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        ref_grads = torch.autograd.grad(ref, list(m.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    for a, b in zip(grads, ref_grads):  # bf16 roundings of d loss / d logits may differ by an ulp
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compiled_loss_matches_eager():
    """torch.compile captures the chunked loss, forward and backward, in one graph (fullgraph): the mean loss, every
    gradient and the per-token losses (reduction='none', as evaluation asks) equal eager mode's."""
    m = tiny(n_layer=1)
    idx, targets = tokens(61, B=2, T=24, seed=1), tokens(61, B=2, T=24, seed=2)
    targets[1, 3] = -1
    compiled = torch.compile(m, backend='aot_eager', fullgraph=True)
    out = []
    for model in (compiled, m):
        loss = model(idx, targets)[1]
        out.append((loss, *torch.autograd.grad(loss, list(m.parameters()))))
        with torch.no_grad():
            out[-1] += (model(idx, targets, reduction='none')[1],)
    assert out[0][-1].shape == (2, 24) and out[0][-1][1, 3] == 0
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ generation
@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_greedy_generation_slides_the_window_past_block_size(arch):
    """Greedy generation equals re-running the last block_size tokens for every new one, also once the context
    outgrows block_size (6 + 30 tokens, block 16); float64, so that a near tie cannot flip an argmax."""
    model = perturb_(tiny(arch, block_size=16).double(), 2, 0.2)
    idx = tokens(61, B=3, T=6)
    ref = idx
    with torch.no_grad():
        for _ in range(30):
            ref = torch.cat((ref, model(ref[:, -16:])[0][:, -1].argmax(-1, keepdim=True)), dim=1)
        assert torch.equal(model.generate(idx, 30, temperature=0), ref)
    assert len(set(ref[0, 6:].tolist())) > 3  # a model stuck on one token would make this vacuous


def test_generate_matches_transformers_generate(tmp_path):
    """Greedy generation (float64) gives transformers' generate token for token."""
    hf = hf_neox(seed=3)
    hf.save_pretrained(tmp_path)
    idx = tokens(B=1, T=5)
    with torch.no_grad():
        out = from_pretrained(str(tmp_path), dtype=torch.float64).eval().generate(idx, 40, temperature=0)
        ref = hf.double().generate(idx, max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref)


def test_sampling_reproducible_top_k_1_greedy_and_vocab_size_respected():
    """The same generator seed draws the same tokens, another seed others; top_k=1 is greedy; vocab_size keeps every
    draw below it."""
    model, idx = tiny(n_layer=1, vocab_size=31, block_size=32), tokens(31, B=2, T=4)
    gen = lambda s, **kw: model.generate(idx, 12, generator=torch.Generator().manual_seed(s), **kw)
    assert torch.equal(gen(1, temperature=1.0), gen(1, temperature=1.0))
    assert not torch.equal(gen(1, temperature=2.0), gen(2, temperature=2.0))
    assert torch.equal(gen(3, top_k=1), model.generate(idx, 12, temperature=0))
    assert int(gen(4, temperature=5.0, vocab_size=7)[:, 4:].max()) < 7


# ------------------------------------------------------------------ sample_next filters
def drawn(logits, n=4000, **kw):
    return sample_next(logits.expand(n, -1).clone(), generator=torch.Generator().manual_seed(0), **kw).flatten()


def test_sample_next_top_k():
    """top_k keeps the k largest logits (all of them when k exceeds the vocabulary) and leaves its input alone."""
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next(logits, 1.0, top_k=1), logits.argmax(-1, keepdim=True))
    assert torch.equal(sample_next(logits, 0), logits.argmax(-1, keepdim=True))
    row = torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0, 2.9]])
    assert set(drawn(row, top_k=3).tolist()) == {1, 3, 5} and set(drawn(row, top_k=100).tolist()) == set(range(6))
    assert torch.equal(row, torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0, 2.9]]))


PROBS = {4: 0.5, 0: 0.3, 2: 0.15, 1: 0.04, 3: 0.01}  # scrambled: the filter maps sorted positions back to ids


@pytest.mark.parametrize('top_p,kept', [(0.4, {4}), (0.75, {4, 0}), (0.9, {4, 0, 2}), (0.97, {4, 0, 2, 1}),
                                        (1.0, {4, 0, 2, 1, 3}), (None, {4, 0, 2, 1, 3})])
def test_sample_next_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    """The smallest set of tokens whose probability reaches top_p, renormalized (P(4 | kept) = 0.5 / sum(kept)), not
    reshaped; 20000 draws miss a kept token of probability >= 0.01 with probability < 1e-80."""
    draws = drawn(torch.log(torch.tensor([[PROBS[i] for i in range(5)]])), n=20000, top_p=top_p)
    assert set(draws.tolist()) == kept
    assert abs((draws == 4).float().mean().item() - 0.5 / sum(PROBS[i] for i in kept)) < 0.02


def test_sample_next_top_p_after_temperature_and_top_k():
    """Temperature comes first: at 0.5 token 4 has 0.25/0.3642 = 0.686, so top_p=0.6 keeps it alone (at temperature
    1, {4, 0}); top_k=2 then top_p=0.99 keeps {4, 0}."""
    logits = torch.log(torch.tensor([[PROBS[i] for i in range(5)]]))
    assert set(drawn(logits, temperature=0.5, top_p=0.6).tolist()) == {4}
    assert set(drawn(logits, temperature=1.0, top_p=0.6).tolist()) == {4, 0}
    assert set(drawn(logits, top_k=2, top_p=0.99).tolist()) == {4, 0}


# ------------------------------------------------------------------ parameter counts and presets
def meta(name, **kw):
    with torch.device('meta'):  # shapes only: no memory, no init time
        return GPT(preset_config(name, **kw))


def test_param_counts_published_and_presets():
    """Pythia paper Table 1 (total / non-embedding: 12d^2+13d per layer + final LayerNorm, embeddings 2Vd), GPT-2
    small's 124,439,808 with OpenAI's vocabulary (tied head once); every preset's shape and family defaults."""
    assert meta('pythia-70m').param_counts() == dict(total=70_426_624, non_embedding=18_915_328,
                                                    linear=6 * 12 * 512 ** 2 + 50304 * 512)
    assert meta('EleutherAI/pythia-160m-deduped').param_counts()['total'] == 162_322_944
    assert meta('pythia-160m').param_counts()['non_embedding'] == 85_056_000
    c = meta('gpt2', vocab_size=50257).param_counts()
    assert c['total'] == 124_439_808 and c['linear'] == 12 * 12 * 768 ** 2
    shapes = {'pythia-14m': (6, 128, 4), 'pythia-31m': (6, 256, 8), 'pythia-70m': (6, 512, 8),
              'pythia-160m': (12, 768, 12), 'pythia-410m': (24, 1024, 16), 'pythia-1b': (16, 2048, 8),
              'pythia-1.4b': (24, 2048, 16), 'pythia-2.8b': (32, 2560, 32), 'pythia-6.9b': (32, 4096, 32),
              'pythia-12b': (36, 5120, 40), 'gpt2': (12, 768, 12), 'gpt2-medium': (24, 1024, 16),
              'gpt2-large': (36, 1280, 20), 'gpt2-xl': (48, 1600, 25)}
    for name, shape in shapes.items():
        c = preset_config(name)
        assert (c.n_layer, c.n_embd, c.n_head) == shape and c.mlp_width == 4 * c.n_embd
        assert (c.arch, c.block_size, c.tie_embeddings, c.rotary_pct, c.gelu, c.parallel_residual) == (
            ('gpt2', 1024, True, 0.0, 'tanh', False) if name.startswith('gpt2') else
            ('gpt_neox', 2048, False, 0.25, 'erf', True))
    assert preset_config('pythia-6.9b').vocab_size == 50432 and preset_config('pythia-12b').vocab_size == 50688
    with pytest.raises(ValueError, match='unknown preset'):
        preset_config('pythia-7b')


# ------------------------------------------------------------------ tokenizers, offline
@pytest.mark.parametrize('name', ['gpt2', 'gpt-neox-20b', 'char'])
def test_tokenizers_round_trip_offline(name):
    """Each tokenizer's known ids, end-of-text and size, '<|endoftext|>' in a text read as text, and an exact round
    trip of Shakespeare and enwiki text; a missing tokenizer file and a character outside a char alphabet fail."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f'shared data not found at {SHARED_DATA}')
    with open(os.path.join(SHARED_DATA, 'tinyshakespeare', 'input.txt')) as f:
        texts = [f.read(20000)]
    with lzma.open(os.path.join(SHARED_DATA, 'enwiki', 'enwiki_val.jsonl.xz'), 'rt') as f:
        texts += [json.loads(next(f))['text'][:5000] for _ in range(4)]
    chars = ''.join(sorted(set(''.join(texts))))
    tok = get_tokenizer(name, path=NEOX_JSON if name == 'gpt-neox-20b' else None, chars=chars)
    known = {'gpt2': ([31373, 995], 50256, 50257), 'gpt-neox-20b': ([25521, 1533], 0, 50277),
             'char': ([chars.index(c) for c in 'hello world'], len(chars), len(chars) + 1)}[name]
    assert (tok.encode('hello world'), tok.eot, tok.vocab_size) == known
    assert all(tok.decode(tok.encode(t)) == t for t in texts)
    if name == 'char':
        with pytest.raises(ValueError, match='not in this char'):
            get_tokenizer('char', chars='abc').encode('abd')
    else:
        assert tok.encode('<|endoftext|>') != [tok.eot]
    if name == 'gpt-neox-20b':
        with pytest.raises(FileNotFoundError, match='could not load the tokenizer'):
            get_tokenizer('gpt-neox-20b', path='/nonexistent/tokenizer.json')


# ------------------------------------------------------------------ load_model: train.py checkpoints
def test_load_model_verifies_the_checkpoint_checksum(tmp_path):
    """A checkpoint with train.py's checksum (files.checksum of everything else) loads, from its path or its
    out_dir; one changed weight makes it a one-line 'damaged' error naming the file; an older checkpoint without a
    checksum loads; a truncated file or a dict train.py did not write are refused by name."""
    m = tiny()
    ckpt = dict(model_args=vars(m.config), model=m.state_dict(), iter_num=3, config={'data_dir': 'x'})
    torch.save(dict(ckpt, checksum=files.checksum(ckpt)), tmp_path / 'ckpt.pt')
    for init_from in (tmp_path, tmp_path / 'ckpt.pt'):
        model, source = load_model(str(init_from))
        assert source['checkpoint']['iter_num'] == 3 and source['path'] == str(tmp_path / 'ckpt.pt')
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in model.state_dict().items())
    damaged = dict(ckpt, model=dict(ckpt['model']), checksum=files.checksum(ckpt))
    damaged['model']['transformer.ln_f.bias'] = damaged['model']['transformer.ln_f.bias'] + 1e-3
    torch.save(damaged, tmp_path / 'ckpt.pt')
    with pytest.raises(ValueError, match=r'ckpt.pt is damaged \(checksum mismatch\): restore it or resume') as e:
        load_model(str(tmp_path))
    assert str(tmp_path / 'ckpt.pt') in str(e.value) and '\n' not in str(e.value)
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    assert load_model(str(tmp_path))[1]['checkpoint']['iter_num'] == 3
    (tmp_path / 'ckpt.pt').write_bytes((tmp_path / 'ckpt.pt').read_bytes()[:1000])
    with pytest.raises(ValueError, match='is not a readable checkpoint'):
        load_model(str(tmp_path))
    torch.save({'weights': 1}, tmp_path / 'ckpt.pt')
    with pytest.raises(ValueError, match='not a checkpoint written by train.py'):
        load_model(str(tmp_path))


# ------------------------------------------------------------------ save_pretrained's guards
def test_save_pretrained_refuses_a_larger_tokenizer_and_check_replaceable(tmp_path):
    """A tokenizer with more ids than the model (its ids would index past the embedding) is refused naming both,
    before anything is written; check_replaceable lets a new, empty or our own model directory be replaced, never
    the working directory, a parent, a file, other files or a model this codebase did not write."""
    tok = get_tokenizer('char', chars='abcdefghij')  # 11 ids
    with pytest.raises(ValueError, match=r"char tokenizer \(char, 11 ids\) use different tokenizers: the model's "
                                         "vocabulary of 8 ids"):
        save_pretrained(tiny(vocab_size=8), str(tmp_path / 'm'), tokenizer=tok)
    assert not os.listdir(tmp_path)
    save_pretrained(tiny(), str(tmp_path / 'ours'), extra_meta={'note': 'x'})
    (tmp_path / 'empty').mkdir()
    for ok in ('new', 'empty', 'ours'):
        check_replaceable(str(tmp_path / ok))
    hf_neox().save_pretrained(tmp_path / 'foreign')
    (tmp_path / 'a_file').write_text('x')
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'n.txt').write_text('mine')
    for bad, why in (('.', 'the working directory'), (tmp_path / 'a_file', 'is a file'),
                     (tmp_path / 'notes', r'holds other files \(n.txt\)'),
                     (tmp_path / 'foreign', 'a model this codebase did not write')):
        with pytest.raises(ValueError, match=why):
            check_replaceable(str(bad))


# ------------------------------------------------------------------ load errors: one line naming the file
@pytest.fixture
def neox_dir(tmp_path):
    hf_neox(hidden=32, n_head=2).save_pretrained(tmp_path / 'm')
    return tmp_path / 'm'


def edit_config(d, **changes):
    cfg = json.loads((d / 'config.json').read_text())
    (d / 'config.json').write_text(json.dumps({**cfg, **changes}))


def remove_tensor(d):
    from safetensors.torch import load_file, save_file
    sd = load_file(str(d / 'model.safetensors'))
    del sd['gpt_neox.layers.1.mlp.dense_4h_to_h.weight']
    save_file(sd, str(d / 'model.safetensors'))


LOAD_ERRORS = [
    (lambda d: os.remove(d / 'config.json'), FileNotFoundError, 'no such model directory'),
    (lambda d: os.remove(d / 'model.safetensors'), FileNotFoundError, r'no \*\.safetensors or pytorch_model\*\.bin'),
    (lambda d: (d / 'model.safetensors').write_bytes(b'not safetensors'), ValueError, 'model.safetensors cannot be'),
    (lambda d: (d / 'config.json').write_text('{"model_type": "gpt_neox",'), ValueError, r'config.json is damaged'),
    (lambda d: (d / 'config.json').write_text('[1, 2]'), ValueError, 'config.json is not a JSON object'),
    (lambda d: edit_config(d, model_type='llama'), ValueError, "model_type 'llama' is not supported"),
    (lambda d: edit_config(d, hidden_size=None), ValueError, "lacks the field 'hidden_size'"),
    (lambda d: edit_config(d, hidden_size=64), ValueError, r'do not match config.json: size mismatch for transformer'
     r'.wte.weight: copying a param with shape torch.Size\(\[97, 32\]\) from checkpoint, the shape in current model is'
     r' torch.Size\(\[97, 64\]\)'),
    (remove_tensor, ValueError, r'match config.json: Missing key\(s\) in state_dict: "transformer.h.1.mlp.c_proj'),
    (lambda d: edit_config(d, rope_parameters=dict(rope_type='linear', factor=2.0, rope_theta=1e4)), ValueError,
     "rope_parameters.rope_type='linear' is not supported"),
    (lambda d: edit_config(d, rope_parameters=None, rope_scaling=dict(type='linear', factor=2.0)), ValueError,
     "rope_scaling.type='linear' is not supported"),  # transformers 4.x's spelling
    (lambda d: edit_config(d, attention_bias=False), ValueError, 'attention_bias=False is not supported'),
    (lambda d: edit_config(d, hidden_act='relu'), ValueError, "hidden_act='relu' is not supported"),
    # impossible fields: a zero, a negative, a string, heads that do not divide the width, odd rotary dims
    (lambda d: edit_config(d, num_attention_heads=0), ValueError, 'num_attention_heads=0 must be a positive integer'),
    (lambda d: edit_config(d, num_hidden_layers=-2), ValueError, 'num_hidden_layers=-2 must be a positive integer'),
    (lambda d: edit_config(d, vocab_size='97'), ValueError, "vocab_size='97' must be a positive integer"),
    (lambda d: edit_config(d, intermediate_size=True), ValueError, 'intermediate_size=True must be a positive'),
    (lambda d: edit_config(d, layer_norm_eps=-1e-5), ValueError, 'layer_norm_eps=-1e-05 must be a number >= 0'),
    (lambda d: edit_config(d, num_attention_heads=3), ValueError,
     'hidden_size=32 is not num_attention_heads=3 heads of head_size=10'),
    (lambda d: edit_config(d, rope_parameters=dict(rope_type='default', rope_theta=1e4, partial_rotary_factor=0.19)),
     ValueError, r'rope_parameters.partial_rotary_factor=0.19 gives 3 rotary dims of head_size=16: an odd number'),
]


@pytest.mark.parametrize('damage,error,message', LOAD_ERRORS, ids=[m[:40] for _, _, m in LOAD_ERRORS])
def test_load_errors_name_the_file_and_the_field(neox_dir, damage, error, message):
    """Every directory from_pretrained cannot use is one error line naming the file (and the field), not a
    traceback from deep inside."""
    damage(neox_dir)
    with pytest.raises(error, match=message) as e:
        from_pretrained(str(neox_dir))
    assert str(neox_dir) in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('key,value', [('scale_attn_by_inverse_layer_idx', True), ('tie_word_embeddings', False),
                                       ('scale_attn_weights', False), ('n_embd', '32'), ('n_positions', 0)])
def test_gpt2_options_and_fields_not_implemented_are_refused(tmp_path, key, value):
    """GPT-2 options this model does not implement, and impossible GPT-2 fields, are refused by their config.json
    name."""
    hf_gpt2(hidden=32, n_head=2).save_pretrained(tmp_path)
    edit_config(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=f"config.json: {key}={value!r} (is not supported|must be a positive)"):
        from_pretrained(str(tmp_path))


def test_model_errors():
    """No model directory at a path; a sequence beyond block_size; a config whose rotary dims are odd or whose
    arch is unknown, from the constructor."""
    with pytest.raises(FileNotFoundError, match='no such model directory'):
        from_pretrained('/nonexistent/model')
    with pytest.raises(ValueError, match='exceeds block_size=8'):
        GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=11, block_size=8))(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match='gives 5 rotary dims of head_size=20: an odd number'):
        GPTConfig(n_head=2, n_embd=40)
    with pytest.raises(ValueError, match="unknown arch 'llama'"):
        GPTConfig(arch='llama')
