"""
Evaluate a model the way the field reports it: WikiText perplexities and bits per byte, LAMBADA accuracy and
perplexity, and val loss with bits per byte on a prepared dataset. The WikiText and LAMBADA numbers are those of
lm-evaluation-harness 0.4.13's `wikitext` and `lambada_openai` tasks on the same model (tests/test_eval.py runs
lm-eval itself and compares to 1e-4 relative).
  python eval.py --init_from=out-pydoc --out_json=eval.json          # a train.py out_dir, HF directory or hub id
  python eval.py --init_from=out/model --tasks="['wikitext']" --device=cuda --dtype=bfloat16
WikiText: the raw test set (wiki.test.raw of WikiText-2, the same text as WikiText-103's), split into its 62
articles; each article, detokenized as lm-eval does, is scored whole with disjoint rolling windows of the model's
context (each window predicts up to max_length new tokens, the first after the end-of-text token): word perplexity
= exp(-sum ll / words), byte perplexity = exp(-sum ll / bytes), bits per byte = -sum ll / bytes / ln 2, words and
bytes counted on the article before detokenization. LAMBADA (OpenAI's version): the log-likelihood of ' ' + the last
word after the rest of the passage; accuracy = greedy decoding gives every token of it, perplexity = exp(-mean ll).
Val: train.py's val loss (the same eval_iters batches) and bits per byte = the summed loss / ln 2 / the UTF-8 bytes
those target tokens spell.
"""
import json
import math
import os
import re
import time

import numpy as np
import torch

from configurator import (configure, fail, CONFIG_ERROR, Rule, positive, non_empty, one_of, device as device_rule)
from data import open_tokens, read_meta, sample_batch
from data.tokenizer import model_tokenizer, tokenizer_from_meta
from hf_io import load_model

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'shared', 'data')
# -----------------------------------------------------------------------------
init_from = 'out'             # a train.py out_dir / ckpt.pt, a Hugging Face model directory, or a hub id
tasks = ['wikitext', 'lambada', 'val']
out_json = None               # write the results here as JSON
wikitext = None               # wiki.test.raw, a jsonl of {"page": ...}, or a hub dataset; None: ../shared, else hub
lambada = None                # a jsonl of {"text": ...} or a hub dataset; None: ../shared, else the hub
data_dir = None               # val: a prepared dataset; None: the one a train.py checkpoint was trained on
batch_size = 8                # WikiText / LAMBADA: sequences per forward
eval_iters = None             # val: batches; None: a checkpoint's own (so val_loss is train.py's), else 20
val_batch_size = None         # val: sequences per batch; None: a checkpoint's batch_size, else 8
block_size = None             # val: tokens per sequence; None: a checkpoint's block_size, else the model's
max_length = None             # WikiText/LAMBADA context; None: a checkpoint's training block_size, else the model's
                              # block_size (what lm-eval reads from config.json)
limit = None                  # score only the first `limit` documents of WikiText and LAMBADA (quick checks)
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'float32'             # 'float32' | 'bfloat16': the weights' dtype (log-probabilities always in float32)
tokenizer = None              # None: the model's (as sample.py finds it)
tokenizer_path = None
check_only = False            # check the settings and exit (experiment.py does, before any arm trains)
# -----------------------------------------------------------------------------
TASKS = Rule(lambda v: len(v) > 0 and set(v) <= {'wikitext', 'lambada', 'val'},
             "a non-empty list of 'wikitext', 'lambada', 'val'")
WIKITEXT_HUB, LAMBADA_HUB = ('EleutherAI/wikitext_document_level', 'wikitext-2-raw-v1'), 'EleutherAI/lambada_openai'

# WikiText's tokenized spelling undone, in this order (literal replacements, and regexes marked re): the text the
# model scores. Word and byte counts use the article as it is.
DETOKENIZE = [
    ("s '", "s'"), (re.compile(r"/' [0-9]/"), r"/'[0-9]/"),
    (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."),
    (" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "),
    (re.compile(r"\(\s*([^\)]*?)\s*\)"), r"(\1)"), (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"),
    (re.compile(r"{\s*([^}]*?)\s*}"), r"{\1}"), (re.compile(r"\"\s*([^\"]*?)\s*\""), r'"\1"'),
    (re.compile(r"'\s*([^']*?)\s*'"), r"'\1'"),
    ("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \u00b0 ", "\u00b0"),
    (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s"),
]


def detokenize(page):
    for pattern, repl in DETOKENIZE:
        page = pattern.sub(repl, page) if isinstance(pattern, re.Pattern) else page.replace(pattern, repl)
    return page


def wikitext_pages(raw):
    """The articles of a raw WikiText file, as the document-level dataset lm-eval uses splits them: a new article
    starts at each top-level heading line (' = Title = '; section headings are '= = ...'), and a leading part with
    no text is dropped."""
    pages, lines = [], []
    for line in raw.split('\n'):
        heading = line.replace('= = =', '===').replace('= =', '==').strip()
        if heading.startswith('= ') and heading.endswith(' ='):
            if '\n'.join(lines).strip():
                pages.append('\n'.join(lines))
            lines = []
        lines.append(line)
    pages.append('\n'.join(lines))
    return pages


def read_documents(spec, field, hub):
    """Documents from a local file (wiki.test.raw: articles; .jsonl: one JSON object per line, its `field`) or a hub
    dataset's test split."""
    if os.path.isfile(spec):
        with open(spec, encoding='utf-8') as f:
            if spec.endswith('.jsonl'):
                docs = []
                for n, line in enumerate(f, 1):
                    try:
                        doc = json.loads(line)[field]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        doc = None
                    if not isinstance(doc, str):
                        raise ValueError(f"{spec}:{n}: needs a JSON object with a string {field!r} field")
                    docs.append(doc)
                return docs
            return wikitext_pages(f.read())
    if os.path.exists(spec) or spec.startswith(('.', '/')):
        raise FileNotFoundError(f"{spec}: no such file")
    from datasets import load_dataset
    name = hub[1] if isinstance(hub, tuple) and spec == hub[0] else None
    try:
        return [row[field] for row in load_dataset(spec, name, split='test')]
    except Exception as e:
        raise FileNotFoundError(f"{spec!r} is not a local file and could not be loaded from the hub "
                                f"({type(e).__name__}): pass a local path") from None


class Skipped(Exception):
    """A task this model's tokenizer cannot take (a character vocabulary meeting characters outside it)."""


def encode(tok, text):
    try:
        return tok.encode(text)
    except ValueError as e:
        raise Skipped(f"the {tok.name} tokenizer cannot encode the text: {e}") from None


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def score(model, requests, progress=''):
    """requests: [(input ids, targets)] with targets the len(targets) tokens after input[-len(targets)]..., i.e.
    input = (context + targets)[:-1]. Returns [(sum of log p(targets), whether greedy decoding gives them)].
    Batched by length (longest first, right-padded: a causal model's real positions never see the padding)."""
    from tqdm import tqdm
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]))
    out = [None] * len(requests)
    dev = next(model.parameters()).device
    for b in tqdm(range(0, len(order), batch_size), desc=progress, disable=None, leave=False):
        idx = order[b:b + batch_size]
        T = len(requests[idx[0]][0])
        x = torch.zeros(len(idx), T, dtype=torch.long)
        y = torch.zeros(len(idx), T, dtype=torch.long)  # each input position's next token (0 where not scored)
        for row, i in enumerate(idx):
            inp, tgt = requests[i]
            x[row, :len(inp)] = torch.tensor(inp)
            y[row, len(inp) - len(tgt):len(inp)] = torch.tensor(tgt)
        logp, greedy = model.token_logprobs(x.to(dev), y.to(dev))
        for row, i in enumerate(idx):
            inp, tgt = requests[i]
            span = slice(len(inp) - len(tgt), len(inp))
            out[i] = (logp[row, span].double().sum().item(), bool(greedy[row, span].all()))
    return out


def rolling_windows(tokens, prefix, L):
    """Disjoint windows scoring every token of a document once, as lm-eval's loglikelihood_rolling: the first window
    predicts tokens[:L] after the prefix token; each next one predicts up to L further tokens with the L tokens
    before its last target as input."""
    n = len(tokens)
    if n == 0:
        return []
    first = min(L, n)
    windows = [([prefix] + tokens[:first - 1], tokens[:first])]
    done = first
    while done < n:
        k = min(n - done, L)
        end = done + k
        windows.append((tokens[end - L - 1:end - 1], tokens[end - k:end]))
        done = end
    return windows


def eval_wikitext(model, tok, L, pages):
    requests, owner = [], []
    for d, page in enumerate(pages):
        for w in rolling_windows(encode(tok, detokenize(page)), tok.eot, L):
            requests.append(w)
            owner.append(d)
    ll = [s for s, _ in score(model, requests, 'wikitext')]
    total = sum(ll)
    words = sum(len(re.split(r'\s+', p)) for p in pages)
    nbytes = sum(len(p.encode('utf-8')) for p in pages)
    return dict(word_perplexity=math.exp(-total / words), byte_perplexity=math.exp(-total / nbytes),
                bits_per_byte=-total / nbytes / math.log(2), loglikelihood=total, documents=len(pages), words=words,
                bytes=nbytes, windows=len(requests), tokens=sum(len(t) for _, t in requests))


def eval_lambada(model, tok, L, texts):
    requests = []
    for text in texts:
        context, target = ' '.join(text.split(' ')[:-1]), ' ' + text.split(' ')[-1]
        spaces = len(context) - len(context.rstrip())  # trailing spaces belong to the target, as lm-eval moves them
        if spaces:
            context, target = context[:-spaces], context[-spaces:] + target
        if context:
            ctx = encode(tok, context)
            cont = encode(tok, context + target)[len(ctx):]
        else:
            ctx, cont = [tok.eot], encode(tok, target)
        whole = (ctx + cont)[-(L + 1):]
        requests.append((whole[:-1], cont))
    res = score(model, requests, 'lambada')
    ll = [s for s, _ in res]
    return dict(accuracy=sum(g for _, g in res) / len(res), perplexity=math.exp(-sum(ll) / len(ll)), documents=len(res))


@torch.no_grad()
def eval_val(model, data_dir, eval_iters, batch_size, T):
    """train.py's val loss (its eval_iters batches: seed 0, keys (k,)) and its bits per byte."""
    meta = read_meta(data_dir)
    data = open_tokens(data_dir, 'val', meta)
    nbytes_of = np.array([len(b) for b in tokenizer_from_meta(meta).token_bytes()] +
                         [0] * max(0, model.config.vocab_size - meta['vocab_size']))
    dev = next(model.parameters()).device
    total, units, nbytes = 0.0, 0, 0
    for k in range(eval_iters):
        xy = torch.from_numpy(sample_batch(data, 0, (k,), batch_size, T)).to(dev)
        nll = model(xy[:, :-1], xy[:, 1:], reduction='none')[1]  # per token (byte-level: over its bytes)
        total += nll.double().sum().item()
        units += model.loss_units(xy[:, 1:])
        nbytes += int(nbytes_of[xy[:, 1:].cpu().numpy()].sum())
    return dict(val_loss=total / units, bits_per_byte=total / nbytes / math.log(2),
                tokens=eval_iters * batch_size * T, bytes=nbytes, data_dir=data_dir, eval_iters=eval_iters,
                batch_size=batch_size, block_size=T)


def main():
    global wikitext, lambada, data_dir
    configure(globals(), rules=dict(
        init_from=non_empty, tasks=TASKS, eval_iters=positive, batch_size=positive, val_batch_size=positive,
        block_size=positive, max_length=positive, limit=positive, device=device_rule, dtype=one_of('float32', 'bfloat16'),
        tokenizer=one_of('gpt2', 'gpt-neox-20b', 'char')))
    if check_only:
        return None
    t0 = time.time()
    try:
        model, source = load_model(init_from, dtype=torch.float32)
        ckpt_config = (source['checkpoint'] or {}).get('config') or {}
        data_dir = data_dir or (ckpt_config.get('data_dir') if 'val' in tasks else None)
        if 'val' in tasks and not data_dir:
            fail("the val task needs --data_dir (a prepared dataset): only a train.py checkpoint names its own",
                 CONFIG_ERROR)
        T = block_size or ckpt_config.get('block_size') or model.config.block_size
        val_shape = (eval_iters or ckpt_config.get('eval_iters') or 20,
                     val_batch_size or ckpt_config.get('batch_size') or 8, T)
        L = max_length or ckpt_config.get('block_size') or model.config.block_size
        if 'val' in tasks and len(open_tokens(data_dir, 'val', read_meta(data_dir))) <= val_shape[2]:
            fail(f"{data_dir}/val.bin has fewer than block_size+1={val_shape[2] + 1} tokens")
        if max(T, L) > model.config.block_size:
            fail(f"block_size/max_length {max(T, L)} exceeds the model's context of {model.config.block_size}",
                 CONFIG_ERROR)
        tok = model_tokenizer(model.config.arch, source, tokenizer, tokenizer_path) \
            if {'wikitext', 'lambada'} & set(tasks) else None
        if tok is not None and model.config.byte_pool:
            from byte_pool import check_byte_table
            check_byte_table(model, tok)
        if tok is not None and tok.vocab_size > model.config.vocab_size:
            fail(f"the {tok.name} tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}: "
                 f"pass the model's --tokenizer", CONFIG_ERROR)
        docs = {}
        if 'wikitext' in tasks:
            local = os.path.join(SHARED, 'wikitext', 'wikitext-2-raw', 'wiki.test.raw')
            wikitext = wikitext or (local if os.path.isfile(local) else WIKITEXT_HUB[0])
            docs['wikitext'] = read_documents(wikitext, 'page', WIKITEXT_HUB)[:limit]
        if 'lambada' in tasks:
            local = os.path.join(SHARED, 'lambada', 'lambada_test.jsonl')
            lambada = lambada or (local if os.path.isfile(local) else LAMBADA_HUB)
            docs['lambada'] = read_documents(lambada, 'text', LAMBADA_HUB)[:limit]
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    del source
    model.eval().to(device=device, dtype=getattr(torch, dtype))
    results = dict(model=init_from, max_length=L, dtype=dtype, device=device,
                   tokenizer=None if tok is None else tok.name)
    for task in tasks:
        try:
            if task == 'wikitext':
                results['wikitext'] = dict(eval_wikitext(model, tok, L, docs['wikitext']), source=wikitext)
            elif task == 'lambada':
                results['lambada'] = dict(eval_lambada(model, tok, L, docs['lambada']), source=lambada)
            else:
                results['val'] = eval_val(model, data_dir, *val_shape)
        except Skipped as e:
            results[task] = dict(skipped=str(e))
    results['seconds'] = time.time() - t0
    for task in tasks:
        r = results[task]
        print(f"{task:>9s}: " + ('skipped: ' + r['skipped'] if 'skipped' in r else
                                  ', '.join(f"{k} {v:.6g}" for k, v in r.items() if isinstance(v, float))))
    if out_json:
        try:
            with open(out_json + '.tmp', 'w') as f:
                json.dump(results, f, indent=1)
            os.replace(out_json + '.tmp', out_json)
        except OSError as e:
            fail(f"cannot write {out_json} ({e.strerror or e})")
        print(f"wrote {out_json}")
    return results


if __name__ == '__main__':
    main()
