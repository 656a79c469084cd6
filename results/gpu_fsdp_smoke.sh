#!/usr/bin/env bash
# torchrun over NCCL on one H100 (results/gpu_fsdp_smoke.* come from this script): the only GPU machine lent so far
# has one GPU, so this checks the launch path, not scaling. The same 40 iterations (Pythia-70m shape, 65,536 tokens
# per iteration, compiled, bf16, gradual pruning to 50%, evals and checkpoints every 10) run four ways: plain
# python, torchrun DDP (1 rank), torchrun fsdp=True (1 rank, FSDP2 over NCCL), and fsdp=True stopped at 20 and resumed.
#   mkdir -p .carry && cp ../shared/data/enwiki/enwiki_train_00.jsonl.xz ../shared/data/enwiki/enwiki_val.jsonl.xz \
#       ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json .carry/
#   OUT=results bash results/gpu_fsdp_smoke.sh
set -euo pipefail
exec > >(tee "$OUT/gpu_fsdp_smoke.log") 2>&1
export TORCHINDUCTOR_COMPILE_THREADS=4 TOKENIZERS_PARALLELISM=false
nvidia-smi -L
python -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version())"
D=data/enwiki00_neox; W=${WORK:-/tmp/fsdp_smoke}; rm -rf "$W"
[ -f $D/meta.json ] || python data/prepare.py --input=.carry/enwiki_train_00.jsonl.xz --val_input=.carry/enwiki_val.jsonl.xz \
    --tokenizer=gpt-neox-20b --tokenizer_path=.carry/tokenizer.json --out_dir=$D --num_proc=16
common="--data_dir=$D --model_preset=pythia-70m --block_size=1024 --batch_size=16 --gradient_accumulation_steps=4
        --max_iters=40 --lr_decay_iters=40 --warmup_iters=10 --learning_rate=1e-3 --eval_interval=10 --eval_iters=10
        --log_interval=10 --compile=True --final_sparsity=0.5 --prune_start=5 --prune_end=35 --prune_every=10"
TR="torchrun --standalone --nproc_per_node=1"
python train.py $common --out_dir=$W/plain
$TR train.py $common --out_dir=$W/ddp
$TR train.py $common --out_dir=$W/fsdp --fsdp=True --save_hf=True
$TR train.py $common --out_dir=$W/fsdp_resumed --fsdp=True --max_iters=20
$TR train.py $common --out_dir=$W/fsdp_resumed --fsdp=True --init_from=resume
python - "$W" > "$OUT/gpu_fsdp_smoke.json" <<'PY'
import json, sys
import torch
runs = {}
for r in ('plain', 'ddp', 'fsdp', 'fsdp_resumed'):
    rows = [json.loads(line) for line in open(f'{sys.argv[1]}/{r}/metrics.jsonl')]
    runs[r] = dict(val_loss={x['iter']: x['val_loss'] for x in rows if 'val_loss' in x},
                   sparsity={x['iter']: x['sparsity'] for x in rows if 'sparsity' in x},
                   tok_per_sec=sum(s := [x['tok_per_sec'] for x in rows if x.get('tok_per_sec')][1:]) / len(s))
for r in ('ddp', 'fsdp', 'fsdp_resumed'):
    runs[r]['max_abs_dval_vs_plain'] = max(abs(v - runs['plain']['val_loss'][k]) for k, v in runs[r]['val_loss'].items())
ck = torch.load(f'{sys.argv[1]}/fsdp/ckpt.pt', map_location='cpu', weights_only=True)
masks = ck['pruner']['masks']
runs['fsdp']['checkpoint_sparsity'] = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
runs['fsdp']['zeros_where_masked'] = all(bool((ck['model'][n][~m] == 0).all()) for n, m in masks.items())
print(json.dumps(runs, indent=1))
PY
cat "$OUT/gpu_fsdp_smoke.json"
