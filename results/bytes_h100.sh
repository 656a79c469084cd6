#!/usr/bin/env bash
# Byte-level pooling against BPE on one GPU (README, byte-level section): the Pythia-14m and Pythia-70m cores trained
# from scratch on the same 20 M enwiki tokens (GPT-NeoX ids), one run at a time so that tokens/s compare, then eval.py's
# WikiText and val numbers for every final model. The GPU machine has no ../shared:
#   mkdir -p .carry && cp ../shared/data/enwiki/enwiki_train_0[0-3].jsonl.xz ../shared/data/enwiki/enwiki_val.jsonl.xz \
#       ../shared/data/tokenizers/gpt-neox-20b/tokenizer.json ../shared/data/wikitext/wikitext-2-raw/wiki.test.raw .carry/
#   bash results/bytes_h100.sh bpe_14m bytes_14m bytes_parallel_14m bytes_4layer_14m bpe_70m bytes_70m  # any subset
# (bytes_4layer_*: 4 layers in the encoder and the decoder. bytes_parallel_* needs commit 7b598b9: the parallel
# decoder was removed since, having measured 1.65x worse than the causal one.) A run already finished (its out_dir holds model/) is not
# run again; the summary covers every finished run. The README's table: results/bytes_h200/, all six on one H200 at
# commit 7b598b9 (11 min 45 s). Earlier, kept for the record: results/bytes_h100/ (one H100, commit 7086937, whose
# byte-level cores kept their residual stream in bf16 under autocast; its 14m runs used config/train_bytes_14m.py as a
# standalone copy of the 70m file with three keys changed, the same settings) and results/bytes_h200_456777c/ (14m,
# whose compiled byte runs took the data-dependent savings and ran at 0.14x BPE's tokens/s; compiled runs skip them).
set -euo pipefail
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCHINDUCTOR_COMPILE_THREADS=4 TOKENIZERS_PARALLELISM=false
PY=$(command -v python3 || command -v python)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -f data/enwiki_neox/meta.json ] || $PY data/prepare.py --input='.carry/enwiki_train_0[0-3].jsonl.xz' \
    --val_input=.carry/enwiki_val.jsonl.xz --tokenizer=gpt-neox-20b --tokenizer_path=.carry/tokenizer.json \
    --out_dir=data/enwiki_neox --num_proc=16
mkdir -p out-bytes
for run in "$@"; do
  scale=${run##*_}
  case $run in
    bpe_*) args=(--byte_pool=False) ;;
    bytes_parallel_*) args=(--byte_decoder=parallel) ;;
    bytes_4layer_*) args=(--byte_layer=4) ;;
    bytes_*) args=() ;;
  esac
  out=out-bytes/$run
  if [ ! -d $out/model ]; then
    configs=(config/train_bytes_70m.py)
    [ $scale = 14m ] && configs+=(config/train_bytes_14m.py)  # an overlay on the 70m file
    $PY train.py "${configs[@]}" "${args[@]}" --out_dir=$out --overwrite=True > out-bytes/$run.log 2>&1
  fi
  [ -f $out/eval.json ] || $PY eval.py --init_from=$out "--tasks=['wikitext', 'val']" --wikitext=.carry/wiki.test.raw \
      --dtype=float32 --batch_size=16 --out_json=$out/eval.json >> out-bytes/$run.log 2>&1
  tail -n 3 out-bytes/$run.log
done
$PY - <<'PY'
import glob, json, os
runs = {}
for d in sorted(glob.glob('out-bytes/*/')):
    name = os.path.basename(d.rstrip('/'))
    if not os.path.isfile(d + 'eval.json'):
        continue
    rows = [json.loads(line) for line in open(d + 'metrics.jsonl')]
    cfg = json.load(open(d + 'train_config.json'))
    ev = json.load(open(d + 'eval.json'))
    speeds = [r['tok_per_sec'] for r in rows if r.get('tok_per_sec')][1:]  # the first window holds compile
    val = [r for r in rows if 'val_loss' in r][-1]
    p = cfg['params']
    runs[name] = dict(params=p, embedding_and_head=p['total'] - p['non_embedding'], tokens=val['tokens'],
                      val_loss=val['val_loss'], val_bpb=val['val_bpb'], eval_val_bpb=ev['val']['bits_per_byte'],
                      wikitext_bpb=ev['wikitext']['bits_per_byte'],
                      wikitext_word_perplexity=ev['wikitext']['word_perplexity'],
                      tok_per_sec=sum(speeds) / len(speeds), flops_per_token=cfg['flops_per_token'])
for name, r in runs.items():
    base = runs.get('bpe_' + name.rsplit('_', 1)[1])
    if base and name != 'bpe_' + name.rsplit('_', 1)[1]:
        r['vs_bpe'] = dict(embedding_and_head_fewer=1 - r['embedding_and_head'] / base['embedding_and_head'],
                           val_bpb_ratio=r['val_bpb'] / base['val_bpb'],
                           wikitext_bpb_ratio=r['wikitext_bpb'] / base['wikitext_bpb'],
                           tok_per_sec_ratio=r['tok_per_sec'] / base['tok_per_sec'])
json.dump(runs, open('out-bytes/summary.json', 'w'), indent=1)
print(json.dumps(runs, indent=1))
PY
