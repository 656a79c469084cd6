#!/usr/bin/env bash
# The measured answer (README; results/experiment_h100_14m/ and results/experiment_h100_70m/): both scales of the
# grow experiment on one H100, the small models pretrained here. The GPU machine has no ../shared, so the four
# enwiki shards it tokenizes (44 M GPT-NeoX tokens) travel in .carry:
#   mkdir -p .carry && cp ../shared/data/enwiki/enwiki_train_0[0-3].jsonl.xz ../shared/data/enwiki/enwiki_val.jsonl.xz \
#       ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json ../shared/data/wikitext/wikitext-2-raw/wiki.test.raw .carry/
#   bash results/experiment_h100.sh                                  # every arm of both experiments
#   bash results/experiment_h100.sh --only="['recipe2_same_hp']"      # one arm (and the small model) on a fresh machine
# The two experiments run at once (scale A's small models leave most of the GPU free); each one's arms share the GPU
# too (config/experiment_h100_*.py: parallel). Rerunning the script continues a killed run.
set -euo pipefail
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCHINDUCTOR_COMPILE_THREADS=4 TOKENIZERS_PARALLELISM=false
PY=$(command -v python3 || command -v python)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__)"
[ -f data/enwiki_neox/meta.json ] || $PY data/prepare.py --input='.carry/enwiki_train_0[0-3].jsonl.xz' \
    --val_input=.carry/enwiki_val.jsonl.xz --tokenizer=gpt-neox-20b --tokenizer_path=.carry/tokenizer.json \
    --out_dir=data/enwiki_neox --num_proc=16
mkdir -p out-logs
# eval.py's WikiText on every final model (added after the committed runs, which predate eval.py: scale A's rerun
# with it is results/experiment_h100_eval.sh 14m); WikiText-2's raw test file travels in .carry
EVAL="--eval_args=['--wikitext=.carry/wiki.test.raw', '--batch_size=16']"
$PY experiment.py config/experiment_h100_14m.py "$EVAL" "$@" > out-logs/experiment_h100_14m.log 2>&1 &
a=$!
$PY experiment.py config/experiment_h100_70m.py "$EVAL" "$@" > out-logs/experiment_h100_70m.log 2>&1 &
b=$!
set +e
wait $a; echo "scale A exit $?"
wait $b; echo "scale B exit $?"
