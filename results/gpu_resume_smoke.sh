#!/usr/bin/env bash
# Resume on a GPU (results/gpu_resume_smoke.* come from this script, on one H100):
#   OUT=results bash results/gpu_resume_smoke.sh      (data: the .carry/enwiki_neox of results/gpu_grow_smoke.sh)
# The same 60 iterations (Pythia-70m shape, 131,072 tokens per iteration, compiled, bf16, gradual pruning to 50%)
# run straight, and stopped at 30 (after a pruning event) and resumed. On the CPU the two are bit-identical
# (tests/test_train.py); on a GPU, bf16 kernels and atomics make them agree to rounding only.
set -euo pipefail
exec > >(tee "$OUT/gpu_resume_smoke.log") 2>&1
nvidia-smi -L
D=.carry/enwiki_neox; W=${WORK:-/tmp/resume_smoke}; rm -rf "$W"
common="config/train_pythia70m_enwiki.py --data_dir=$D --batch_size=16 --gradient_accumulation_steps=4
        --max_iters=60 --lr_decay_iters=60 --warmup_iters=10 --eval_interval=30 --eval_iters=20 --log_interval=10
        --compile=True --final_sparsity=0.5 --prune_start=10 --prune_end=50 --prune_every=10"
python train.py $common --out_dir=$W/straight
python train.py $common --out_dir=$W/resumed --max_iters=30
python train.py $common --out_dir=$W/resumed --init_from=resume
python - "$W" > "$OUT/gpu_resume_smoke.json" <<'PY'
import json, sys
runs = {}
for r in ('straight', 'resumed'):
    rows = [json.loads(line) for line in open(f'{sys.argv[1]}/{r}/metrics.jsonl')]
    runs[r] = dict(val_loss={x['iter']: x['val_loss'] for x in rows if 'val_loss' in x},
                   train_loss={x['iter']: x['train_loss'] for x in rows if 'train_loss' in x},
                   sparsity={x['iter']: x['sparsity'] for x in rows if 'sparsity' in x},
                   tok_per_sec=[x['tok_per_sec'] for x in rows if 'tok_per_sec' in x][-1])
print(json.dumps(runs, indent=1))
PY
