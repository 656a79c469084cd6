# The upper reference: the grown shape from scratch, dense, for the same tokens (no pruning).
#   python train.py config/grow_70m.py config/grow_70m_dense.py
out_dir = 'out-grow-70m-dense'
init_from = 'scratch'
grow_n_embd = None
model_preset = 'pythia-70m'
n_embd = 1024
n_head = 16
mlp_width = 4096
learning_rate = 1e-3
min_lr = 1e-4
final_sparsity = 0.0
