"""eval.py: WikiText and LAMBADA against lm-evaluation-harness 0.4.13 itself (its `wikitext` and `lambada_openai` tasks
run offline on local files), val and test against train.py's own numbers, its document readers, and dtypes kept
through save and load."""
import json
import math
import os
import runpy
import sys

import pytest
import torch

from conftest import REPO, SHARED_DATA, run_script

WIKI_RAW = os.path.join(SHARED_DATA, 'wikitext', 'wikitext-2-raw', 'wiki.test.raw')
LAMBADA = os.path.join(SHARED_DATA, 'lambada', 'lambada_test.jsonl')


def script(name, *args, monkeypatch):
    """Run a script in this process, as its command line would (fresh module globals; torch already imported)."""
    monkeypatch.setattr(sys, 'argv', [name, *args])
    return runpy.run_path(os.path.join(REPO, name), run_name='__main__')


@pytest.mark.skipif(not os.path.exists(WIKI_RAW), reason='needs ../shared/data/wikitext')
def test_wikitext_articles():
    """wiki.test.raw splits into WikiText's 62 test articles, each starting at its ' = Title = ' line; nothing but the
    blank line before the first title and the line breaks between articles is left out."""
    from eval import wikitext_pages
    with open(WIKI_RAW, encoding='utf-8') as f:
        raw = f.read()
    pages = wikitext_pages(raw)
    assert len(pages) == 62 and pages[0].startswith(' = Robert Boulter = \n')
    assert all(p.lstrip().startswith('= ') for p in pages) and ' \n' + '\n'.join(pages) == raw


def bigram_model(tok, docs, seed=0):
    """A small untrained GPT-NeoX whose greedy next token after token a is mostly the one that follows a in docs (its
    head reads LayerNorm(wte[a]), which dominates the residual stream); the random blocks still make every prediction
    depend on the context, so the windows a document is scored in matter."""
    from model import GPT, GPTConfig
    torch.manual_seed(seed)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=tok.vocab_size, block_size=64)).eval()
    with torch.no_grad():
        m.transformer.wte.weight.mul_(20)
        m.lm_head.weight.zero_()
        z = torch.nn.functional.layer_norm(m.transformer.wte.weight, (64,))
        for doc in docs:
            ids = tok.encode(doc)
            for a, b in zip(ids, ids[1:]):
                m.lm_head.weight[b] += z[a] / 8
    return m


@pytest.mark.skipif(not os.path.exists(WIKI_RAW) or not os.path.exists(LAMBADA), reason='needs ../shared/data')
def test_eval_equals_lm_evaluation_harness(tmp_path, monkeypatch):
    """WikiText word perplexity, byte perplexity and bits per byte, and LAMBADA accuracy and perplexity equal lm-eval
    0.4.13's on the same documents and exported model (GPT-2 BPE; the context, 64, is far shorter than the articles,
    so rolling windows are exercised): to 1e-4 relative, accuracy exactly, and neither 0 nor 1."""
    lm_eval = pytest.importorskip('lm_eval')
    from lm_eval.tasks import TaskManager
    from data.tokenizer import get_tokenizer
    from eval import wikitext_pages
    from hf_io import save_pretrained
    tok = get_tokenizer('gpt2')
    with open(LAMBADA) as f:
        lambada = [json.loads(line)['text'] for line in f][:16]
    with open(WIKI_RAW, encoding='utf-8') as f:
        pages = [p[:3000] for p in wikitext_pages(f.read())[:2]]
    save_pretrained(bigram_model(tok, lambada[:8]), str(tmp_path / 'model'), tokenizer=tok,
                    extra_meta={'tokenizer': tok.meta()})
    (tmp_path / 'wiki.jsonl').write_text(''.join(json.dumps({'page': p}) + '\n' for p in pages))
    (tmp_path / 'lambada.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in lambada))
    base = os.path.join(os.path.dirname(lm_eval.__file__), 'tasks')
    (tmp_path / 'tasks').mkdir()
    for task, yaml, data, extra in (('wikitext', 'wikitext/wikitext.yaml', 'wiki.jsonl', 'training_split: null\n'
                                     'validation_split: null\n'), ('lambada', 'lambada/lambada_openai.yaml',
                                                                   'lambada.jsonl', '')):
        (tmp_path / 'tasks' / f'{task}_local.yaml').write_text(
            f"task: {task}_local\ninclude: {base}/{yaml}\ndataset_path: json\ndataset_name: null\ndataset_kwargs:\n"
            f"  data_files:\n    test: {tmp_path / data}\n{extra}test_split: test\n")
    theirs = lm_eval.simple_evaluate(model='hf', model_args=f'pretrained={tmp_path / "model"},dtype=float32',
                                     tasks=['wikitext_local', 'lambada_local'], batch_size=8, device='cpu',
                                     task_manager=TaskManager(include_path=str(tmp_path / 'tasks'),
                                                              include_defaults=False))['results']
    script('eval.py', f'--init_from={tmp_path / "model"}', f'--wikitext={tmp_path / "wiki.jsonl"}', '--device=cpu',
           f'--lambada={tmp_path / "lambada.jsonl"}', "--tasks=['wikitext', 'lambada']",
           f'--out_json={tmp_path / "ours.json"}', monkeypatch=monkeypatch)
    ours = json.loads((tmp_path / 'ours.json').read_text())
    w, lam = theirs['wikitext_local'], theirs['lambada_local']
    for key in ('word_perplexity', 'byte_perplexity', 'bits_per_byte'):
        assert ours['wikitext'][key] == pytest.approx(w[f'{key},none'], rel=1e-4), key
    assert ours['lambada']['perplexity'] == pytest.approx(lam['perplexity,none'], rel=1e-4)
    assert ours['lambada']['accuracy'] == lam['acc,none'] and 0 < lam['acc,none'] < 1
    assert ours['wikitext']['windows'] > 2 * len(pages) and ours['max_length'] == 64


def test_val_and_test_equal_train(tmp_path, monkeypatch):
    """On a train.py checkpoint, the val task is train.py's val loss (its eval_iters batches) and the test task its
    test_loss (the whole test split once, in disjoint windows: every target but the last partial window's), both to
    1e-6 relative, with bits per byte on the same targets."""
    from data.prepare import char_alphabet, write_dataset
    from data.tokenizer import get_tokenizer
    docs = [f'the sparse model {i} grows wider and deeper while pruning weights. ' * 3 for i in range(60)]
    meta = write_dataset(str(tmp_path / 'data'), docs, get_tokenizer('char', chars=char_alphabet(docs)), source='t',
                         val_fraction=0.3, test_fraction=0.5, num_proc=1)
    r = run_script('train.py', '--device=cpu', '--dtype=float32', '--n_layer=1', '--n_head=2', '--n_embd=16',
                   '--block_size=32', f'--data_dir={tmp_path / "data"}', f'--out_dir={tmp_path / "run"}',
                   '--batch_size=4', '--max_iters=2', '--eval_interval=2', '--eval_iters=3', '--warmup_iters=1',
                   env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr[-2000:]
    script('eval.py', f'--init_from={tmp_path / "run"}', "--tasks=['val', 'test']", '--device=cpu',
           f'--out_json={tmp_path / "eval.json"}', monkeypatch=monkeypatch)
    ours = json.loads((tmp_path / 'eval.json').read_text())
    with open(tmp_path / 'run' / 'metrics.jsonl') as f:
        last = [r for r in map(json.loads, f) if 'val_loss' in r][-1]
    assert ours['val']['val_loss'] == pytest.approx(last['val_loss'], rel=1e-6)
    assert ours['test']['test_loss'] == pytest.approx(last['test_loss'], rel=1e-6)
    assert ours['val']['tokens'] == 3 * 4 * 32 and ours['test']['tokens'] == (meta['test_tokens'] - 1) // 32 * 32
    assert ours['test']['bits_per_byte'] == pytest.approx(last['test_bpb'], rel=1e-6)
    assert ours['val']['bits_per_byte'] == pytest.approx(  # char-level: loss per token, 1 to 2 bytes per token
        ours['val']['val_loss'] * ours['val']['tokens'] / ours['val']['bytes'] / math.log(2), rel=1e-12)


def test_document_sources(tmp_path):
    """An empty WikiText or LAMBADA file, and a LAMBADA line that is not an object with a string text, are one error
    naming the file (and line)."""
    from eval import read_documents
    (tmp_path / 'empty.raw').write_text('')
    (tmp_path / 'empty.jsonl').write_text('')
    (tmp_path / 'bad.jsonl').write_text('{"text": "fine"}\n["text"]\n')
    for task, name, fragment in (('wikitext', 'empty.raw', 'holds no wikitext documents'),
                                 ('lambada', 'empty.jsonl', 'holds no lambada documents'),
                                 ('lambada', 'bad.jsonl', "bad.jsonl:2: needs a JSON object with a string 'text'")):
        with pytest.raises(ValueError, match=fragment):
            read_documents(task, str(tmp_path / name))


def test_dtypes_kept_through_save_and_load(tmp_path):
    """float64 weights load bit for bit as float64 (not through float32); bf16 is saved and loaded as bf16."""
    from safetensors.torch import load_file
    from data.tokenizer import get_tokenizer
    from hf_io import from_pretrained, hf_to_state_dict, save_pretrained
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=32, block_size=16)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 1e-9)  # digits float32 cannot hold
    tok = get_tokenizer('char', chars='abcdefghijklmnopqrstuvwxyz .')
    save_pretrained(m, str(tmp_path / 'f64'), extra_meta={'tokenizer': tok.meta()}, tokenizer=tok)
    stored = hf_to_state_dict(load_file(str(tmp_path / 'f64' / 'model.safetensors')), m.config)
    loaded = from_pretrained(str(tmp_path / 'f64'), dtype=torch.float64).state_dict()
    assert all(v.dtype == torch.float64 and torch.equal(loaded[k], v) for k, v in stored.items())
    assert next(from_pretrained(str(tmp_path / 'f64')).parameters()).dtype == torch.float64  # None: as stored
    save_pretrained(m.to(torch.bfloat16), str(tmp_path / 'bf16'), extra_meta={'tokenizer': tok.meta()}, tokenizer=tok)
    assert {v.dtype for v in load_file(str(tmp_path / 'bf16' / 'model.safetensors')).values()} == {torch.bfloat16}
    assert json.loads((tmp_path / 'bf16' / 'config.json').read_text())['torch_dtype'] == 'bfloat16'
    assert next(from_pretrained(str(tmp_path / 'bf16')).parameters()).dtype == torch.bfloat16
    assert os.path.exists(tmp_path / 'bf16' / 'tokenizer.json')  # the tokenizer travels with the export
