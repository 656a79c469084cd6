"""Data preparation: every tokenizer round-trips text exactly, every document ends with eot, and meta.json
agrees with the bins (dtype, token and document counts)."""
import gzip
import json
import lzma
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from data.prepare import char_alphabet, split_text, write_dataset  # noqa: E402
from data.tokenizer import get_tokenizer, tokenizer_from_meta  # noqa: E402

SHARED = os.environ.get('SHARED_DATA', os.path.join(REPO, '..', 'shared', 'data'))
NEOX_JSON = os.path.join(SHARED, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')
DOCS = ['Hello, world!\n', 'def f(x):\n    return x ** 2  # squares\n', 'naïve café — “quotes” ü 日本語 🙂',
        '  leading and trailing spaces  ', 'a text that mentions <|endoftext|> as text', 'x'] * 7


def read_split(out_dir, split):
    with open(os.path.join(out_dir, 'meta.json')) as f:
        meta = json.load(f)
    return meta, np.fromfile(os.path.join(out_dir, f'{split}.bin'), dtype=meta['dtype'])


def documents(ids, eot):
    """Cut a bin back into documents at its eot ids; the bin must end with one."""
    assert len(ids) and ids[-1] == eot
    cuts = np.flatnonzero(ids == eot)
    return np.split(ids, cuts + 1)[:-1]


def check_dataset(out_dir, train_docs, val_docs):
    """The bins decode back to exactly these documents, in order, and meta.json counts them right."""
    meta, _ = read_split(out_dir, 'train')
    tok = tokenizer_from_meta(meta)
    assert meta['dtype'] == ('uint16' if meta['vocab_size'] < 65536 else 'uint32')
    for split, expected in (('train', train_docs), ('val', val_docs)):
        _, ids = read_split(out_dir, split)
        assert meta[f'{split}_tokens'] == len(ids) and meta[f'{split}_docs'] == len(expected)
        assert ids.max() < meta['vocab_size']
        got = documents(ids, meta['eot'])
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert tok.decode(g[:-1]) == e
    assert not [f for f in os.listdir(out_dir) if f.endswith('.tmp')]


@pytest.mark.parametrize('name', ['char', 'gpt2', 'gpt-neox-20b'])
def test_round_trip_every_tokenizer(name, tmp_path):
    if name == 'gpt-neox-20b' and not os.path.exists(NEOX_JSON):
        pytest.skip(f'{NEOX_JSON} not available')
    tok = get_tokenizer(name, path=NEOX_JSON if name == 'gpt-neox-20b' else None, chars=char_alphabet(DOCS))
    for doc in DOCS[:6]:
        assert tok.decode(tok.encode(doc)) == doc
    # a worker pool over small chunks: order must survive; val takes every 5th document (val_fraction 0.2)
    write_dataset(str(tmp_path), DOCS, tok, source='test', val_fraction=0.2, num_proc=2, chunk_chars=50)
    val = [i for i in range(len(DOCS)) if i % 5 == 4]
    check_dataset(str(tmp_path), [d for i, d in enumerate(DOCS) if i not in val], [DOCS[i] for i in val])


def test_prepare_script_local_files(tmp_path):
    """data/prepare.py over .txt, .jsonl.gz, .jsonl.xz and .parquet inputs, with a separate val file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / 'a.txt').write_text(DOCS[0])
    with gzip.open(tmp_path / 'b.jsonl.gz', 'wt') as f:
        f.writelines(json.dumps({'body': d}) + '\n' for d in DOCS[1:3])
    pq.write_table(pa.table({'body': DOCS[3:5]}), tmp_path / 'c.parquet')
    with lzma.open(tmp_path / 'val.jsonl.xz', 'wt') as f:
        f.write(json.dumps({'body': DOCS[5]}) + '\n')
    out = tmp_path / 'out'
    cmd = [sys.executable, 'data/prepare.py', f'--input={tmp_path}/a.txt,{tmp_path}/*.gz,{tmp_path}/c.parquet',
           f'--val_input={tmp_path}/val.jsonl.xz', '--text_key=body', f'--out_dir={out}']
    for tokenizer in ('gpt2', 'char'):
        r = subprocess.run(cmd + [f'--tokenizer={tokenizer}'], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        check_dataset(str(out), DOCS[:5], DOCS[5:6])

    # bad input: one error line, nothing written
    bad = tmp_path / 'bad'
    for args, fragment in (([f'--input={tmp_path}/missing.jsonl'], 'matches no file'),
                           ([f'--input={tmp_path}/a.txt'], 'val split came out empty'),
                           ([f'--input={tmp_path}/*.gz'], "no field 'text'")):
        r = subprocess.run([sys.executable, 'data/prepare.py', *args, f'--out_dir={bad}'], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and fragment in r.stderr, r.stderr[-2000:]
        assert not bad.exists() or not os.listdir(bad)


def test_shakespeare_char(tmp_path):
    src = os.path.join(SHARED, 'tinyshakespeare', 'input.txt')
    if not os.path.exists(src):
        pytest.skip(f'{src} not available')
    r = subprocess.run([sys.executable, 'data/shakespeare_char/prepare.py', f'--input={src}', f'--out_dir={tmp_path}'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(src) as f:
        text = f.read()
    check_dataset(str(tmp_path), *[[part] for part in split_text(text, 0.1)])
    meta, _ = read_split(str(tmp_path), 'train')
    assert meta['vocab_size'] == 66 and meta['train_tokens'] + meta['val_tokens'] == len(text) + 2


def test_pydoc_corpus(tmp_path):
    """The offline quickstart corpus: present on any CPython, big enough to train on for minutes."""
    r = subprocess.run([sys.executable, 'data/pydoc/prepare.py', f'--out_dir={tmp_path}'], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    meta, train_ids = read_split(str(tmp_path), 'train')
    _, val_ids = read_split(str(tmp_path), 'val')
    assert meta['tokenizer'] == 'char' and meta['train_tokens'] > 1_000_000 and meta['val_tokens'] > 20_000
    from pydoc_data.topics import topics
    first = sorted(topics)[0]  # documents keep their order: the first is the first topic
    tok = tokenizer_from_meta(meta)
    assert tok.decode(documents(train_ids[:len(topics[first]) + 1], meta['eot'])[0][:-1]) == topics[first]
    assert meta['train_docs'] + meta['val_docs'] == len(documents(train_ids, meta['eot'])) + \
        len(documents(val_ids, meta['eot']))
