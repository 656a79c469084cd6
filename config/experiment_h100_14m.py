# Scale A of the measured answer (README, results/experiment_h100_14m/): the Pythia-14m shape (6 layers, 128 wide,
# 4 heads), pretrained here on 20 M enwiki tokens, grown 2x in width to 256 wide (8 heads, MLP 1024: 14.1 M -> 30.5 M
# parameters) and pruned back to its 7,618,560 linear weights; every arm 40 M tokens, on one H100 (arms share it).
# The arms are config/grow_70m.py's with the 14m shapes; data as in experiment_h100_70m.py.
#   python experiment.py config/experiment_h100_14m.py
exp_dir = 'out-exp-h100-14m'
title = 'Pythia-14m shape (pretrained here on 20 M tokens) grown to 256 wide; 40 M tokens per arm, one H100'
_large = ['--model_preset=pythia-14m', '--n_embd=256', '--n_head=8', '--mlp_width=1024']
_sparse = [f'--final_sparsity={1 - 7_618_560 / 17_596_416!r}']
small_pretrain = ['config/grow_70m.py', 'config/grow_70m_small.py', '--init_from=scratch', '--model_preset=pythia-14m',
                  '--learning_rate=1e-3', '--min_lr=1e-4', '--max_iters=305', '--seed=1000']
parallel = 5
common = ['--block_size=1024', '--batch_size=8', '--gradient_accumulation_steps=8', '--max_iters=610',
          '--warmup_iters=30', '--eval_interval=30', '--eval_iters=20', '--checkpoint_interval=210',
          '--log_interval=10', '--prune_start=60', '--prune_end=360', '--prune_every=15']
arms = dict(
    recipe2=['config/grow_70m.py', '--init_from={small}', '--grow_n_embd=256'] + _sparse,
    recipe2_isotropic=['config/grow_70m.py', 'config/grow_70m_isotropic.py', '--init_from={small}',
                       '--grow_n_embd=256'] + _sparse,
    recipe2_same_hp=['config/grow_70m.py', 'config/grow_70m_same_hp.py', '--init_from={small}',
                     '--grow_n_embd=256'] + _sparse,
    recipe2_high_lr=['config/grow_70m.py', '--init_from={small}', '--grow_n_embd=256', '--learning_rate=1e-3',
                     '--min_lr=1e-4'] + _sparse,
    recipe1=['config/grow_70m.py', 'config/grow_70m_recipe1.py'] + _large + _sparse,
    small_continued=['config/grow_70m.py', 'config/grow_70m_small.py', '--init_from={small}'],
    dense_large=['config/grow_70m.py', 'config/grow_70m_dense.py'] + _large,
)
