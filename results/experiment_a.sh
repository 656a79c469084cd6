#!/usr/bin/env bash
# Scale A of the fair answer (config/experiment_a.py) on one GPU, in the calls of a lent machine. The machine has no
# ../shared and a call carries at most 64 MiB, so the two datasets are prepared in two calls, each carrying its shards
# in .carry (the prepared data stays on the machine between calls):
#   mkdir -p .carry && cp ../shared/data/enwiki/enwiki_train_0[4-7].jsonl.xz ../shared/data/enwiki/enwiki_val.jsonl.xz \
#       ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json .carry/
#   bash results/experiment_a.sh data_small          # shards 04-07 -> data/enwiki_neox_small (the small models)
#   (.carry with shards 0[0-3] instead)
#   bash results/experiment_a.sh data                # shards 00-03 -> data/enwiki_neox (the arms)
#   bash results/experiment_a.sh start               # experiment.py in its own session (outlives the call)
#   bash results/experiment_a.sh collect             # progress, and every run's records into $OUT (no checkpoints)
#   bash results/experiment_a.sh bench               # bench.py's experiment mode (needs data), collected the same way
# CFG=experiment_a_80m (or experiment_a_160m, experiment_a_small280m, experiment_b, experiment_31m) runs that config
# instead, on the same data (several configs may run at once, each started by its own call).
# val and test: the 312 articles of enwiki_val, alternately (156 each; 424,869 and 591,532 GPT-NeoX tokens).
# A later session continues the experiment from the committed folders (start copies them into out-exp-a/).
set -euo pipefail
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCHINDUCTOR_COMPILE_THREADS=4 TOKENIZERS_PARALLELISM=false
PY=$(command -v python3 || command -v python)
CFG=${CFG:-experiment_a}
prep() {  # $1: shard glob, $2: out_dir
    [ -f "$2/meta.json" ] || TOKENIZERS_PARALLELISM=true $PY data/prepare.py --input=".carry/enwiki_train_$1.jsonl.xz" \
        --val_input=.carry/enwiki_val.jsonl.xz --test_fraction=0.5 --tokenizer=gpt-neox-20b \
        --tokenizer_path=.carry/tokenizer.json --out_dir="$2"
}
case "$1" in
    data_small) nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
                $PY -c "import torch; print('torch', torch.__version__)"
                prep '0[4-7]' data/enwiki_neox_small ;;
    data) prep '0[0-3]' data/enwiki_neox ;;
    start) mkdir -p out-logs
           # the committed runs are finished and never rerun; the small models' checkpoints were not committed (too
           # large), so each is pretrained again (same seed, same data) beside its first run, kept as small/s<seed>.first
           # (a later pretraining's record is replaced by the next: the runs it started are in the results' log)
           if [ "$CFG" = experiment_a ] && [ ! -d out-exp-a ]; then cp -r results/experiment_a out-exp-a
               for d in out-exp-a/small/s[0-9]*; do case "$d" in *.first) continue ;; esac
                   [ -f "$d/ckpt.pt" ] || { [ -d "$d.first" ] && rm -rf "$d"; } || mv "$d" "$d.first"; done; fi
           setsid nohup $PY experiment.py config/$CFG.py "${@:2}" > out-logs/$CFG.log 2>&1 < /dev/null &
           sleep 60; tail -5 out-logs/$CFG.log ;;
    bench) setsid nohup $PY bench.py --data_dir=data/enwiki_neox --out_json=out-logs/bench_h200_experiment.json \
               > out-logs/bench.log 2>&1 < /dev/null &  # issue 23: alone on the GPU; rows land as they finish
           sleep 30; tail -3 out-logs/bench.log ;;
    collect) sleep "${2:-0}"
             grep -c 'finished in' out-logs/$CFG.log || true
             tail -4 out-logs/$CFG.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
             for f in out-exp-*/*/*/train.log; do echo "$f: $(grep 'tok/s' "$f" | tail -1)"; done | tail -8
             tar czf "$OUT/exp_a.tar.gz" --exclude='ckpt.pt' --exclude='*.tmp*' out-exp-* out-logs ;;
esac
