# The full-scale experiment: Pythia-70m-deduped (300 B tokens) grown to 1024 wide, every arm 524 M tokens on 8 GPUs
# (config/grow_70m.py's schedule), at two learning rates each; one seed (set seeds for more).
#   python experiment.py config/experiment_70m.py                     # needs the hub and data/enwiki_neox
#   python experiment.py config/experiment_70m.py --small=path/to/pythia-70m-deduped --launcher=python   # offline
exp_dir = 'out-exp-70m'
small = 'EleutherAI/pythia-70m-deduped'
small_pretrain_tokens = 299_892_736_000   # Pythia: 143,000 steps x 2,097,152 tokens (its sunk cost)
launcher = 'torchrun --standalone --nproc_per_node=8'
_lrs = [3e-4, 1e-3]
_large = ['config/grow_70m.py', '--init_from=scratch', '--grow=None', '--model_preset=pythia-70m', '--n_embd=1024',
          '--n_head=16', '--mlp_width=4096']
arms = dict(
    recipe2=dict(args=['config/grow_70m.py', '--init_from={small}'], learning_rate=_lrs),
    recipe2_isotropic=dict(args=['config/grow_70m.py', '--init_from={small}',
                                 "--grow={'n_embd': 1024, 'method': 'isotropic'}"], learning_rate=_lrs),
    recipe1=dict(args=_large + ['--score=magnitude'], learning_rate=_lrs),
    status_quo=dict(args=_large + ['--score=magnitude', '--prune_start=1600', '--prune_end=1600'], learning_rate=_lrs),
    small_continued=dict(args=['config/grow_70m.py', '--init_from={small}', '--grow=None', '--final_sparsity=0.0'],
                         learning_rate=_lrs),
    dense_large=dict(args=_large + ['--final_sparsity=0.0'], learning_rate=_lrs),
)
