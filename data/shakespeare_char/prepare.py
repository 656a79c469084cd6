"""
Tiny Shakespeare (1.1 M characters), character-level as in char-rnn and nanoGPT: the first 90% of the text is train,
the rest val (cut at a line break), each ending with the end-of-text id.
  python data/shakespeare_char/prepare.py                          # downloads input.txt
  python data/shakespeare_char/prepare.py --input=../shared/data/tinyshakespeare/input.txt
"""
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.prepare import char_alphabet, write_dataset  # noqa: E402
from data.tokenizer import TOKENIZERS, get_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
input = None              # a local copy of input.txt; None: downloaded from url
url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
out_dir = os.path.dirname(os.path.abspath(__file__))  # where the dataset is written
overwrite = False         # True: replace the dataset already in out_dir
tokenizer = 'char'        # 'char' | 'gpt2' | 'gpt-neox-20b'
tokenizer_path = None     # a local tokenizer.json for gpt-neox-20b
val_fraction = 0.1        # the last tenth is validation
# -----------------------------------------------------------------------------
from configurator import between, configure, fail, one_of  # noqa: E402
configure(globals(), rules=dict(tokenizer=one_of(*TOKENIZERS), val_fraction=between(0, 1, lo_open=True, hi_open=True)))
try:
    if input is None:
        print(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=60) as r:
            text = r.read().decode('utf-8')
    else:
        with open(input, encoding='utf-8') as f:
            text = f.read()
    cut = text.find('\n', int(len(text) * (1 - val_fraction))) + 1 or len(text) - 1  # at a line break, or the end
    write_dataset(out_dir, [text[:cut]], get_tokenizer(tokenizer, tokenizer_path, char_alphabet([text])), num_proc=1,
                  source=input or url, val_docs=[text[cut:]], overwrite=overwrite)
except (OSError, ValueError) as e:
    fail(e)
