"""Byte-level tokenization with pooling (byte_pool.py): padding invariance, the byte table against both BPE
vocabularies, the loss against a hand computation, exact growth, exact resume, pruning, the export, sample.py."""
import json
import os
import random
import subprocess
import sys

import pytest
import torch

from conftest import REPO, SHARED_DATA
from byte_pool import EOT, PAD, byte_table, decoder_targets, to_text
from model import GPT, GPTConfig
from test_train import load_ckpt, metrics, train

NEOX_JSON = os.path.join(SHARED_DATA, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')
TINY_BYTES = ['--byte_pool=True', '--byte_embd=16', '--byte_head=2', '--byte_layer=1', '--byte_block=8']


def tiny(byte_decoder='causal', vocab_size=64, byte_block=8, **kw):
    torch.manual_seed(0)
    c = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_size, block_size=32, byte_pool=True, byte_embd=16,
                  byte_head=2, byte_layer=2, byte_block=byte_block, byte_decoder=byte_decoder, **kw)
    m = GPT(c).double().eval()
    rng = random.Random(0)  # tokens of 0..12 bytes (longer than byte_block too), and an empty one (end-of-text)
    words = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 12))) for _ in range(vocab_size - 1)] + [b'']
    m.byte_table.copy_(byte_table(words, vocab_size, byte_block))
    return m, words


@pytest.fixture(scope='session')
def bpe_data_dir(tmp_path_factory):
    """A GPT-2 BPE dataset whose text has multi-byte characters (tokens of 1 to 10+ bytes)."""
    from data.prepare import write_dataset
    from data.tokenizer import get_tokenizer
    rng = random.Random(0)
    words = ['the', 'sparse', 'model', 'grows', 'naïve', 'café', '東京', 'Zürich', 'pruning', '—', 'weights', '🙂']
    docs = [' '.join(rng.choice(words) for _ in range(rng.randint(20, 60))) + '.' for _ in range(300)]
    d = str(tmp_path_factory.mktemp('bpe'))
    write_dataset(d, docs, get_tokenizer('gpt2'), source='test', val_fraction=0.1, num_proc=1)
    return d


def test_pooled_vector_ignores_padding_contents_and_byte_block():
    m, words = tiny()
    enc = m.byte_encoder
    rows = m.byte_table[torch.arange(64)].long()
    pooled = enc(rows)
    with torch.no_grad():  # the pad symbol's embedding changes: no pooled vector may move
        enc.wbe.weight[PAD].normal_()
    torch.testing.assert_close(enc(rows), pooled, rtol=0, atol=0)
    # the same weights with a larger byte_block (new byte positions random): rows padded further, same vectors
    big, _ = tiny(byte_block=12)
    state = {k: v for k, v in m.state_dict().items() if k != 'byte_table'}
    state['byte_encoder.wpe.weight'] = torch.cat([state['byte_encoder.wpe.weight'],
                                                  torch.randn(4, 16, dtype=torch.float64)])
    big.byte_encoder.load_state_dict({k.removeprefix('byte_encoder.'): v for k, v in state.items()
                                      if k.startswith('byte_encoder.')})
    wide = torch.cat([rows, torch.full((64, 4), PAD)], dim=1)
    torch.testing.assert_close(big.byte_encoder(wide), pooled, rtol=0, atol=1e-12)
    assert torch.equal(pooled[63], enc.proj.bias)  # an empty token pools to 0: the projection's bias alone


@pytest.mark.parametrize('name', ['gpt2', 'gpt-neox-20b'])
def test_byte_table_spells_every_token_of_the_vocabulary(name):
    from data.tokenizer import get_tokenizer
    if name == 'gpt-neox-20b' and not os.path.isfile(NEOX_JSON):
        pytest.skip('no local GPT-NeoX tokenizer.json')
    tok = get_tokenizer(name, path=NEOX_JSON if name != 'gpt2' else None)
    tb = tok.token_bytes()
    longest = max(len(b) for b in tb)
    for block in (16, longest):
        table = byte_table(tb, tok.vocab_size + 7, block)
        for i, b in enumerate(tb):
            row = table[i]
            assert bytes(row[row != PAD].tolist()) == b[:block], (i, b)
            assert bool((row[len(b[:block]):] == PAD).all())
        assert bool((table[tok.vocab_size:] == PAD).all())  # padded ids spell nothing
    text = 'Grown models — naïve café 東京 🙂 <|endoftext|> end.'
    ids = tok.encode(text)
    assert to_text(byte_table(tb, tok.vocab_size, longest)[ids]) == text
    assert to_text(torch.tensor([0xe6, 0x9d, 0x41, PAD])) == '\ufffdA'  # a cut character: replaced, no error


@pytest.mark.parametrize('byte_decoder', ['causal', 'parallel'])
def test_loss_is_the_mean_cross_entropy_per_target_byte(byte_decoder):
    """The batched, teacher-forced loss equals the definition computed byte by byte: for each next token, its
    bytes (up to byte_block) and EOT, each under the decoder run on the prefix alone (causal) or once (parallel)."""
    m, words = tiny(byte_decoder)
    idx = torch.tensor([[3, 63, 7, 12, 40, 5, 9]])
    x, y = idx[:, :-1], idx[:, 1:]
    h = m(x)[0][0]
    total, count = 0.0, 0
    for t in range(y.size(1)):
        target = list(words[y[0, t]][:8]) + [EOT]
        for j, b in enumerate(target):
            prev = torch.tensor([target[:j]])
            logits = m.byte_decoder(h[t:t + 1], prev)[0, -1] if byte_decoder == 'causal' else \
                m.byte_decoder(h[t:t + 1])[0, j]
            total -= torch.log_softmax(logits, -1)[b].item()
            count += 1
    _, loss = m(x, y)
    assert loss.item() == pytest.approx(total / count, rel=1e-12)
    assert m.loss_units(y) == count
    nll = m(x, y, reduction='none')[1]
    lp, _ = m.token_logprobs(x, y)
    assert nll.sum().item() == pytest.approx(total, rel=1e-12) and -lp.sum().item() == pytest.approx(total, rel=1e-12)


def test_short_tokens_skip_the_decoder_positions_after_their_end():
    """The causal decoder runs rows whose targets fit in the first half of the positions over that half only
    (ByteDecoder.teacher_forced): every logit a target reads equals the full-length decoder's (float64, 1e-12), for
    a batch of short and long rows, only short ones and only long ones."""
    m, words = tiny()
    d = m.byte_decoder
    lengths = [len(w) for w in words]  # 0..12 bytes at byte_block 8: 9 target positions, the first 5 for short rows
    h = torch.randn(64, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = d.h[0].register_forward_pre_hook(lambda mod, args: calls.append(tuple(args[0].shape[:2])))
    for ids in (torch.arange(64), torch.tensor([i for i in range(64) if lengths[i] <= 4]),
                torch.tensor([i for i in range(64) if lengths[i] > 4])):
        tgt = decoder_targets(m.byte_table[ids])
        calls.clear()
        got = d.teacher_forced(h[:len(ids)], tgt)
        n_short = sum(lengths[i] <= 4 for i in ids.tolist())
        assert sorted(calls) == sorted([(len(ids) - n_short, 9), (n_short, 5)])
        full = d(h[:len(ids)], tgt[:, :-1], L=9)
        real = tgt != PAD
        torch.testing.assert_close(got[real], full[real], rtol=1e-12, atol=1e-12)
        short = torch.tensor([lengths[i] <= 4 for i in ids.tolist()])
        assert torch.all(got[short, 5:] == 0)  # positions a short row never ran
    hook.remove()


def test_each_distinct_id_is_encoded_once_giving_every_position_the_same_vector_and_gradient():
    """GPT.encode_bytes runs the encoder on a batch's distinct ids only and gathers their vectors: the loss and every
    gradient equal those of encoding each position on its own (float64, 1e-12 relative), the encoder sees exactly
    the distinct ids, and a compiled model, whose one graph encodes every position and runs the full decoder (no
    tensor of data-dependent size), gives the eager model's losses and gradients over batches with
    different counts of distinct ids."""
    m, _ = tiny()
    params = [p for p in m.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, n, (3, 20), generator=g), torch.randint(0, 64, (3, 20), generator=g))
               for n in (64, 40, 12)]
    seen = []
    hook = m.byte_encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    _, loss = m(*batches[0])
    hook.remove()
    assert seen == [len(batches[0][0].unique())] and seen[0] < batches[0][0].numel()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    every = GPT(m.config).double()
    every.load_state_dict(m.state_dict())
    every.encode_bytes = lambda idx: every.byte_encoder(every.byte_table[idx])  # each position on its own
    _, ref = every(*batches[0])
    ref_grads = torch.autograd.grad(ref, list(every.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    for a, b in zip(grads, ref_grads):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    shapes = []

    def record(gm, example_inputs):  # every tensor's shape in the graph Dynamo hands to its backend
        shapes.extend(n.meta['example_value'].shape for n in gm.graph.nodes
                      if isinstance(n.meta.get('example_value'), torch.Tensor))
        return gm.forward
    compiled = torch.compile(m, backend=record, fullgraph=True)
    for idx, tgt in batches:
        _, le = m(idx, tgt)
        _, lc = compiled(idx, tgt)
        torch.testing.assert_close(lc, le, rtol=1e-12, atol=0)
        for a, b in zip(torch.autograd.grad(lc, params, allow_unused=True),
                        torch.autograd.grad(le, params, allow_unused=True)):
            if b is not None:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    assert shapes and all(type(n) is int for shape in shapes for n in shape)  # no size that depends on the data


@pytest.mark.parametrize('method', ['top_left', 'isotropic'])
@pytest.mark.parametrize('arch', ['gpt_neox', 'gpt2'])
def test_growth_of_a_byte_level_model_is_exact(method, arch):
    from expand import grow
    m, _ = tiny(arch=arch)
    with torch.no_grad():  # trained-looking LayerNorms and biases, not the init's ones and zeros
        for n, p in m.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    idx = torch.randint(64, (3, 12), generator=torch.Generator().manual_seed(1))
    ref = m.token_logprobs(idx[:, :-1], idx[:, 1:])[0]
    grown, record = grow(m, idx, n_embd=64, n_layer=3, method=method)
    assert grown.config.n_embd == 64 and grown.config.n_layer == 3
    assert record['max_abs_dlogits'] <= 1e-9
    assert (grown.token_logprobs(idx[:, :-1], idx[:, 1:])[0] - ref).abs().max().item() <= 1e-9
    assert torch.equal(grown.byte_table, m.byte_table)


def test_byte_level_training_resumes_exactly_and_reports_bits_per_byte(bpe_data_dir, tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [*TINY_BYTES, f'--data_dir={bpe_data_dir}', '--dropout=0.1', '--gradient_accumulation_steps=2',
              '--eval_interval=4']
    train(*common, f'--out_dir={a}', '--max_iters=8')
    train(*common, f'--out_dir={b}', '--max_iters=4')
    train(*common, f'--out_dir={b}', '--max_iters=8', '--init_from=resume')
    (ta, va), (tb, vb) = metrics(a), metrics(b)
    assert va == vb and {i: r['train_loss'] for i, r in ta.items()} == {i: r['train_loss'] for i, r in tb.items()}
    ca, cb = load_ckpt(a), load_ckpt(b)
    assert all(torch.equal(ca['model'][k], cb['model'][k]) for k in ca['model'])
    assert ca['model_args']['byte_pool'] and 'byte_encoder.proj.weight' in ca['model']
    assert not any(k.startswith(('transformer.wte', 'lm_head')) for k in ca['model'])  # no vocabulary-sized tensor
    # bits per byte: eval.py's, computed independently from the dataset's tokenizer, on the same val batches
    r = subprocess.run([sys.executable, 'eval.py', f'--init_from={a}', "--tasks=['val']", '--device=cpu',
                        f'--out_json={tmp_path / "val.json"}'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    val = json.loads((tmp_path / 'val.json').read_text())['val']
    with open(os.path.join(a, 'metrics.jsonl')) as f:
        last = [row for row in map(json.loads, f) if 'val_loss' in row][-1]
    assert val['val_loss'] == pytest.approx(last['val_loss'], rel=1e-6)
    assert val['bits_per_byte'] == pytest.approx(last['val_bpb'], rel=1e-6)
    # a BPE run on the same data reports bits per byte on the same scale: loss * tokens / bytes / ln 2
    c = str(tmp_path / 'bpe')
    train(f'--data_dir={bpe_data_dir}', f'--out_dir={c}', '--max_iters=2', '--eval_interval=2')
    with open(os.path.join(c, 'metrics.jsonl')) as f:
        bpe = [row for row in map(json.loads, f) if 'val_loss' in row][-1]
    r = subprocess.run([sys.executable, 'eval.py', f'--init_from={c}', "--tasks=['val']", '--device=cpu',
                        f'--out_json={tmp_path / "bpe.json"}'], cwd=REPO, capture_output=True, text=True)
    ref = json.loads((tmp_path / 'bpe.json').read_text())['val']
    assert bpe['val_bpb'] == pytest.approx(ref['bits_per_byte'], rel=1e-6)
    assert bpe['val_bpb'] == pytest.approx(bpe['val_loss'] * ref['tokens'] / ref['bytes'] / 0.6931471805599453,
                                           rel=1e-6)


def test_pruning_export_and_sampling_of_a_byte_level_model(bpe_data_dir, data_dir, tmp_path):
    out = str(tmp_path / 'run')
    train(*TINY_BYTES, f'--data_dir={bpe_data_dir}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=3',
          '--final_sparsity=0.5', '--prune_start=1', '--prune_end=5', '--prune_every=2', '--save_hf=True')
    ckpt = load_ckpt(out)
    masks = ckpt['pruner']['masks']
    assert 'byte_decoder.head.weight' in masks and 'byte_encoder.h.0.fc.weight' in masks  # the byte linears
    assert not any(n.endswith(('wbe.weight', 'wpe.weight')) for n in masks)               # not the byte tables
    live = sum(int(m.sum()) for m in masks.values())
    assert live == round(0.5 * sum(m.numel() for m in masks.values()))
    # the export reloads exactly, and transformers refuses it by name instead of loading something else
    from hf_io import load_model
    exported = load_model(os.path.join(out, 'model'))[0].state_dict()
    assert all(torch.equal(exported[k], v) for k, v in ckpt['model'].items())
    import transformers
    with pytest.raises(ValueError, match='growing_sparse_byte_pool'):
        transformers.AutoConfig.from_pretrained(os.path.join(out, 'model'))
    # continuing it on a dataset of another tokenizer is refused: its byte table spells other ids
    r = train(f'--init_from={os.path.join(out, "model")}', f'--data_dir={data_dir}', f'--out_dir={tmp_path / "c"}',
              '--max_iters=1', check=False)
    assert r.returncode == 1 and 'does not spell' in r.stderr and r.stderr.count('\n') == 1, r.stderr[-2000:]
    # sample.py: the prompt, then text decoded from sampled bytes; the KV cache changes nothing (greedy)
    def sample(*args):
        r = subprocess.run([sys.executable, 'sample.py', f'--init_from={out}', '--device=cpu', '--dtype=float32',
                            '--start=the café', '--max_new_tokens=12', '--num_samples=2', *args], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.split('---------------\n')[:-1]
    samples = sample()
    assert len(samples) == 2 and all(s.startswith('the café') and len(s) > len('the café\n') for s in samples)
    assert samples[0] != samples[1]
    assert sample('--temperature=0') == sample('--temperature=0', '--use_cache=False')


def test_core_runs_in_float32_under_autocast_and_bpe_parameter_order_is_kept():
    """The encoder's output enters the residual stream in float32 under bf16 autocast, as an embedding's does (a bf16
    residual stream would handicap the byte-level model); a BPE model registers wte first, as before the byte option
    existed (initialisation draws and AdamW's positional state in older checkpoints depend on that order)."""
    m, _ = tiny(arch='gpt_neox')
    m.float()
    seen = []
    m.transformer.h[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        m(torch.randint(64, (2, 8)))
    assert seen == [torch.float32]
    names = [n for n, _ in GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64)).named_parameters()]
    assert names[0] == 'transformer.wte.weight' and names[-1] == 'lm_head.weight'


def test_ddp_trains_a_byte_level_model_as_one_process_does(bpe_data_dir, tmp_path):
    """2 gloo ranks (the byte table is a buffer DDP broadcasts) against one process, 2 micro-steps: 1e-5."""
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    common = [*TINY_BYTES, f'--data_dir={bpe_data_dir}', '--max_iters=3', '--eval_interval=3',
              '--gradient_accumulation_steps=2']
    train(*common, f'--out_dir={one}')
    train(*common, f'--out_dir={two}', torchrun=True)
    (t1, v1), (t2, v2) = metrics(one), metrics(two)
    assert v2[3] == pytest.approx(v1[3], rel=1e-5)
    assert all(t2[i]['train_loss'] == pytest.approx(t1[i]['train_loss'], rel=1e-5) for i in t1)
