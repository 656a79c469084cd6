"""
Sample from a trained model, nanoGPT style. Samples go to stdout, separated by '---------------'.
  python sample.py --init_from=out-pydoc                          # a train.py out_dir (its ckpt.pt)
  python sample.py --init_from=out-pydoc/model --start="FILE:prompt.txt" --num_samples=2 --top_p=0.9
  python sample.py --init_from=EleutherAI/pythia-70m-deduped --start="The capital of France is" --temperature=0
The tokenizer, unless named by `tokenizer`, comes from the model's metadata: a checkpoint's dataset meta.json;
for a model directory its config.json "growing_sparse" record, else a tokenizer.json next to the weights, else
the family's own (gpt2: GPT-2 BPE via tiktoken; gpt_neox: GPT-NeoX-20B, from tokenizer_path or the hub).
"""

import torch

from hf_io import load_model
from data.tokenizer import model_tokenizer

# -----------------------------------------------------------------------------
init_from = 'out'             # a train.py out_dir (with ckpt.pt), or a Hugging Face model directory / hub id
start = '\n'                  # the prompt, or 'FILE:path' to read it from a file; '' starts from end-of-text
num_samples = 3
max_new_tokens = 200
temperature = 0.8             # 0: greedy
top_k = 200                   # None: off
top_p = None                  # nucleus sampling: keep the smallest set of tokens with probability >= top_p
seed = 1337
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'
use_cache = True              # KV cache; False recomputes the whole context for every token
tokenizer = None              # None: from the model's metadata; or 'gpt2' | 'gpt-neox-20b' | 'char'
tokenizer_path = None         # a local tokenizer.json for gpt-neox-20b (instead of the hub)
# -----------------------------------------------------------------------------
from configurator import (configure, fail, CONFIG_ERROR, positive, non_negative, non_empty, between,  # noqa: E402
                          one_of, nullable, device as device_rule)
config = configure(globals(), rules=dict(
    init_from=non_empty, num_samples=positive, max_new_tokens=non_negative, temperature=non_negative,
    top_k=nullable(positive), top_p=between(0, 1, lo_open=True), seed=non_negative, device=device_rule,
    dtype=one_of('float32', 'bfloat16', 'float16'), tokenizer=one_of('gpt2', 'gpt-neox-20b', 'pythia', 'char')))


try:
    model, source = load_model(init_from, dtype=torch.float32)
    tok = model_tokenizer(model.config.arch, source, tokenizer, tokenizer_path)
    if model.config.byte_pool:
        from byte_pool import check_byte_table
        check_byte_table(model, tok)
except (ValueError, FileNotFoundError, RuntimeError) as e:
    fail(e)
if tok.vocab_size > model.config.vocab_size:
    fail(f"the {tok.name} tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}: "
         f"this is not the model's tokenizer; pass the right --tokenizer", CONFIG_ERROR)
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
# inference only: the weights themselves in dtype, so the KV cache is in dtype too
model.eval().to(device=device, dtype=ptdtype)

if start.startswith('FILE:'):
    try:
        with open(start[5:], encoding='utf-8') as f:
            start = f.read()
    except OSError as e:
        fail(f"cannot read the prompt file {start[5:]!r}: {e.strerror}")
    except UnicodeDecodeError as e:
        fail(f"the prompt file {start[5:]!r} is not UTF-8 text (byte {e.start}): save it as UTF-8")
try:
    start_ids = tok.encode(start) or [tok.eot]  # an empty prompt starts a new document
except ValueError as e:
    fail(f"cannot encode the prompt: {e}")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, :]
generator = torch.Generator(device=device).manual_seed(seed)

if model.config.byte_pool:  # the prompt's ids spelled in bytes; the model answers in bytes
    x = model.byte_table[x].long()
with torch.no_grad():
    for _ in range(num_samples):
        # only the tokenizer's ids: a vocabulary padded to a multiple of 64 has ids no text decodes to
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           use_cache=use_cache, generator=generator, vocab_size=tok.vocab_size)[0]
        if model.config.byte_pool:
            from byte_pool import to_text
            print(tok.decode(start_ids) + to_text(y[len(start_ids):]))
        else:
            print(tok.decode(y.tolist()))
        print('---------------')
