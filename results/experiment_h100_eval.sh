#!/usr/bin/env bash
# One scale of the grow experiment run again, every arm of it in one go, so that eval.py's WikiText bits per byte is
# measured on every final model (README): bash results/experiment_h100_eval.sh 14m   -> results/experiment_h100_14m_eval/
# (7 minutes on one H100); 70m for scale B (13.5 minutes on one H200, data preparation included: longer than one device
# call, so run it under setsid and poll, or across calls: a rerun continues the experiment). The committed scale B,
# results/experiment_h200_70m_eval/, is out-exp-h100-70m-eval of that H200 run (commit 456777c), its plot redrawn with
# --plot_only=True "--title=... one H200". The runner evaluates each finished arm
# (experiment.py eval_tasks); WikiText-2's raw test file travels in .carry like the enwiki shards:
#   mkdir -p .carry && cp ../shared/data/enwiki/enwiki_train_0[0-3].jsonl.xz ../shared/data/enwiki/enwiki_val.jsonl.xz \
#       ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json ../shared/data/wikitext/wikitext-2-raw/wiki.test.raw .carry/
# data/enwiki_neox: prepared as results/experiment_h100.sh does (results/bytes_h100.sh had prepared it for the 14m run).
set -euo pipefail
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCHINDUCTOR_COMPILE_THREADS=4 TOKENIZERS_PARALLELISM=false
scale=${1:?usage: results/experiment_h100_eval.sh 14m|70m}
[ -f data/enwiki_neox/meta.json ] || python data/prepare.py --input='.carry/enwiki_train_0[0-3].jsonl.xz' \
    --val_input=.carry/enwiki_val.jsonl.xz --tokenizer=gpt-neox-20b --tokenizer_path=.carry/tokenizer.json \
    --out_dir=data/enwiki_neox --num_proc=16
mkdir -p out-logs
python experiment.py config/experiment_h100_$scale.py --exp_dir=out-exp-h100-$scale-eval \
    "--eval_args=['--wikitext=.carry/wiki.test.raw', '--batch_size=16']" > out-logs/exp$scale.log 2>&1
