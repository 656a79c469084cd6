# Scale A of the fair answer (results/README.md): the Pythia-14m shape (6 layers, 128 wide, 4 heads) pretrained here
# on 20 M enwiki tokens of shards 04-07, grown 2x in width to 256 wide (8 heads, MLP 1024: 14.1 M -> 30.5 M params) and
# pruned back to its 7,618,560 linear weights, against the same 256-wide shape from scratch (Recipe 1), dense then
# pruned once (the status quo), dense, and the small model continued. Every arm: 40 M tokens of shards 00-03,
# the same warmup and cosine, every peak learning rate of the same grid (min_lr = lr / 10), each pruned arm at
# every score of its kind; chosen by val loss, scored on the held-out test half of the val articles.
#   python data/prepare.py --input='.carry/enwiki_train_0[0-3].jsonl.xz' --val_input=.carry/enwiki_val.jsonl.xz \
#       --test_fraction=0.5 --tokenizer=gpt-neox-20b --tokenizer_path=.carry/tokenizer.json --out_dir=data/enwiki_neox
#   (the same with shards 0[4-7] into data/enwiki_neox_small), then
#   python experiment.py config/experiment_a.py
exp_dir = 'out-exp-a'
title = 'scale A: Pythia-14m shape (20 M tokens) grown to 256 wide; 40 M tokens per arm'
seeds = [1000, 1001, 1002]
parallel = 6
_lrs = [5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]  # extended while an arm's best was the top (8e-3, then 1.6e-2)
_large = ['--n_embd=256', '--n_head=8', '--mlp_width=1024']
_sparse = [f'--final_sparsity={1 - 7_618_560 / 17_596_416!r}']
# gradual: 21 geometric events over iterations 60-360 (10%-59% of training), then 41% at the final masks
_gradual = _sparse + ['--prune_start=60', '--prune_end=360', '--prune_every=15', '--prune_schedule=geometric']
# the status quo: dense until T - r, one event to the final count, then r = 20% of T (122 iterations, 8 M tokens)
# with the masks fixed; r at the top of the usual 10-20%: the most recovery the baseline can be given
_once = _sparse + ['--prune_start=488', '--prune_end=488']
# 64 x 1024 = 65,536 tokens per iteration; 610 iterations = 40 M tokens
common = ['--data_dir=data/enwiki_neox', '--model_preset=pythia-14m', '--compile=True', '--dtype=bfloat16',
          '--block_size=1024', '--batch_size=16', '--gradient_accumulation_steps=4', '--max_iters=610',
          '--warmup_iters=30', '--eval_interval=30', '--eval_iters=20', '--checkpoint_interval=210',
          '--log_interval=10']
small_pretrain = ['--data_dir=data/enwiki_neox_small', '--init_from=scratch', '--learning_rate=1e-3',
                  '--max_iters=305', '--checkpoint_interval=150']
arms = dict(
    recipe1=dict(args=['--init_from=scratch'] + _large + _gradual, learning_rate=_lrs,
                 score=['magnitude', 'balanced']),
    recipe2=dict(args=['--init_from={small}', "--grow={'n_embd': 256}"] + _gradual, learning_rate=_lrs,
                 score=['magnitude', 'balanced']),
    status_quo=dict(args=['--init_from=scratch'] + _large + _once, learning_rate=_lrs,
                    score=['magnitude', 'wanda', 'sparsegpt']),
    recipe2_isotropic=dict(args=['--init_from={small}', "--grow={'n_embd': 256, 'method': 'isotropic'}"] + _gradual,
                           learning_rate=_lrs, score=['magnitude', 'balanced']),
    dense_large=dict(args=['--init_from=scratch'] + _large, learning_rate=_lrs),
    small_continued=dict(args=['--init_from={small}'], learning_rate=_lrs),
)
