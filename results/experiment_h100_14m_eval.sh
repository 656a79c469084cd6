#!/usr/bin/env bash
# Scale A of the grow experiment run again, every arm of it in one go, so that eval.py's WikiText bits per byte is
# measured on every final model (results/experiment_h100_14m_eval/; README). The runner evaluates each finished arm
# (experiment.py eval_tasks); WikiText-2's raw test file travels in .carry like the enwiki shards:
#   mkdir -p .carry && cp ../shared/data/enwiki/enwiki_train_0[0-3].jsonl.xz ../shared/data/enwiki/enwiki_val.jsonl.xz \
#       ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json ../shared/data/wikitext/wikitext-2-raw/wiki.test.raw .carry/
# One H100, 7 minutes (data/enwiki_neox already prepared by results/bytes_h100.sh in the same session; otherwise
# prepare it as results/experiment_h100.sh does).
set -euo pipefail
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCHINDUCTOR_COMPILE_THREADS=4 TOKENIZERS_PARALLELISM=false
mkdir -p out-logs
python experiment.py config/experiment_h100_14m.py --exp_dir=out-exp-h100-14m-eval \
    "--eval_args=['--wikitext=.carry/wiki.test.raw', '--batch_size=16']" > out-logs/exp14.log 2>&1
