# The README's first command: the whole grow experiment at toy scale on a CPU, offline, in a few minutes.
# Character-level CPython documentation (data/pydoc/prepare.py). The small model (4 layers, 64 wide, 4 heads of 16)
# is pretrained here for 300 iterations of 1,024 tokens, grown 2x in width (128 wide, 8 heads) and pruned back to its
# 204,800 linear weights (Recipe 2), against the same shape from scratch with the same pruning (Recipe 1), dense
# then pruned once (the status quo) and the small model continued; 150 iterations of 1,024 tokens per arm, every arm
# at two learning rates, one seed.
#   python data/pydoc/prepare.py && python experiment.py config/experiment_toy_cpu.py
exp_dir = 'out-exp-toy'
title = 'toy: 4 layers, 64 -> 128 wide, character-level pydoc, 0.15 M tokens per arm (CPU)'
seeds = [1000]
_lrs = [1e-3, 2e-3]
_base = ['config/train_pydoc_cpu.py', '--model_preset=None', '--arch=gpt_neox', '--n_layer=4']
_large = ['--n_embd=128', '--n_head=8']
_sparse = [f'--final_sparsity={1 - 204_800 / 802_816!r}']
_gradual = _sparse + ['--prune_start=15', '--prune_end=90', '--prune_every=5', '--prune_schedule=geometric']
small_pretrain = _base + ['--n_embd=64', '--n_head=4', '--max_iters=300']
common = ['--max_iters=150', '--warmup_iters=15', '--eval_interval=25', '--eval_iters=4', '--log_interval=25',
          '--batch_size=16', '--block_size=64', '--min_lr=None']
arms = dict(
    recipe1=dict(args=_base + _large + _gradual, learning_rate=_lrs),
    recipe2=dict(args=_base[:1] + ['--init_from={small}', "--grow={'n_embd': 128}"] + _gradual, learning_rate=_lrs),
    status_quo=dict(args=_base + _large + _sparse + ['--prune_start=120', '--prune_end=120'], learning_rate=_lrs),
    small_continued=dict(args=_base[:1] + ['--init_from={small}'], learning_rate=_lrs),
)
