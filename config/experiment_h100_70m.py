# Scale B of the measured answer (README, results/experiment_h100_70m/): the experiment of experiment_70m.py on one
# H100 with a small model this codebase pretrains itself (no hub there): the Pythia-70m shape, 20 M enwiki tokens,
# then every arm 40 M tokens. 65,536 tokens per iteration (64 x 1024), bf16, compiled; three arms at a time share
# the GPU.
#   python data/prepare.py --input='../shared/data/enwiki/enwiki_train_0[0-3].jsonl.xz' \
#       --val_input=../shared/data/enwiki/enwiki_val.jsonl.xz --tokenizer=gpt-neox-20b \
#       --tokenizer_path=../shared/data/tokenizers/gpt-neox-20b/tokenizer.json --out_dir=data/enwiki_neox
#   python experiment.py config/experiment_h100_70m.py
exp_dir = 'out-exp-h100-70m'
title = 'Pythia-70m shape (pretrained here on 20 M tokens) grown to 1024 wide; 40 M tokens per arm, one H100'
small_pretrain = ['config/grow_70m.py', 'config/grow_70m_small.py', '--init_from=scratch', '--model_preset=pythia-70m',
                  '--learning_rate=1e-3', '--min_lr=1e-4', '--max_iters=305',
                  '--seed=1000']  # other batches than the arms'
parallel = 3
common = ['--block_size=1024', '--batch_size=8', '--gradient_accumulation_steps=8', '--max_iters=610',
          '--warmup_iters=30', '--eval_interval=30', '--eval_iters=20', '--checkpoint_interval=210',
          '--log_interval=10', '--prune_start=60', '--prune_end=360', '--prune_every=15']
arms = dict(
    recipe2=['config/grow_70m.py', '--init_from={small}'],
    recipe2_isotropic=['config/grow_70m.py', 'config/grow_70m_isotropic.py', '--init_from={small}'],
    recipe2_same_hp=['config/grow_70m.py', 'config/grow_70m_same_hp.py', '--init_from={small}'],
    recipe2_high_lr=['config/grow_70m.py', '--init_from={small}', '--learning_rate=1e-3', '--min_lr=1e-4'],
    recipe1=['config/grow_70m.py', 'config/grow_70m_recipe1.py'],
    small_continued=['config/grow_70m.py', 'config/grow_70m_small.py', '--init_from={small}'],
    dense_large=['config/grow_70m.py', 'config/grow_70m_dense.py'],
)
