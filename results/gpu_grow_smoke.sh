#!/usr/bin/env bash
# GPU smoke of the whole pipeline (results/gpu_grow_smoke_*.jsonl come from this script, run on one H100):
#   python data/prepare.py --input='../shared/data/enwiki/enwiki_train_00.jsonl.xz' \
#       --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --tokenizer=gpt-neox-20b \
#       --tokenizer_path=../shared/data/tokenizers/gpt-neox-20b/tokenizer.json --out_dir=.carry/enwiki_neox
#   OUT=results bash results/gpu_grow_smoke.sh
# 1) Pythia-70m shape from scratch, dense, 300 iterations; 2) grow it to the 160m shape (top_left, exact);
# 3) train the grown model for 200 more iterations while pruning it to 64% sparsity (geometric, balanced score), so
# it ends with the 70m's 44.6 M linear weights (Recipe 2); 4) the 160m shape from scratch with the same pruning
# (Recipe 1); 5) the small model continued for the same 200 iterations. 65,536 tokens per iteration, compiled, bf16. A toy budget: it checks that everything
# runs together on a GPU (compile + masks + DDP-free path) and shows the shape of the curves, not a result.
set -euo pipefail
exec > >(tee "$OUT/gpu_grow_smoke.log") 2>&1
D=.carry/enwiki_neox; W=${WORK:-/tmp/grow_smoke}; rm -rf "$W"
common="config/train_pythia70m_enwiki.py --data_dir=$D --batch_size=16 --gradient_accumulation_steps=2
        --warmup_iters=30 --eval_interval=50 --eval_iters=20 --log_interval=20 --compile=True"
prune="--final_sparsity=0.64 --prune_start=20 --prune_end=160 --prune_every=20 --prune_schedule=geometric"
python train.py $common --out_dir=$W/small --max_iters=300 --save_hf=True
python expand.py config/expand_70m_to_160m.py --init_from=$W/small/model --out_dir=$W/grown
python train.py $common --out_dir=$W/recipe2 --init_from=$W/grown --max_iters=200 --learning_rate=3e-4 \
    --min_lr=3e-5 $prune --score=balanced
python train.py $common --out_dir=$W/recipe1 --model_preset=pythia-160m --max_iters=200 $prune
python train.py $common --out_dir=$W/continued --init_from=$W/small/model --max_iters=200 --learning_rate=3e-4 \
    --min_lr=3e-5
for r in small recipe2 recipe1 continued; do cp $W/$r/metrics.jsonl "$OUT/gpu_grow_smoke_$r.jsonl"; done
python - "$W" > "$OUT/gpu_grow_smoke_expand.json" <<'PY'
import json, sys; print(json.dumps(json.load(open(sys.argv[1] + '/grown/config.json'))['growing_sparse'], indent=1))
PY
