# The seed's experiment: Pythia-70m-deduped grown to 1024 wide (Recipe 2, top_left and isotropic) against the same
# shape from scratch with the same pruning (Recipe 1), the 70m continued, and the 1024-wide shape dense; every arm
# 524 M tokens (config/grow_70m.py), then the plot and the table.
#   python experiment.py config/experiment_70m.py                     # needs the hub and data/enwiki_neox
#   python experiment.py config/experiment_70m.py --small=path/to/pythia-70m-deduped --launcher=python   # offline
exp_dir = 'out-exp-70m'
small = 'EleutherAI/pythia-70m-deduped'
small_pretrain_tokens = 299_892_736_000   # Pythia: 143,000 steps x 2,097,152 tokens (its sunk cost)
launcher = 'torchrun --standalone --nproc_per_node=8'
arms = dict(
    recipe2=['config/grow_70m.py', '--init_from={small}'],
    recipe2_isotropic=['config/grow_70m.py', 'config/grow_70m_isotropic.py', '--init_from={small}'],
    recipe2_same_hp=['config/grow_70m.py', 'config/grow_70m_same_hp.py', '--init_from={small}'],
    recipe1=['config/grow_70m.py', 'config/grow_70m_recipe1.py'],
    small_continued=['config/grow_70m.py', 'config/grow_70m_small.py', '--init_from={small}'],
    dense_large=['config/grow_70m.py', 'config/grow_70m_dense.py'],
)
