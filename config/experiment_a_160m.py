# Scale A at 160 M tokens per arm: a complete schedule of its own (not a truncation of a longer run): warmup, pruning
# window and cosine all scaled 4x from config/experiment_a.py (610 -> 2,440 iterations of 65,536 tokens). The decisive
# arms only, each on the same four learning rates around scale A's 40 M best (Recipe 1 8e-3, Recipe 2 1.6e-2, the
# status quo 4e-3) and at its 40 M best score (balanced; SparseGPT for the status quo). The arms' corpus holds 44 M
# tokens: 160 M is about 3.6 passes (the small model's shards stay disjoint).
#   data as for config/experiment_a.py (results/experiment_a.sh), then python experiment.py config/experiment_a_160m.py
exp_dir = 'out-exp-a-160m'
title = 'scale A at 160 M tokens per arm: Pythia-14m shape (20 M tokens) grown to 256 wide'
seeds = [1000, 1001, 1002]
parallel = 6
_lrs = [2e-3, 4e-3, 8e-3, 1.6e-2]
_large = ['--n_embd=256', '--n_head=8', '--mlp_width=1024']
_sparse = [f'--final_sparsity={1 - 7_618_560 / 17_596_416!r}']
# gradual: 21 geometric events over iterations 240-1440 (10%-59% of training), as at 40 M
_gradual = _sparse + ['--prune_start=240', '--prune_end=1440', '--prune_every=60', '--prune_schedule=geometric']
# the status quo: dense until T - r, one event, then r = 20% of T (488 iterations, 32 M tokens) with the masks fixed
_once = _sparse + ['--prune_start=1952', '--prune_end=1952']
common = ['--data_dir=data/enwiki_neox', '--model_preset=pythia-14m', '--compile=True', '--dtype=bfloat16',
          '--block_size=1024', '--batch_size=16', '--gradient_accumulation_steps=4', '--max_iters=2440',
          '--warmup_iters=120', '--eval_interval=120', '--eval_iters=20', '--checkpoint_interval=840',
          '--log_interval=40']
small_pretrain = ['--data_dir=data/enwiki_neox_small', '--init_from=scratch', '--learning_rate=1e-3',
                  '--max_iters=305', '--warmup_iters=30', '--eval_interval=30', '--checkpoint_interval=150']
arms = dict(
    recipe1=dict(args=['--init_from=scratch'] + _large + _gradual, learning_rate=_lrs, score=['balanced']),
    recipe2=dict(args=['--init_from={small}', "--grow={'n_embd': 256}"] + _gradual, learning_rate=_lrs,
                 score=['balanced']),
    status_quo=dict(args=['--init_from=scratch'] + _large + _once, learning_rate=_lrs, score=['sparsegpt']),
)
