#!/usr/bin/env bash
# How often a BPE token is longer than byte_block bytes on English Wikipedia (README, byte-level section): one
# enwiki shard (45 M characters) tokenized with GPT-2 and with GPT-NeoX-20B; per block size, the share of tokens
# longer than it and the share of the text's bytes its truncation drops (byte_pool.py). CPU, ~1 min.
set -euo pipefail
export TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$(realpath ../shared/data/tiktoken_cache)}
for t in gpt2 gpt-neox-20b; do
  python data/prepare.py --input=../shared/data/enwiki/enwiki_train_00.jsonl.xz \
      --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --tokenizer=$t \
      --tokenizer_path=../shared/data/tokenizers/gpt-neox-20b/tokenizer.json --out_dir=data/enwiki00_$t --num_proc=1
done
count() {  # $1: a prepared dataset (its train split), $2: the JSON written
  python - "$1" "$2" <<'EOF'
import json
import sys

import numpy as np

from data import open_tokens, read_meta
from data.tokenizer import tokenizer_from_meta

data_dir, out_json = sys.argv[1:]
meta = read_meta(data_dir)
ids = np.asarray(open_tokens(data_dir, 'train', meta))
lengths = np.array([len(b) for b in tokenizer_from_meta(meta).token_bytes()])
count = np.bincount(ids, minlength=len(lengths))[:len(lengths)]
tokens, nbytes = int(count.sum()), int((count * lengths).sum())
out = dict(data_dir=data_dir, split='train', tokenizer=meta['tokenizer'], tokens=tokens, bytes=nbytes,
           bytes_per_token=nbytes / tokens, longest_token_in_vocab=int(lengths.max()),
           longest_token_seen=int(lengths[count > 0].max()), blocks={})
for b in (8, 12, 16, 24, 32):
    over = lengths > b
    out['blocks'][b] = dict(tokens_longer=int(count[over].sum()), share_of_tokens=float(count[over].sum() / tokens),
                            share_of_bytes_dropped=float((count * np.maximum(lengths - b, 0)).sum() / nbytes),
                            vocab_entries_longer=int(over.sum()))
print(json.dumps(out, indent=1))
with open(out_json, 'w') as f:
    json.dump(out, f, indent=1)
EOF
}
count data/enwiki00_gpt2 results/byte_long_tokens_gpt2.json
count data/enwiki00_gpt-neox-20b results/byte_long_tokens_neox.json
