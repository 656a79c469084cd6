# nanoGPT's Shakespeare baseline on the Pythia architecture: character-level, 6 layers x 384, context 256.
# python data/shakespeare_char/prepare.py && python train.py config/train_shakespeare_char.py
# (on a CPU add --device=cpu --compile=False --max_iters=2000 --eval_iters=20 and expect ~1.9 val loss)
out_dir = 'out-shakespeare-char'
data_dir = 'data/shakespeare_char'
init_from = 'scratch'
model_preset = None
arch = 'gpt_neox'
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
dropout = 0.2
batch_size = 64
gradient_accumulation_steps = 1
max_iters = 5000
eval_interval = 250
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # a small corpus overfits: keep the best val loss
learning_rate = 1e-3
min_lr = 1e-4
lr_decay_iters = 5000
warmup_iters = 100
beta2 = 0.99
compile = True
