# Pythia-70m's shape from scratch on the Wikipedia shards in ../shared/data/enwiki, GPT-NeoX tokenizer:
# python data/prepare.py --input='../shared/data/enwiki/enwiki_train_*.jsonl.xz' \
#     --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --tokenizer=gpt-neox-20b \
#     --tokenizer_path=../shared/data/tokenizers/gpt-neox-20b/tokenizer.json --out_dir=data/enwiki_neox
# torchrun --standalone --nproc_per_node=8 train.py config/train_pythia70m_enwiki.py
# 8 x 16 x 2048 = 262k tokens per iteration (any number of GPUs dividing 8); 2000 iterations ~ 0.5 B tokens.
out_dir = 'out-pythia70m-enwiki'
data_dir = 'data/enwiki_neox'
init_from = 'scratch'
model_preset = 'pythia-70m'
block_size = 2048
batch_size = 16
gradient_accumulation_steps = 8
max_iters = 2000
lr_decay_iters = 2000
warmup_iters = 100
learning_rate = 1e-3            # Pythia-70m used 1e-3
min_lr = 1e-4
weight_decay = 0.1
eval_interval = 250
eval_iters = 50
log_interval = 10
compile = True
dtype = 'bfloat16'
