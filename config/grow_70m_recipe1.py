# Recipe 1: the grown shape (Pythia-70m at 1024 wide: 16 heads, MLP 4096, 6 layers) from scratch, with the same
# tokens and the same pruning schedule as config/grow_70m.py, at a from-scratch learning rate (Pythia-70m's).
# Plain magnitude: a model trained from scratch has none of growth's row/column scales to balance out.
#   python train.py config/grow_70m.py config/grow_70m_recipe1.py
out_dir = 'out-grow-70m-recipe1'
init_from = 'scratch'
grow_n_embd = None
model_preset = 'pythia-70m'
n_embd = 1024
n_head = 16
mlp_width = 4096
learning_rate = 1e-3
min_lr = 1e-4
score = 'magnitude'
