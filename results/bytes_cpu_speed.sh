#!/usr/bin/env bash
# Training tokens/s of the Pythia-14m core, BPE against byte-level, on this repo's 2-core CPU VM (README, byte-level
# section): the byte-level model before (commit cbf0436) and after the two exact savings (each distinct id encoded
# once, short tokens decoded over half the positions), the BPE model at HEAD. 12 iterations of 8 x 1024 tokens,
# eager, float32; tokens/s: the mean of the logged windows after the first. Needs data/enwiki_neox, e.g. one shard:
#   python data/prepare.py --input='../shared/data/enwiki/enwiki_train_00.jsonl.xz' \
#       --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --tokenizer=gpt-neox-20b \
#       --tokenizer_path=../shared/data/tokenizers/gpt-neox-20b/tokenizer.json --out_dir=data/enwiki_neox
#   bash results/bytes_cpu_speed.sh      # -> results/bytes_cpu_speed.json (about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
run() {  # run NAME REPO_DIR [overrides...]
  local name=$1 dir=$2; shift 2
  (cd "$dir" && python train.py config/train_bytes_70m.py config/train_bytes_14m.py --out_dir="$OLDPWD/out-cpu-speed/$name" \
      --overwrite=True --data_dir="$OLDPWD/data/enwiki_neox" --device=cpu --compile=False --block_size=1024 \
      --batch_size=8 --gradient_accumulation_steps=1 --max_iters=12 --warmup_iters=2 --eval_interval=12 \
      --eval_iters=1 --log_interval=4 --save_hf=False "$@" > "$OLDPWD/out-cpu-speed/$name.log" 2>&1)
}
mkdir -p out-cpu-speed
rm -rf out-cpu-speed/before && git worktree add -f --detach out-cpu-speed/before cbf0436 > /dev/null
run bytes_before out-cpu-speed/before
git worktree remove --force out-cpu-speed/before
run bytes .
run bpe . --byte_pool=False
python - <<'PY'
import json, platform, subprocess, torch
out = dict(machine=f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}',
           commit=subprocess.run(['git', 'describe', '--always', '--dirty'], capture_output=True, text=True).stdout.strip(),
           runs={})
for name in ('bytes_before', 'bytes', 'bpe'):
    rows = [json.loads(line) for line in open(f'out-cpu-speed/{name}/metrics.jsonl')]
    speeds = [r['tok_per_sec'] for r in rows if r.get('tok_per_sec')][1:]
    losses = {r['iter']: round(r['train_loss'], 6) for r in rows if 'train_loss' in r}
    out['runs'][name] = dict(tok_per_sec=sum(speeds) / len(speeds), train_loss=losses)
for name in ('bytes_before', 'bytes'):
    out['runs'][name]['tok_per_sec_vs_bpe'] = out['runs'][name]['tok_per_sec'] / out['runs']['bpe']['tok_per_sec']
json.dump(out, open('results/bytes_cpu_speed.json', 'w'), indent=1)
print(json.dumps(out, indent=1))
PY
