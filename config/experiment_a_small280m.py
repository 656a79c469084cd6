# Scale A with a well-trained small model: the Pythia-14m shape pretrained on 280 M tokens (20 tokens per parameter;
# 4,272 iterations of 65,536 tokens, about 6.4 passes over shards 04-07, disjoint from the arms' 00-03) instead of 20 M,
# then the decisive arms of config/experiment_a.py unchanged (40 M tokens each, the same schedule). Growth is known to
# help most when the small model is under-trained: this run measures how much of Recipe 2's advantage is left. The
# grid spans the rates that were near-best at 40 M (extend it if a best lands on an edge); the small model continued
# is an arm. Data as for config/experiment_a.py, then: python experiment.py config/experiment_a_small280m.py
exp_dir = 'out-exp-a-small280m'
title = 'scale A, small model pretrained on 280 M tokens, grown to 256 wide; 40 M tokens per arm'
seeds = [1000, 1001, 1002]
parallel = 6
_lrs = [2e-3, 4e-3, 8e-3, 1.6e-2]
_large = ['--n_embd=256', '--n_head=8', '--mlp_width=1024']
_gradual = [f'--final_sparsity={1 - 7_618_560 / 17_596_416!r}', '--prune_start=60', '--prune_end=360',
            '--prune_every=15', '--prune_schedule=geometric']
common = ['--data_dir=data/enwiki_neox', '--model_preset=pythia-14m', '--compile=True', '--dtype=bfloat16',
          '--block_size=1024', '--batch_size=16', '--gradient_accumulation_steps=4', '--max_iters=610',
          '--warmup_iters=30', '--eval_interval=30', '--eval_iters=20', '--checkpoint_interval=210',
          '--log_interval=10']
small_pretrain = ['--data_dir=data/enwiki_neox_small', '--init_from=scratch', '--learning_rate=1e-3',
                  '--max_iters=4272', '--warmup_iters=60', '--eval_interval=267', '--checkpoint_interval=1068',
                  '--log_interval=50']
arms = dict(
    recipe1=dict(args=['--init_from=scratch'] + _large + _gradual, learning_rate=_lrs, score=['balanced']),
    recipe2=dict(args=['--init_from={small}', "--grow={'n_embd': 256}"] + _gradual, learning_rate=_lrs,
                 score=['balanced']),
    small_continued=dict(args=['--init_from={small}'], learning_rate=_lrs),
)
