"""
Tiny Shakespeare (1.1 M characters), character-level as in char-rnn / nanoGPT: the first 90% of the text
is train, the rest val (cut at a line break), each ending with the end-of-text id.
  python data/shakespeare_char/prepare.py                          # downloads input.txt
  python data/shakespeare_char/prepare.py --input=../shared/data/tinyshakespeare/input.txt
"""
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.prepare import char_alphabet, split_text, write_dataset  # noqa: E402
from data.tokenizer import get_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
input = None              # a local copy of input.txt; None downloads it
url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
out_dir = os.path.dirname(os.path.abspath(__file__))
tokenizer = 'char'        # 'char' | 'gpt2' | 'gpt-neox-20b'
tokenizer_path = None
val_fraction = 0.1
# -----------------------------------------------------------------------------
from configurator import configure, fail, between, one_of  # noqa: E402
configure(globals(), rules=dict(tokenizer=one_of('char', 'gpt2', 'gpt-neox-20b'),
                                val_fraction=between(0, 1, lo_open=True, hi_open=True)))

try:
    if input is None:
        print(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=60) as r:
            text = r.read().decode('utf-8')
    else:
        with open(input, encoding='utf-8') as f:
            text = f.read()
    train_text, val_text = split_text(text, val_fraction)
    tok = get_tokenizer(tokenizer, path=tokenizer_path, chars=char_alphabet([text]) if tokenizer == 'char' else None)
    write_dataset(out_dir, [train_text], tok, source=input or url, val_docs=[val_text], num_proc=1)
except (OSError, ValueError) as e:
    fail(e)
