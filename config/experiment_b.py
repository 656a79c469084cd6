# Scale B of the fair answer: the Pythia-70m shape (6 layers, 512 wide, 8 heads) pretrained here on 20 M enwiki
# tokens of shards 04-07 (as scale A's small model), grown 2x in width to 1024 (16 heads, MLP 4096: 70.4 M -> 178.6 M
# params) and pruned back to its 44,630,016 linear weights of 127,008,768; Recipe 1, the status quo and the small model
# continued alike; every arm 40 M tokens of shards 00-03 with scale A's schedule. The sweep-then-seeds protocol on
# three rates around scale A's best (Recipe 1 8e-3, Recipe 2 1.6e-2, the status quo 4e-3; a wider model's best is
# lower), extended if a best lands on an edge, at the score each recipe chose at scale A.
#   data as for config/experiment_a.py, then: CFG=experiment_b bash results/experiment_a.sh start
exp_dir = 'out-exp-b'
title = 'scale B: Pythia-70m shape (20 M tokens) grown to 1024 wide; 40 M tokens per arm'
seeds = [1000, 1001, 1002]
parallel = 4
_lrs = [2e-3, 4e-3, 8e-3]
_large = ['--n_embd=1024', '--n_head=16', '--mlp_width=4096']
_sparse = [f'--final_sparsity={1 - 44_630_016 / 127_008_768!r}']
_gradual = _sparse + ['--prune_start=60', '--prune_end=360', '--prune_every=15', '--prune_schedule=geometric']
_once = _sparse + ['--prune_start=488', '--prune_end=488']  # the status quo: r = 20% of T, as at scale A
common = ['--data_dir=data/enwiki_neox', '--model_preset=pythia-70m', '--compile=True', '--dtype=bfloat16',
          '--block_size=1024', '--batch_size=16', '--gradient_accumulation_steps=4', '--max_iters=610',
          '--warmup_iters=30', '--eval_interval=30', '--eval_iters=20', '--checkpoint_interval=210',
          '--log_interval=10']
small_pretrain = ['--data_dir=data/enwiki_neox_small', '--init_from=scratch', '--learning_rate=1e-3',
                  '--max_iters=305', '--checkpoint_interval=150']
arms = dict(
    recipe1=dict(args=['--init_from=scratch'] + _large + _gradual, learning_rate=_lrs, score=['balanced']),
    recipe2=dict(args=['--init_from={small}', "--grow={'n_embd': 1024}"] + _gradual, learning_rate=_lrs,
                 score=['balanced']),
    status_quo=dict(args=['--init_from=scratch'] + _large + _once, learning_rate=_lrs, score=['sparsegpt']),
    small_continued=dict(args=['--init_from={small}'], learning_rate=_lrs),
)
