"""data/: every tokenizer round-trips text and exports to transformers, datasets are written whole (splits, counts,
never over another dataset), the one tokenizer rule names each disagreement, estimate_loss is the hand computation."""
import gzip
import json
import lzma
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED_DATA
from data import estimate_loss, windows
from data.prepare import char_alphabet, iter_documents, write_dataset
from data.tokenizer import check_tokenizers, get_tokenizer, tokenizer_from_meta

NEOX_JSON = os.path.join(SHARED_DATA, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')
DOCS = ['Hello, world!\n', 'def f(x):\n    return x ** 2  # squares\n', 'naïve café — “quotes” ü 日本語 🙂',
        '  leading and trailing spaces  ', 'a text that mentions <|endoftext|> as text', 'x'] * 6
NAMES = ['char', 'gpt2', pytest.param('gpt-neox-20b', marks=pytest.mark.skipif(
    not os.path.exists(NEOX_JSON), reason='needs ../shared/data/tokenizers'))]


def tokenizer(name, docs=DOCS):
    return get_tokenizer(name, path=NEOX_JSON if name == 'gpt-neox-20b' else None, chars=char_alphabet(docs))


def check_dataset(out_dir, *splits):
    """The bins decode back to exactly these documents per split (train, val, test), each ending with eot, in order;
    meta.json counts them right and names the dtype; no temporary file is left."""
    with open(os.path.join(out_dir, 'meta.json')) as f:
        meta = json.load(f)
    tok = tokenizer_from_meta(meta)
    assert meta['dtype'] == ('uint16' if meta['vocab_size'] < 65536 else 'uint32')
    for split, expected in zip(('train', 'val', 'test'), splits):
        ids = np.fromfile(os.path.join(out_dir, f'{split}.bin'), dtype=meta['dtype'])
        assert ids[-1] == meta['eot'] and meta[f'{split}_tokens'] == len(ids) and meta[f'{split}_docs'] == len(expected)
        assert [tok.decode(d) for d in np.split(ids, np.flatnonzero(ids == meta['eot']) + 1)[:-1]] == \
            [e + tok.decode([meta['eot']]) for e in expected]
    assert os.path.exists(os.path.join(out_dir, 'test.bin')) == (len(splits) == 3)
    assert not [f for f in os.listdir(out_dir) if '.tmp' in f]


@pytest.mark.parametrize('name', NAMES)
def test_round_trip_every_tokenizer(name, tmp_path):
    """Text -> ids -> text is exact, the ids' bytes spell the text's UTF-8, and a dataset tokenized in small threaded
    chunks decodes back to its documents in order."""
    tok = tokenizer(name)
    for doc in DOCS[:6]:
        ids = tok.encode(doc)
        assert tok.decode(ids) == doc and b''.join(tok.token_bytes()[i] for i in ids) == doc.encode()
    write_dataset(str(tmp_path), DOCS, tok, source='test', val_fraction=0.2, num_proc=2, chunk_chars=50)
    check_dataset(str(tmp_path), [d for i, d in enumerate(DOCS) if i % 5 != 4], DOCS[4::5])


def test_splits_and_test_fraction(tmp_path):
    """val_fraction 0.2 of 36 documents is every 5th (7); test_fraction 0.5 of those is every 2nd (3) and goes to
    test.bin; train keeps the other 29."""
    docs = [f'document {i}' for i in range(36)]
    meta = write_dataset(str(tmp_path), docs, tokenizer('char', docs), source='t', val_fraction=0.2, test_fraction=0.5)
    assert (meta['train_docs'], meta['val_docs'], meta['test_docs']) == (29, 4, 3)
    val = docs[4::5]
    check_dataset(str(tmp_path), [d for d in docs if d not in val], val[0::2], val[1::2])


def test_refuses_to_replace_or_half_write(tmp_path, monkeypatch):
    """A prepared dataset is replaced only with overwrite (and an old test.bin goes with it); an out_dir that is a file,
    an empty split or a document the tokenizer cannot take raise and leave out_dir as it was; a crash while the new
    files are renamed in leaves no meta.json, so no half-replaced dataset passes for one."""
    tok, out = tokenizer('char'), str(tmp_path / 'd')
    write_dataset(out, DOCS, tok, source='first', val_fraction=0.2, test_fraction=0.5)
    before = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}
    for kwargs, fragment in ((dict(), 'holds a prepared dataset: pass --overwrite=True'),
                             (dict(docs=['x'], overwrite=True), 'the val split came out empty'),
                             (dict(docs=DOCS + ['ß'], overwrite=True), "'ß' is not in this char tokenizer's alphabet")):
        with pytest.raises(ValueError, match=fragment):
            write_dataset(out, kwargs.pop('docs', DOCS), tok, source='second', val_fraction=0.2, **kwargs)
        assert {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)} == before
    (tmp_path / 'a_file').write_text('x')
    with pytest.raises(ValueError, match='is a file'):
        write_dataset(str(tmp_path / 'a_file'), DOCS, tok, source='t')
    replace = os.replace  # a crash between renaming the new train.bin and val.bin in: out_dir is no dataset any more
    monkeypatch.setattr(os, 'replace', lambda a, b: replace(a, b) if b.endswith('train.bin') else 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_dataset(out, DOCS, tok, source='second', val_fraction=0.2, overwrite=True)
    assert not os.path.exists(os.path.join(out, 'meta.json')) and not [f for f in os.listdir(out) if '.tmp' in f]
    monkeypatch.undo()
    write_dataset(out, DOCS, tok, source='second', val_fraction=0.2, overwrite=True)
    check_dataset(out, [d for i, d in enumerate(DOCS) if i % 5 != 4], DOCS[4::5])


def test_prepare_script_local_files(tmp_path):
    """data/prepare.py over .txt, .jsonl.gz and .parquet inputs with a .jsonl.xz val file, in two tokenizers; a second
    run into the same out_dir needs --overwrite=True. A jsonl without the text field is named with its line."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / 'a.txt').write_text(DOCS[0])
    with gzip.open(tmp_path / 'b.jsonl.gz', 'wt') as f:
        f.writelines(json.dumps({'body': d}) + '\n' for d in DOCS[1:3])
    pq.write_table(pa.table({'body': DOCS[3:5]}), tmp_path / 'c.parquet')
    with lzma.open(tmp_path / 'val.jsonl.xz', 'wt') as f:
        f.write(json.dumps({'body': DOCS[5]}) + '\n')
    cmd = [sys.executable, 'data/prepare.py', f'--input={tmp_path}/a.txt,{tmp_path}/*.gz,{tmp_path}/c.parquet',
           f'--val_input={tmp_path}/val.jsonl.xz', '--text_key=body', f'--out_dir={tmp_path / "out"}']
    for args, status in ((['--tokenizer=gpt2'], 0), (['--tokenizer=char'], 1),
                         (['--tokenizer=char', '--overwrite=True'], 0)):
        r = subprocess.run(cmd + args, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == status, r.stderr[-2000:]
        assert status == 0 or r.stderr.strip().splitlines() == [f"error: {tmp_path / 'out'} holds a prepared dataset: "
                                                                 f"pass --overwrite=True to replace it, or choose "
                                                                 f"another out_dir"]
        check_dataset(str(tmp_path / 'out'), DOCS[:5], DOCS[5:6])
    with pytest.raises(ValueError, match=r"b.jsonl.gz:1 has no field 'text' \(it has: body\)"):
        list(iter_documents(f'{tmp_path}/*.gz'))


def test_pydoc_corpus(tmp_path):
    """The pydoc corpus (on any CPython): the topics first, in order, then docstrings, over a million characters;
    val and test splits of over 20,000 characters each."""
    r = subprocess.run([sys.executable, 'data/pydoc/prepare.py', f'--out_dir={tmp_path}'], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / 'meta.json') as f:
        meta = json.load(f)
    from pydoc_data.topics import topics
    first = np.fromfile(tmp_path / 'train.bin', dtype=meta['dtype'])[:len(topics[sorted(topics)[0]])]
    assert tokenizer_from_meta(meta).decode(first) == topics[sorted(topics)[0]]
    assert meta['tokenizer'] == 'char' and meta['train_tokens'] > 1_000_000 and meta['val_tokens'] > 20_000
    assert meta['test_tokens'] > 20_000  # the quickstart holds a test split out, as the experiments do


@pytest.mark.parametrize('name', NAMES)
def test_tokenizer_exports_load_in_transformers(tmp_path, name):
    """The files save_hf writes load with AutoTokenizer to the same ids, with end-of-text as bos and eos."""
    from transformers import AutoTokenizer
    tok = tokenizer(name, DOCS + ['<|end of text|>'])
    tok.save_hf(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    text = ''.join(DOCS[:5]).replace('<|endoftext|>', '<|end of text|>')  # in a text: ours read it as text, HF not
    ids = tok.encode(text)
    assert hf.encode(text, add_special_tokens=False) == ids and hf.decode(ids) == text
    assert hf.bos_token_id == hf.eos_token_id == tok.eot


@pytest.mark.parametrize('a, b, why', [
    (dict(tokenizer='char', vocab_size=4, chars='abc'), dict(tokenizer='gpt2', vocab_size=50257), 'their names differ'),
    (dict(tokenizer='char', vocab_size=4, chars='abc'), dict(tokenizer='char', vocab_size=5, chars='abcd'),
     'their vocabulary sizes differ'),
    (dict(tokenizer='char', vocab_size=4, chars='abc'), dict(tokenizer='char', vocab_size=4, chars='abd'),
     r"their alphabets differ at id 2 \('c' vs 'd'\)"),
    (dict(tokenizer='gpt2', vocab_size=50257), 'model', "the model's vocabulary of 50 ids cannot hold ids up to 50256"),
])
def test_check_tokenizers_names_each_disagreement(a, b, why):
    """Each disagreement is one ValueError naming both sides (name, size) and what differs; the same tokenizer as a
    Tokenizer, a meta dict or a name agrees, and a model whose vocabulary is padded past the tokenizer's is fine."""
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=50, block_size=8))
    b = model if b == 'model' else b
    with pytest.raises(ValueError, match=f"^the A \\({a['tokenizer']}, {a['vocab_size']} ids\\) and the B .* use "
                                         f"different tokenizers: {why}$"):
        check_tokenizers(a, b, 'the A', 'the B')
    tok = get_tokenizer('char', chars='abc')
    for x, y in ((tok, tok.meta()), (tok.meta(), 'char'), (model, tok)):
        check_tokenizers(x, y, 'x', 'y')


def test_windows_and_estimate_loss():
    """windows: the whole split once, every token after the first a target exactly once (the last partial window
    dropped). estimate_loss: the summed float64 nll over the targets / their count, and / ln 2 / their UTF-8 bytes;
    the model scored in eval mode (no dropout) and handed back in its mode, inside the autocast given."""
    from model import GPT, GPTConfig
    data = np.arange(23, dtype=np.uint16) % 11
    batches = list(windows(data, 4, 2))
    assert [b.shape for b in batches] == [(2, 5), (2, 5), (1, 5)]
    assert np.array_equal(np.concatenate([b[:, 1:].ravel() for b in batches]), data[1:21])
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=11, block_size=8, dropout=0.5))
    xy = [torch.from_numpy(b) for b in batches]
    nbytes_of = torch.arange(11, dtype=torch.float64) % 3  # 0, 1 or 2 bytes per id
    entered = []

    class Autocast:
        __enter__ = lambda self: entered.append(1)  # noqa: E731
        __exit__ = lambda self, *exc: None  # noqa: E731
    loss, bpb, tokens = estimate_loss(model.train(), ((b[:, :-1], b[:, 1:]) for b in xy), nbytes_of, Autocast())
    assert model.training and tokens == 20 and len(entered) == 3
    with torch.no_grad():
        nll = sum(-torch.log_softmax(model.eval()(b[:, :-1])[0].double(), -1).gather(-1, b[:, 1:, None]).sum()
                  for b in xy)
    # 1e-6: model.py's per-token nll is float32 (its logits'), the hand computation float64 from the same logits
    assert loss == pytest.approx(nll.item() / 20, rel=1e-6)
    assert bpb == pytest.approx(nll.item() / math.log(2) / nbytes_of[torch.from_numpy(data[1:21]).long()].sum().item(),
                                rel=1e-6)
    assert estimate_loss(model, xy[:1] and [(xy[0][:, :-1], xy[0][:, 1:])])[1] is None and not model.training
