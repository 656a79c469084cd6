"""Sample from a trained model, nanoGPT style; samples go to stdout, separated by '---------------'.
  python sample.py --init_from=out-pydoc --start="FILE:prompt.txt" --num_samples=2 --top_p=0.9
  python sample.py --init_from=EleutherAI/pythia-70m-deduped --start="The capital of France is" --temperature=0"""
import configurator as cf  # first: from here on Ctrl-C is one line and status 130
import torch
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
tokenizer = None              # None: the model's (its dataset's, record's or family's); or gpt2 | gpt-neox-20b | char
tokenizer_path = None         # a local tokenizer.json for gpt-neox-20b (instead of the hub)
# -----------------------------------------------------------------------------
import model as gpt  # modules, not settings: configure() takes the names of config types only
from byte_pool import check_byte_table, to_text
from data.tokenizer import TOKENIZERS, check_tokenizers, model_tokenizer
from hf_io import load_model
cf.configure(globals(), rules=dict(
    init_from=cf.non_empty, num_samples=cf.positive, max_new_tokens=cf.non_negative, temperature=cf.non_negative,
    top_k=cf.nullable(cf.positive), top_p=cf.between(0, 1, lo_open=True), seed=cf.non_negative, device=cf.device,
    dtype=cf.one_of(*gpt.DTYPES), tokenizer=cf.one_of(*TOKENIZERS)))
try:
    model, source = load_model(init_from, dtype=gpt.DTYPES[dtype])  # inference only: the weights in dtype
    tok = model_tokenizer(model.config.arch, source, tokenizer, tokenizer_path)
    check_tokenizers(model, tok, f'the model {init_from}', f'the {tok.name} tokenizer')  # ids past the embedding
    check_byte_table(model, tok)
except (ValueError, FileNotFoundError, RuntimeError) as e:
    cf.fail(e)
model.eval().to(device)
try:
    start = open(start[5:], encoding='utf-8').read() if start.startswith('FILE:') else start
    start_ids = tok.encode(start) or [tok.eot]  # an empty prompt starts a new document
except (OSError, UnicodeDecodeError) as e:  # UnicodeDecodeError before ValueError, its base
    why = e.strerror if isinstance(e, OSError) else f"not UTF-8 text (byte {e.start}): save it as UTF-8"
    cf.fail(f"cannot read the prompt file {start[5:]!r}: {why}")
except ValueError as e:
    cf.fail(f"cannot encode the prompt: {e}")
x = (model.byte_table[start_ids].long() if model.config.byte_pool else torch.tensor(start_ids, device=device))[None]
generator = torch.Generator(device=device).manual_seed(seed)
for _ in range(num_samples):  # only the tokenizer's ids: a vocabulary padded past it has ids no text decodes to
    y = model.generate(x, max_new_tokens, temperature, top_k, top_p, generator, tok.vocab_size)[0]
    print(tok.decode(start_ids) + to_text(y[len(start_ids):]) if model.config.byte_pool else tok.decode(y.tolist()),
          '-' * 15, sep='\n')
