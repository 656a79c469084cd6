"""Evaluate a model as the field reports it: WikiText perplexities and bits per byte and LAMBADA accuracy and
perplexity, equal to lm-evaluation-harness 0.4.13's `wikitext` and `lambada_openai` (the tests run lm-eval itself), and
the loss and bits per byte (data.estimate_loss) of a prepared dataset's val split (train.py's val batches) and test
split (all of it once). LAMBADA scores ' ' + the last word after the rest; accuracy: greedy decoding gives all of it.
  python eval.py --init_from=out-pydoc --out_json=eval.json --tasks="['wikitext', 'test']" --dtype=bfloat16"""
import configurator  # noqa: F401  (first: from here on Ctrl-C is one line and status 130)
import functools
import json
import math
import os
import re
import time

import torch

import files
from data import estimate_loss, open_tokens, read_meta, sample_batch, windows
from data.tokenizer import TOKENIZERS, check_tokenizers, model_tokenizer, tokenizer_from_meta, tokenizer_record
from hf_io import load_model
from model import DTYPES

# -----------------------------------------------------------------------------
init_from = 'out'             # a train.py out_dir / ckpt.pt, a Hugging Face model directory, or a hub id
tasks = ['wikitext', 'lambada', 'val']  # any of 'wikitext', 'lambada', 'val', 'test'
out_json = None               # write the results here as JSON
wikitext = None               # wiki.test.raw, a jsonl of {"page": ...}, or a hub dataset; None: ../shared, else hub
lambada = None                # a jsonl of {"text": ...} or a hub dataset; None: ../shared, else the hub
data_dir = None               # val, test: a prepared dataset; None: the one a train.py checkpoint was trained on
batch_size = 8                # WikiText / LAMBADA: sequences per forward
eval_iters = None             # val: batches; None: a checkpoint's own (so val_loss is train.py's), else 20
val_batch_size = None         # val, test: sequences per batch; None: a checkpoint's batch_size, else 8
block_size = None             # val, test: tokens per sequence; None: a checkpoint's block_size, else the model's
max_length = None             # WikiText / LAMBADA context; None: a checkpoint's block_size, else the model's
limit = None                  # score only the first `limit` documents of WikiText and LAMBADA (quick checks)
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # where the model runs
dtype = 'float32'             # 'float32' | 'bfloat16': the weights' dtype (log-probabilities always in float32)
tokenizer = None              # WikiText / LAMBADA: None: the model's (data.tokenizer.model_tokenizer)
tokenizer_path = None         # a local tokenizer.json for gpt-neox-20b
# -----------------------------------------------------------------------------
TASKS = ('wikitext', 'lambada', 'val', 'test')
SOURCES = {'wikitext': ('page', 'wikitext/wikitext-2-raw/wiki.test.raw', 'EleutherAI/wikitext_document_level',
                        'wikitext-2-raw-v1'),  # the text field, the file in ../shared, the hub dataset and its config
           'lambada': ('text', 'lambada/lambada_test.jsonl', 'EleutherAI/lambada_openai', None)}
# WikiText's tokenized spelling undone, in this order (literal replacements, and regexes): the text the model scores
DETOKENIZE = [("s '", "s'"), (re.compile(r"/' [0-9]/"), r"/'[0-9]/"), (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."),
              (" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "),
              (re.compile(r"\(\s*([^\)]*?)\s*\)"), r"(\1)"), (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"),
              (re.compile(r"{\s*([^}]*?)\s*}"), r"{\1}"), (re.compile(r"\"\s*([^\"]*?)\s*\""), r'"\1"'),
              (re.compile(r"'\s*([^']*?)\s*'"), r"'\1'"), ("= = = =", "===="), ("= = =", "==="), ("= =", "=="),
              (" \u00b0 ", "\u00b0"), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")]
detokenize = lambda page: functools.reduce(lambda p, r: r[0].sub(r[1], p) if isinstance(r[0], re.Pattern) else  # noqa
                                           p.replace(*r), DETOKENIZE, page)


def wikitext_pages(raw):
    """A raw WikiText file's articles, as lm-eval's document-level dataset: one per top-level heading ' = Title = '."""
    pages, lines = [], []
    for line in raw.split('\n') + ['= end =']:  # a last heading closes the last article
        heading = line.replace('= = =', '===').replace('= =', '==').strip()
        if heading.startswith('= ') and heading.endswith(' ='):
            pages, lines = pages + ['\n'.join(lines)] if '\n'.join(lines).strip() else pages, []
        lines.append(line)
    return pages


def read_documents(task, spec):
    """task's documents: a local wiki.test.raw's articles, a .jsonl's text fields, or a hub dataset's test split."""
    field, _, hub, name = SOURCES[task]
    if os.path.isfile(spec):
        with open(spec, encoding='utf-8') as f:
            docs = list(f) if spec.endswith('.jsonl') else wikitext_pages(f.read())
        for n, line in enumerate(docs if spec.endswith('.jsonl') else (), 1):  # a line: its text field
            try:
                docs[n - 1] = json.loads(line)[field]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError):
                docs[n - 1] = None
            if not isinstance(docs[n - 1], str):
                raise ValueError(f"{spec}:{n}: needs a JSON object with a string {field!r} field")
    elif os.path.exists(spec) or spec.startswith(('.', '/')):
        raise FileNotFoundError(f"{spec}: no such file")
    else:
        from datasets import load_dataset
        try:
            docs = [row[field] for row in load_dataset(spec, name if spec == hub else None, split='test')]
        except Exception as e:
            raise FileNotFoundError(f"{spec!r} is not a local file and could not be loaded from the hub "
                                    f"({type(e).__name__}): pass a local path") from None
    if not docs:
        raise ValueError(f"{spec} holds no {task} documents: pass a complete file")
    return docs


@torch.no_grad()
def score(model, requests, progress=''):
    """[(sum log p(targets), whether greedy decoding gives them)] of requests [(input, targets)], input = (context +
    targets)[:-1]; batched longest first, right-padded: a causal model's real positions never see the padding."""
    from tqdm import tqdm
    order, out = sorted(range(len(requests)), key=lambda i: -len(requests[i][0])), [None] * len(requests)
    for b in tqdm(range(0, len(order), batch_size), desc=progress, disable=None, leave=False):
        idx = order[b:b + batch_size]
        x, y = torch.zeros(2, len(idx), len(requests[idx[0]][0]), dtype=torch.long)  # y: next tokens, 0: not scored
        for row, (inp, tgt) in enumerate(requests[i] for i in idx):
            x[row, :len(inp)], y[row, len(inp) - len(tgt):len(inp)] = torch.tensor(inp), torch.tensor(tgt)
        logp, greedy = model.token_logprobs(*(t.to(next(model.parameters()).device) for t in (x, y)))
        for row, i in enumerate(idx):
            span = slice(len(requests[i][0]) - len(requests[i][1]), len(requests[i][0]))
            out[i] = (logp[row, span].double().sum().item(), bool(greedy[row, span].all()))
    return out


def eval_wikitext(model, tok, L, pages):
    """Word and byte perplexity exp(-sum ll / the raw articles' words or bytes). Each detokenized article is scored
    whole in disjoint windows, as lm-eval's loglikelihood_rolling: the first predicts its first L tokens after
    end-of-text, each next one up to L further tokens from the L tokens before its last target."""
    requests = []
    for t in (tok.encode(detokenize(page)) for page in pages):
        first = [([tok.eot] + t[:min(L, len(t)) - 1], t[:L])] if t else []
        requests += first + [(t[e - L - 1:e - 1], t[s:e]) for s in range(L, len(t), L) for e in [min(s + L, len(t))]]
    total = sum(s for s, _ in score(model, requests, 'wikitext'))
    words, nbytes = sum(len(re.split(r'\s+', p)) for p in pages), sum(len(p.encode('utf-8')) for p in pages)
    return dict(word_perplexity=math.exp(-total / words), byte_perplexity=math.exp(-total / nbytes),
                bits_per_byte=-total / nbytes / math.log(2), loglikelihood=total, documents=len(pages), words=words,
                bytes=nbytes, windows=len(requests), tokens=sum(len(t) for _, t in requests))


def eval_lambada(model, tok, L, texts):
    requests = []
    for text in texts:
        context = text.rsplit(' ', 1)[0] if ' ' in text else ''  # its trailing spaces go to the target, as in lm-eval
        context, target = context.rstrip(), context[len(context.rstrip()):] + ' ' + text.split(' ')[-1]
        ctx = tok.encode(context) if context else [tok.eot]
        cont = tok.encode(context + target)[len(ctx):] if context else tok.encode(target)
        requests.append(((ctx + cont)[-(L + 1):-1], cont))
    ll, hit = zip(*score(model, requests, 'lambada'))
    return dict(accuracy=sum(hit) / len(hit), perplexity=math.exp(-sum(ll) / len(ll)), documents=len(hit))


if __name__ == '__main__':
    from configurator import CONFIG_ERROR, Rule, configure, fail, non_empty, one_of, positive, device as device_rule
    configure(globals(), rules=dict(init_from=non_empty, tasks=Rule(lambda v: len(v) > 0 and set(v) <= set(TASKS), (
        "a non-empty list of " + ', '.join(map(repr, TASKS)))), eval_iters=positive, batch_size=positive,
        val_batch_size=positive, block_size=positive, max_length=positive, limit=positive, device=device_rule,
        dtype=one_of('float32', 'bfloat16'), tokenizer=one_of(*TOKENIZERS)))
    if out_json and files.check_dest(out_json):
        fail(files.check_dest(out_json))
    t0, splits, docs = time.time(), [t for t in tasks if t in ('val', 'test')], {}
    try:
        model, source = load_model(init_from, dtype=torch.float32)
        run, ctx = (source['checkpoint'] or {}).get('config') or {}, model.config.block_size  # a train.py run's
        T, L = (v or run.get('block_size') or ctx for v in (block_size, max_length))
        data_dir = data_dir or (run.get('data_dir') if splits else None)
        if max(T, L) > ctx or (splits and not data_dir):
            fail(f"block_size/max_length {max(T, L)} exceeds the model's context of {ctx}" if max(T, L) > ctx else
                 "the val and test tasks need --data_dir: only a train.py checkpoint names its dataset", CONFIG_ERROR)
        for task in (t for t in ('wikitext', 'lambada') if t in tasks):
            local = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'shared', 'data', SOURCES[task][1])
            globals()[task] = globals()[task] or (local if os.path.isfile(local) else SOURCES[task][2])
            docs[task] = read_documents(task, globals()[task])[:limit]
        meta = read_meta(data_dir) if splits else None
        tok = model_tokenizer(model.config.arch, source, tokenizer, tokenizer_path) if docs else None
        for other, what in ((meta, f'the dataset {data_dir}'), (tok, f"the {getattr(tok, 'name', '')} tokenizer")):
            for m in filter(None, [model, tokenizer_record(source)] if other else []):  # its vocabulary, its record
                check_tokenizers(m, other, f'the model {init_from}', what)
        data = {s: open_tokens(data_dir, s, meta) for s in splits}
        if any(len(data[s]) <= T for s in splits):
            raise ValueError(f"{data_dir}: a split has fewer than block_size+1={T + 1} tokens")
        nbytes_of = meta and torch.tensor(list(map(len, tokenizer_from_meta(meta).token_bytes())), dtype=torch.float64)
        vbs, iters = val_batch_size or run.get('batch_size') or 8, eval_iters or run.get('eval_iters') or 20
        if tok is not None and model.config.byte_pool:
            from byte_pool import check_byte_table
            check_byte_table(model, tok)
        model.eval().to(device=device, dtype=DTYPES[dtype])
        results = dict(model=init_from, max_length=L, dtype=dtype, device=device, tokenizer=tok and tok.name)
        for task in tasks:
            if task in docs:
                try:
                    results[task] = dict(globals()['eval_' + task](model, tok, L, docs[task]), source=globals()[task])
                except ValueError as e:  # a character vocabulary meeting characters outside it
                    results[task] = dict(skipped=f"the {tok.name} tokenizer cannot encode the text: {e}")
            else:
                xys = [torch.from_numpy(a) for a in ((sample_batch(data[task], 0, (k,), vbs, T) for k in range(iters))
                                                     if task == 'val' else windows(data[task], T, vbs))]  # val:
                results[task] = dict(zip((f'{task}_loss', 'bits_per_byte', 'tokens'), estimate_loss(  # train.py's
                    model, ((xy[:, :-1].to(device), xy[:, 1:].to(device)) for xy in xys), nbytes_of)),  # batches;
                    bytes=int(sum(nbytes_of[xy[:, 1:]].sum() for xy in xys)), data_dir=data_dir, block_size=T,  # test:
                    batch_size=vbs, **({'eval_iters': iters} if task == 'val' else {}))  # the whole split once
            print(f"{task:>9s}: " + ('skipped: ' + r['skipped'] if 'skipped' in (r := results[task]) else
                                      ', '.join(f"{k} {v:.6g}" for k, v in r.items() if isinstance(v, float))))
        if out_json:
            files.write_json(out_json, dict(results, seconds=time.time() - t0))
            print(f"wrote {out_json}")
    except (ValueError, OSError) as e:
        fail(e)
