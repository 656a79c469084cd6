# Byte-level tokenization with pooling against BPE on the same core (README, byte-level section): the Pythia-70m
# shape trained from scratch on 20 M enwiki tokens (GPT-NeoX ids), with the settings of the grow experiment's small
# model at scale B. The byte encoder and decoder (2 layers each, 256 wide) replace the 51.5 M embedding and head
# parameters; the BPE model is the same file with byte_pool off.
#   python train.py config/train_bytes_70m.py                                           # byte-level
#   python train.py config/train_bytes_70m.py --byte_pool=False --out_dir=out-bpe-70m   # BPE, the same core
out_dir = 'out-bytes-70m'
data_dir = 'data/enwiki_neox'
init_from = 'scratch'
model_preset = 'pythia-70m'
byte_pool = True
byte_embd = 256
byte_head = 4
byte_layer = 2
byte_block = 16                # 0.005% of enwiki's NeoX tokens are longer (results/byte_long_tokens_neox.json)
block_size = 1024
batch_size = 8
gradient_accumulation_steps = 8
max_iters = 305                # 20 M tokens
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 30
eval_interval = 30
eval_iters = 20
log_interval = 10
compile = True
dtype = 'bfloat16'
seed = 1000
save_hf = True
