# The quickstart: a small Pythia-architecture model (pythia-14m's shape: 6 layers, 4 heads, width 128),
# character-level on the CPython documentation (data/pydoc/prepare.py), a few minutes on a laptop CPU.
out_dir = 'out-pydoc'
data_dir = 'data/pydoc'
device = 'cpu'
init_from = 'scratch'
model_preset = 'pythia-14m'
block_size = 128
batch_size = 32
gradient_accumulation_steps = 1
max_iters = 600
eval_interval = 200
eval_iters = 20
log_interval = 50
learning_rate = 2e-3          # a small model and small batches take a high rate
min_lr = 2e-4
warmup_iters = 100
weight_decay = 0.1
beta2 = 0.99                  # few tokens per iteration: a longer second-moment average
