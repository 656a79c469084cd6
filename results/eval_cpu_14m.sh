#!/usr/bin/env bash
# eval.py against lm-evaluation-harness 0.4.13 on one model, the whole WikiText-2 raw test set (62 articles) and
# LAMBADA (OpenAI's, 5,153 passages), on this project's 2-core CPU VM, offline. The model: the Pythia-14m shape with a
# 128-token context, trained here for 300 iterations of 2,048 tokens on one enwiki shard (GPT-NeoX tokenizer), and
# exported by train.py (save_hf: weights + tokenizer files). lm-eval runs its own wikitext and lambada_openai tasks,
# pointed at the same local files by two task YAMLs that include the shipped ones.
#   bash results/eval_cpu_14m.sh     # writes results/eval_cpu_14m_ours.json and results/eval_cpu_14m_lm_eval.json
set -euo pipefail
W=${WORK:-/tmp/eval_cpu_14m}; S=$(realpath ../shared/data); mkdir -p "$W"
export TIKTOKEN_CACHE_DIR=$S/tiktoken_cache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -f "$W/data/meta.json" ] || python data/prepare.py --input="$S/enwiki/enwiki_train_00.jsonl.xz" \
    --val_input="$S/enwiki/enwiki_val.jsonl.xz" --tokenizer=gpt-neox-20b \
    --tokenizer_path="$S/tokenizers/gpt-neox-20b/tokenizer.json" --out_dir="$W/data"
python train.py --device=cpu --dtype=float32 --data_dir="$W/data" --out_dir="$W/run" --model_preset=pythia-14m \
    --block_size=128 --batch_size=16 --max_iters=300 --eval_interval=100 --learning_rate=2e-3 --min_lr=2e-4 \
    --warmup_iters=30 --save_hf=True --overwrite=True
/usr/bin/time -f "eval.py: %e s" python eval.py --init_from="$W/run/model" --device=cpu --data_dir="$W/data" \
    --out_json=results/eval_cpu_14m_ours.json
python - "$W" "$S" <<'PY'
import json, os, sys
import lm_eval
from eval import wikitext_pages
w, s = sys.argv[1:]
with open(f'{s}/wikitext/wikitext-2-raw/wiki.test.raw', encoding='utf-8') as f:  # lm-eval's document-level rows
    pages = wikitext_pages(f.read())
with open(f'{w}/wikitext_test.jsonl', 'w') as f:
    f.writelines(json.dumps({'page': p}) + '\n' for p in pages)
base = os.path.join(os.path.dirname(lm_eval.__file__), 'tasks')
os.makedirs(f'{w}/tasks', exist_ok=True)
for task, shipped, data in (('wikitext_local', 'wikitext/wikitext.yaml', f'{w}/wikitext_test.jsonl'),
                            ('lambada_local', 'lambada/lambada_openai.yaml', f'{s}/lambada/lambada_test.jsonl')):
    with open(f'{w}/tasks/{task}.yaml', 'w') as f:
        f.write(f"task: {task}\ninclude: {base}/{shipped}\ndataset_path: json\ndataset_name: null\n"
                f"dataset_kwargs:\n  data_files:\n    test: {data}\ntraining_split: null\nvalidation_split: null\n"
                f"test_split: test\n")
PY
/usr/bin/time -f "lm_eval: %e s" lm_eval --model hf --model_args "pretrained=$W/run/model,dtype=float32" \
    --tasks wikitext_local,lambada_local --include_path "$W/tasks" --batch_size 8 --device cpu \
    --output_path "$W/lm_eval"
cp "$(ls -t $(find "$W/lm_eval" -name 'results_*.json') | head -1)" results/eval_cpu_14m_lm_eval.json
