"""eval.py against lm-evaluation-harness 0.4.13 itself (its `wikitext` and `lambada_openai` tasks, run offline on local
files through task YAMLs that include the shipped ones), WikiText's article split, tokenizer exports that
transformers' AutoTokenizer loads to the same ids, and weights loaded and saved exactly in their dtype."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, SHARED_DATA

sys.path.insert(0, REPO)
ENV = dict(os.environ, OMP_NUM_THREADS='1', HF_DATASETS_OFFLINE='1')
WIKI_RAW = os.path.join(SHARED_DATA, 'wikitext', 'wikitext-2-raw', 'wiki.test.raw')
LAMBADA = os.path.join(SHARED_DATA, 'lambada', 'lambada_test.jsonl')
NEOX_JSON = os.path.join(SHARED_DATA, 'tokenizers', 'gpt-neox-20b', 'tokenizer.json')
TEXT = "Hello world. Héllo wörld — 東京 costs €5!\n\n  indented line\twith a tab, <|endoftext|> as text"


def run(script, *args, check=True):
    r = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.skipif(not os.path.exists(WIKI_RAW), reason='needs ../shared/data/wikitext')
def test_wikitext_articles():
    """wiki.test.raw splits into WikiText's 62 test articles, each starting at its ' = Title = ' line; nothing but the
    blank line before the first title and the line breaks between articles is left out."""
    from eval import wikitext_pages
    with open(WIKI_RAW, encoding='utf-8') as f:
        raw = f.read()
    pages = wikitext_pages(raw)
    assert len(pages) == 62
    assert pages[0].startswith(' = Robert Boulter = \n') and all(p.lstrip().startswith('= ') for p in pages)
    assert ' \n' + '\n'.join(pages) == raw


@pytest.mark.skipif(not os.path.exists(WIKI_RAW) or not os.path.exists(LAMBADA), reason='needs ../shared/data')
def test_eval_equals_lm_evaluation_harness(tmp_path):
    """A small GPT-2-tokenized model trained here and exported by train.py (weights + tokenizer files): eval.py's
    WikiText word perplexity, byte perplexity and bits per byte, and LAMBADA accuracy and perplexity, equal lm-eval
    0.4.13's on the same documents to 1e-4 relative. The context (64) is far shorter than the articles, so the rolling
    windows are exercised; the model memorised some passages, so LAMBADA's accuracy is neither 0 nor 1."""
    lm_eval = pytest.importorskip('lm_eval')
    from lm_eval.tasks import TaskManager
    from eval import wikitext_pages
    from data.prepare import write_dataset
    from data.tokenizer import get_tokenizer
    with open(LAMBADA) as f:
        lambada = [json.loads(line)['text'] for line in f][:24]
    memorised = lambada[:12]
    write_dataset(str(tmp_path / 'data'), memorised * 30, get_tokenizer('gpt2'), source='test', val_fraction=0.1,
                  num_proc=1)
    run('train.py', '--device=cpu', '--dtype=float32', f'--data_dir={tmp_path / "data"}', f'--out_dir={tmp_path / "run"}',
        '--n_layer=2', '--n_head=2', '--n_embd=64', '--block_size=64', '--batch_size=16', '--max_iters=80',
        '--eval_interval=150', '--eval_iters=2', '--learning_rate=3e-3', '--warmup_iters=10', '--save_hf=True')
    model_dir = str(tmp_path / 'run' / 'model')
    with open(WIKI_RAW, encoding='utf-8') as f:
        pages = wikitext_pages(f.read())[:2]
    (tmp_path / 'wiki.jsonl').write_text(''.join(json.dumps({'page': p}) + '\n' for p in pages))
    (tmp_path / 'lambada.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in lambada))
    base = os.path.join(os.path.dirname(lm_eval.__file__), 'tasks')
    (tmp_path / 'tasks').mkdir()
    (tmp_path / 'tasks' / 'wikitext_local.yaml').write_text(
        f"task: wikitext_local\ninclude: {base}/wikitext/wikitext.yaml\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'wiki.jsonl'}\n"
        f"training_split: null\nvalidation_split: null\ntest_split: test\n")
    (tmp_path / 'tasks' / 'lambada_local.yaml').write_text(
        f"task: lambada_local\ninclude: {base}/lambada/lambada_openai.yaml\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'lambada.jsonl'}\ntest_split: test\n")
    theirs = lm_eval.simple_evaluate(model='hf', model_args=f'pretrained={model_dir},dtype=float32',
                                     tasks=['wikitext_local', 'lambada_local'], batch_size=8, device='cpu',
                                     task_manager=TaskManager(include_path=str(tmp_path / 'tasks')))['results']
    run('eval.py', f'--init_from={model_dir}', f'--wikitext={tmp_path / "wiki.jsonl"}',
        f'--lambada={tmp_path / "lambada.jsonl"}', "--tasks=['wikitext', 'lambada']", '--device=cpu',
        f'--out_json={tmp_path / "ours.json"}')
    ours = json.loads((tmp_path / 'ours.json').read_text())
    w, lam = theirs['wikitext_local'], theirs['lambada_local']
    for key in ('word_perplexity', 'byte_perplexity', 'bits_per_byte'):
        assert ours['wikitext'][key] == pytest.approx(w[f'{key},none'], rel=1e-4), key
    assert ours['lambada']['perplexity'] == pytest.approx(lam['perplexity,none'], rel=1e-4)
    assert ours['lambada']['accuracy'] == lam['acc,none'] and 0 < lam['acc,none'] < 1
    assert ours['wikitext']['windows'] > 2 * len(pages) and ours['max_length'] == 64

    # the val task on the checkpoint: train.py's own val loss, and bits per byte on the same targets
    run('eval.py', f'--init_from={tmp_path / "run"}', "--tasks=['val']", '--device=cpu',
        f'--out_json={tmp_path / "val.json"}')
    val = json.loads((tmp_path / 'val.json').read_text())['val']
    with open(tmp_path / 'run' / 'metrics.jsonl') as f:
        train_val = [r['val_loss'] for r in map(json.loads, f) if 'val_loss' in r][-1]
    assert val['val_loss'] == pytest.approx(train_val, rel=1e-6)
    assert val['bits_per_byte'] == pytest.approx(val['val_loss'] * val['tokens'] / val['bytes'] / 0.6931471805599453,
                                                 rel=1e-6)


@pytest.mark.parametrize('name', ['gpt2', 'gpt-neox-20b', 'char'])
def test_tokenizer_exports_load_in_transformers(tmp_path, name):
    """The files an export writes load with AutoTokenizer and give data/tokenizer.py's ids, with end-of-text as bos
    and eos; the byte table spells the text back."""
    from transformers import AutoTokenizer
    from data.tokenizer import get_tokenizer
    if name == 'gpt-neox-20b' and not os.path.exists(NEOX_JSON):
        pytest.skip('needs ../shared/data/tokenizers')
    tok = get_tokenizer(name, path=NEOX_JSON if name == 'gpt-neox-20b' else None,
                        chars=''.join(sorted(set(TEXT + ' of'))) if name == 'char' else None)
    tok.save_hf(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    text = TEXT.replace('<|endoftext|>', '<|end of text|>')  # in a text: ours read it as text, HF as the special id
    ours = tok.encode(text)
    assert hf.encode(text, add_special_tokens=False) == ours and len(ours) > 10
    assert hf.bos_token_id == hf.eos_token_id == tok.eot
    assert hf.decode(ours) == text == tok.decode(ours)
    assert b''.join(tok.token_bytes()[i] for i in ours).decode('utf-8') == text


def test_weights_load_and_save_exactly_in_their_dtype(tmp_path):
    """float64 weights load bit for bit as float64 (not through float32); bf16 stays bf16 through expand.py and
    prune.py, unless save_dtype says otherwise."""
    from safetensors.torch import load_file
    from data.tokenizer import get_tokenizer
    from hf_io import from_pretrained, hf_to_state_dict
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=32)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 1e-9)  # digits float32 cannot hold
    tok = get_tokenizer('char', chars='abcdefghijklmnopqrstuvwxyz .')
    m.save_pretrained(str(tmp_path / 'f64'), extra_meta={'tokenizer': tok.meta()}, tokenizer=tok)
    stored = hf_to_state_dict(load_file(str(tmp_path / 'f64' / 'model.safetensors')), m.config)
    loaded = from_pretrained(str(tmp_path / 'f64'), dtype=torch.float64).state_dict()
    assert all(v.dtype == torch.float64 and torch.equal(loaded[k], v) for k, v in stored.items())
    assert next(from_pretrained(str(tmp_path / 'f64')).parameters()).dtype == torch.float64  # None: as stored
    m.to(torch.bfloat16).save_pretrained(str(tmp_path / 'bf16'), extra_meta={'tokenizer': tok.meta()}, tokenizer=tok)
    run('expand.py', f'--init_from={tmp_path / "bf16"}', f'--out_dir={tmp_path / "grown"}', '--n_embd=64')
    run('prune.py', f'--init_from={tmp_path / "bf16"}', f'--out_dir={tmp_path / "pruned"}', '--sparsity=0.5')
    run('prune.py', f'--init_from={tmp_path / "bf16"}', f'--out_dir={tmp_path / "pruned32"}', '--sparsity=0.5',
        '--save_dtype=float32')
    for d, want in (('grown', torch.bfloat16), ('pruned', torch.bfloat16), ('pruned32', torch.float32)):
        sd = load_file(str(tmp_path / d / 'model.safetensors'))
        assert {v.dtype for v in sd.values()} == {want}, d
        assert json.loads((tmp_path / d / 'config.json').read_text())['torch_dtype'] == str(want).split('.')[1]
        assert os.path.exists(tmp_path / d / 'tokenizer.json'), d  # the tokenizer travels with every export
