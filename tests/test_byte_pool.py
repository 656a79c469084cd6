"""Byte-level tokenization with pooling (byte_pool.py): padding invariance, the byte table against both BPE
vocabularies, the loss against a hand computation, the eager savings (distinct ids, short tokens) against the plain
computation and a compiled model, exact growth; through train.py, exact resume with pruning, bits per byte, DDP, the
export and sample.py."""
import json
import os
import random
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SHARED_DATA, run_script
from test_sample import run_sample

from byte_pool import EOT, PAD, byte_table, decoder_targets, to_text
from hf_io import load_model
from model import GPT, GPTConfig

torch.set_num_threads(1)  # tiny models: threads only add overhead
NEOX_JSON = os.path.join(SHARED_DATA, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')
BPE = ['--device=cpu', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
       '--batch_size=4', '--eval_iters=2', '--log_interval=1', '--learning_rate=1e-2', '--min_lr=1e-3',
       '--warmup_iters=2', '--lr_decay_iters=8', '--weight_decay=0.1']  # the schedule of 8 iterations, resumed or not
TINY = BPE + ['--byte_pool=True', '--byte_embd=16', '--byte_head=2', '--byte_layer=1', '--byte_block=8']


def tiny(byte_block=8, **kw):
    """A float64 byte-level model over 64 random tokens of 0..12 bytes (longer than byte_block too) and an empty one
    (an end-of-text)."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(**{**dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=32, byte_pool=True,
                                byte_embd=16, byte_head=2, byte_layer=2), **kw}, byte_block=byte_block)).double().eval()
    rng = random.Random(0)
    words = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 12))) for _ in range(63)] + [b'']
    m.byte_table.copy_(byte_table(words, 64, byte_block))
    return m, words


def run(script, *args, check=True, torchrun=False):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', script,
                        *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300) if torchrun else \
        run_script(script, *args, env=env)  # forked from the server that imported torch once
    assert not check or r.returncode == 0, r.stderr[-3000:]
    return r


def metrics(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    return {r['iter']: r['train_loss'] for r in rows if 'train_loss' in r}, [r for r in rows if 'val_loss' in r]


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
    """Pads never reach a pooled vector: a new pad embedding, or a larger byte_block (rows padded further, new byte
    positions random), leaves every vector as it was; an empty token pools to 0, the projection's bias alone."""
    m, _ = tiny()
    enc, rows = m.byte_encoder, m.byte_table.long()
    pooled = enc(rows)
    with torch.no_grad():
        enc.wbe.weight[PAD].normal_()
    torch.testing.assert_close(enc(rows), pooled, rtol=0, atol=0)
    big = tiny(byte_block=12)[0].byte_encoder
    state = enc.state_dict()
    state['wpe.weight'] = torch.cat([state['wpe.weight'], torch.randn(4, 16, dtype=torch.float64)])
    big.load_state_dict(state)
    torch.testing.assert_close(big(torch.cat([rows, torch.full((64, 4), PAD)], dim=1)), pooled, rtol=0, atol=1e-12)
    assert torch.equal(pooled[63], enc.proj.bias)


@pytest.mark.parametrize('name', ['gpt2', 'gpt-neox-20b'])
def test_byte_table_spells_every_token_of_the_vocabulary(name):
    """Every row of the table is its token's bytes then pads (the whole vocabulary at once: the rows' bytes in order
    are the vocabulary's, each row's count is its token's length, pads only after bytes); at byte_block 16 each row
    is the first 16; padded ids spell nothing; text round-trips through the table, a cut character as U+FFFD."""
    from data.tokenizer import get_tokenizer
    if name == 'gpt-neox-20b' and not os.path.isfile(NEOX_JSON):
        pytest.skip('no local GPT-NeoX tokenizer.json')
    tok = get_tokenizer(name, path=NEOX_JSON if name != 'gpt2' else None)
    tb = tok.token_bytes()
    lengths = torch.tensor([len(b) for b in tb])
    full = byte_table(tb, tok.vocab_size + 7, int(lengths.max()))
    real = full != PAD
    assert bytes(full[real].tolist()) == b''.join(tb) and torch.equal(real.sum(1)[:tok.vocab_size], lengths)
    assert torch.equal(real, real.cummin(dim=1).values) and not real[tok.vocab_size:].any()
    assert torch.equal(byte_table(tb, tok.vocab_size + 7, 16), full[:, :16])
    text = 'Grown models — naïve café 東京 🙂 <|endoftext|> end.'
    assert to_text(full[tok.encode(text)]) == text
    assert to_text(torch.tensor([0xe6, 0x9d, 0x41, PAD])) == '\ufffdA'


def test_loss_is_the_mean_cross_entropy_per_target_byte():
    """The batched, teacher-forced loss equals the definition computed byte by byte: for each next token, its
    bytes (up to byte_block) and EOT, each under the decoder run on the prefix alone; loss_units counts those bytes,
    reduction='none' and token_logprobs sum them per token."""
    m, words = tiny()
    idx = torch.tensor([[3, 63, 7, 12, 40, 5, 9]])
    x, y = idx[:, :-1], idx[:, 1:]
    h = m(x)[0][0]
    total, count = 0.0, 0
    for t in range(y.size(1)):
        target = list(words[y[0, t]][:8]) + [EOT]
        for j, b in enumerate(target):
            logits = m.byte_decoder(h[t:t + 1], torch.tensor([target[:j]]))[0, -1]
            total -= torch.log_softmax(logits, -1)[b].item()
            count += 1
    assert m(x, y)[1].item() == pytest.approx(total / count, rel=1e-12) and m.loss_units(y) == count
    assert m(x, y, reduction='none')[1].sum().item() == pytest.approx(total, rel=1e-12)
    assert -m.token_logprobs(x, y)[0].sum().item() == pytest.approx(total, rel=1e-12)


def test_short_tokens_skip_the_decoder_positions_after_their_end():
    """The causal decoder runs rows whose targets fit in the first half of the positions over that half only
    (ByteDecoder.teacher_forced): every logit a target reads equals the full-length decoder's (float64, 1e-12), for
    a batch of short and long rows, only short ones and only long ones."""
    m, words = tiny()
    d, lengths = m.byte_decoder, [len(w) for w in words]  # 0..12 bytes at byte_block 8: 9 positions, 5 for short rows
    h = torch.randn(64, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = d.h[0].register_forward_pre_hook(lambda mod, args: calls.append(tuple(args[0].shape[:2])))
    for ids in (torch.arange(64), torch.tensor([i for i in range(64) if lengths[i] <= 4]),
                torch.tensor([i for i in range(64) if lengths[i] > 4])):
        tgt, short = decoder_targets(m.byte_table[ids]), torch.tensor([lengths[i] <= 4 for i in ids.tolist()])
        calls.clear()
        got = d.teacher_forced(h[:len(ids)], tgt)
        assert sorted(calls) == sorted([(int((~short).sum()), 9), (int(short.sum()), 5)])
        real = tgt != PAD
        torch.testing.assert_close(got[real], d(h[:len(ids)], tgt[:, :-1], L=9)[real], rtol=1e-12, atol=1e-12)
        assert torch.all(got[short, 5:] == 0)  # positions a short row never ran
    hook.remove()


def test_distinct_ids_are_encoded_once_and_a_compiled_model_agrees():
    """ByteEncoder.ids runs the encoder on a batch's distinct ids only: the loss and every gradient equal those of
    encoding each position on its own (float64, 1e-12); a compiled model, whose one graph encodes every position and
    runs the full decoder (no tensor of a data-dependent size), gives the eager losses and gradients over batches
    with different counts of distinct ids."""
    m, _ = tiny(n_layer=1, byte_layer=1)
    params = list(m.parameters())
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, n, (3, 20), generator=g), torch.randint(0, 64, (3, 20), generator=g))
               for n in (64, 40, 12)]
    seen = []
    hook = m.byte_encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    loss = m(*batches[0])[1]
    hook.remove()
    assert seen == [len(batches[0][0].unique())] and seen[0] < batches[0][0].numel()
    every = GPT(m.config).double()
    every.load_state_dict(m.state_dict())
    every.byte_encoder.ids = lambda table, idx: every.byte_encoder(table[idx])  # each position on its own
    shapes = []

    def record(gm, example_inputs):  # every tensor's shape in the graph Dynamo hands to its backend
        shapes.extend(n.meta['example_value'].shape for n in gm.graph.nodes
                      if isinstance(n.meta.get('example_value'), torch.Tensor))
        return gm.forward
    compiled = torch.compile(m, backend=record, fullgraph=True, dynamic=False)
    pairs = [(loss, every(*batches[0])[1], params, list(every.parameters()))]
    pairs += [(compiled(*b)[1], m(*b)[1], params, params) for b in batches]
    for a, b, pa, pb in pairs:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
        for ga, gb in zip(torch.autograd.grad(a, pa, allow_unused=True), torch.autograd.grad(b, pb, allow_unused=True)):
            if gb is not None:
                torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12 * float(gb.abs().max()))
    assert shapes and all(type(n) is int for shape in shapes for n in shape)  # no size that depends on the data


@pytest.mark.parametrize('method,arch', [('top_left', 'gpt_neox'), ('isotropic', 'gpt2')])
def test_growth_of_a_byte_level_model_is_exact(method, arch):
    """expand.grow widens and deepens a byte-level model with trained-looking LayerNorms and biases: every token's
    log-probability is unchanged (1e-9, float64) and the byte table travels along."""
    from expand import grow
    m, _ = tiny(arch=arch)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    idx = torch.randint(64, (3, 12), generator=torch.Generator().manual_seed(1))
    ref = m.token_logprobs(idx[:, :-1], idx[:, 1:])[0]
    grown, record = grow(m, idx, n_embd=64, n_layer=3, method=method)
    assert (grown.config.n_embd, grown.config.n_layer) == (64, 3) and record['max_abs_dlogits'] <= 1e-9
    assert (grown.token_logprobs(idx[:, :-1], idx[:, 1:])[0] - ref).abs().max().item() <= 1e-9
    assert torch.equal(grown.byte_table, m.byte_table)


def test_core_runs_in_float32_under_autocast_and_bpe_parameter_order_is_kept():
    """The encoder's output enters the residual stream in float32 under bf16 autocast, as an embedding's does; a BPE
    model registers wte first and lm_head last, as before the byte option existed (initialisation draws and AdamW's
    positional state in older checkpoints depend on that order)."""
    m = tiny()[0].float()
    seen = []
    m.transformer.h[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        m(torch.randint(64, (2, 8)))
    assert seen == [torch.float32]
    names = [n for n, _ in GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64)).named_parameters()]
    assert names[0] == 'transformer.wte.weight' and names[-1] == 'lm_head.weight'


def test_training_prunes_resumes_exactly_exports_and_samples(bpe_data_dir, data_dir, tmp_path, capsys):
    """train.py on a byte-level model: 8 iterations with pruning and dropout equal 4 + a resume to 8 (losses, weights);
    the byte linears are pruned, not the byte embeddings; the export reloads exactly and transformers refuses it by
    name; eval.py's bits per byte equal train.py's; continuing on another tokenizer's dataset is refused; sample.py
    prints the prompt then decoded bytes, the KV cache changing nothing."""
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [*TINY, f'--data_dir={bpe_data_dir}', '--dropout=0.1', '--gradient_accumulation_steps=2',
              '--eval_interval=4', '--final_sparsity=0.5', '--prune_start=1', '--prune_end=5', '--prune_every=2']
    run('train.py', *common, f'--out_dir={a}', '--max_iters=8', '--save_hf=True')
    run('train.py', *common, f'--out_dir={b}', '--max_iters=4')
    run('train.py', *common, f'--out_dir={b}', '--max_iters=8', '--init_from=resume')
    assert metrics(a) == metrics(b)
    ca, cb = (torch.load(os.path.join(d, 'ckpt.pt'), weights_only=True) for d in (a, b))
    assert all(torch.equal(ca['model'][k], cb['model'][k]) for k in ca['model'])
    assert not any(k.startswith(('transformer.wte', 'lm_head')) for k in ca['model'])  # no vocabulary-sized tensor
    masks = ca['pruner']['masks']
    assert 'byte_decoder.head.weight' in masks and 'byte_encoder.h.0.fc.weight' in masks
    assert not any(n.endswith(('wbe.weight', 'wpe.weight')) for n in masks)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.5 * sum(m.numel() for m in masks.values()))
    exported = load_model(os.path.join(a, 'model'))[0].state_dict()
    assert all(torch.equal(exported[k], v) for k, v in ca['model'].items())
    import transformers
    with pytest.raises(ValueError, match='growing_sparse_byte_pool'):
        transformers.AutoConfig.from_pretrained(os.path.join(a, 'model'))
    run('eval.py', f'--init_from={a}', "--tasks=['val']", '--device=cpu', f'--out_json={tmp_path / "val.json"}')
    val = json.loads((tmp_path / 'val.json').read_text())['val']
    last = metrics(a)[1][-1]
    assert val['val_loss'] == pytest.approx(last['val_loss'], rel=1e-6)
    assert val['bits_per_byte'] == pytest.approx(last['val_bpb'], rel=1e-6)
    r = run('train.py', *TINY[:2], f'--init_from={a}/model', f'--data_dir={data_dir}', f'--out_dir={tmp_path / "c"}',
            '--max_iters=1', check=False)
    assert r.returncode == 1 and 'use different tokenizers' in r.stderr and r.stderr.count('\n') == 1, r.stderr[-2000:]
    args = [f'--init_from={a}', '--start=the café', '--max_new_tokens=12', '--num_samples=2']
    samples = run_sample(capsys, *args).split('---------------\n')[:-1]
    assert len(samples) == 2 and samples[0] != samples[1]
    assert all(s.startswith('the café') and len(s) > len('the café\n') for s in samples)
    assert run_sample(capsys, *args, '--temperature=0') == run_sample(capsys, *args, '--temperature=0', '--seed=9')


def test_bpe_training_reports_bits_per_byte_on_the_same_scale(bpe_data_dir, tmp_path):
    """A BPE run's val_bpb is its loss * tokens / bytes / ln 2, as eval.py counts them from the dataset's tokenizer."""
    c = str(tmp_path / 'bpe')
    run('train.py', *BPE, f'--data_dir={bpe_data_dir}', f'--out_dir={c}', '--max_iters=2', '--eval_interval=2')
    run('eval.py', f'--init_from={c}', "--tasks=['val']", '--device=cpu', f'--out_json={tmp_path / "bpe.json"}')
    ref, bpe = json.loads((tmp_path / 'bpe.json').read_text())['val'], metrics(c)[1][-1]
    assert bpe['val_bpb'] == pytest.approx(ref['bits_per_byte'], rel=1e-6)
    assert bpe['val_bpb'] == pytest.approx(bpe['val_loss'] * ref['tokens'] / ref['bytes'] / 0.6931471805599453,
                                           rel=1e-6)


def test_ddp_trains_a_byte_level_model_as_one_process_does(bpe_data_dir, tmp_path):
    """2 gloo ranks (the byte table is a buffer DDP broadcasts) against one process, 2 micro-steps: 1e-5."""
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    common = [*TINY, f'--data_dir={bpe_data_dir}', '--max_iters=3', '--eval_interval=3',
              '--gradient_accumulation_steps=2']
    run('train.py', *common, f'--out_dir={one}')
    run('train.py', *common, f'--out_dir={two}', torchrun=True)
    (t1, v1), (t2, v2) = metrics(one), metrics(two)
    assert v2[-1]['val_loss'] == pytest.approx(v1[-1]['val_loss'], rel=1e-5)
    assert t2.keys() == t1.keys() and all(t2[i] == pytest.approx(t1[i], rel=1e-5) for i in t1)
