#!/usr/bin/env bash
# How often a BPE token is longer than byte_block bytes on English Wikipedia (README, byte-level section): one
# enwiki shard (45 M characters) tokenized with GPT-2 and with GPT-NeoX-20B, counted by byte_pool.py. CPU, ~1 min.
set -euo pipefail
export TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$(realpath ../shared/data/tiktoken_cache)}
for t in gpt2 gpt-neox-20b; do
  python data/prepare.py --input=../shared/data/enwiki/enwiki_train_00.jsonl.xz \
      --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --tokenizer=$t \
      --tokenizer_path=../shared/data/tokenizers/gpt-neox-20b/tokenizer.json --out_dir=data/enwiki00_$t --num_proc=1
done
python byte_pool.py --data_dir=data/enwiki00_gpt2 --split=train --out_json=results/byte_long_tokens_gpt2.json
python byte_pool.py --data_dir=data/enwiki00_gpt-neox-20b --split=train --out_json=results/byte_long_tokens_neox.json
