# The README's first command: the whole grow experiment at toy scale on a CPU, offline, in a few minutes.
# Character-level CPython documentation (data/pydoc/prepare.py). The small model (4 layers, 64 wide, 4 heads of 16)
# is pretrained here for 300 iterations, grown 2x in width (128 wide, 8 heads) and pruned back to its 204,800
# linear weights (Recipe 2), against the same shape from scratch with the same pruning (Recipe 1), isotropic
# growth, the small model continued, and the large shape dense; 300 iterations of 4,096 tokens per arm.
#   python data/pydoc/prepare.py && python experiment.py config/experiment_toy_cpu.py
exp_dir = 'out-exp-toy'
title = 'toy: 4 layers, 64 -> 128 wide, character-level pydoc, 1.2 M tokens per arm (CPU)'
_toy = ['config/train_pydoc_cpu.py']
_scratch = ['--model_preset=None', '--arch=gpt_neox', '--n_layer=4']   # the shape keys of a run from scratch
_large = _scratch + ['--n_embd=128', '--n_head=8']
_sparse = [f'--final_sparsity={1 - 204_800 / 802_816!r}', '--prune_start=30', '--prune_end=180', '--prune_every=15',
           '--prune_schedule=geometric']
small_pretrain = _toy + _scratch + ['--n_embd=64', '--n_head=4', '--seed=1000']  # other batches than the arms'
common = ['--max_iters=300', '--warmup_iters=20', '--eval_interval=25', '--eval_iters=10', '--log_interval=25']
arms = dict(
    recipe2=_toy + ['--init_from={small}', '--grow_n_embd=128', '--learning_rate=6e-4', '--min_lr=6e-5',
                    '--score=balanced'] + _sparse,
    recipe2_isotropic=_toy + ['--init_from={small}', '--grow_n_embd=128', '--grow_method=isotropic',
                              '--learning_rate=6e-4', '--min_lr=6e-5', '--score=balanced'] + _sparse,
    recipe2_same_hp=_toy + ['--init_from={small}', '--grow_n_embd=128'] + _sparse,   # Recipe 1's lr and score
    recipe1=_toy + _large + _sparse,
    small_continued=_toy + ['--init_from={small}', '--learning_rate=6e-4', '--min_lr=6e-5'],
    dense_large=_toy + _large,
)
