# Recipe 2 as the seed ran it: Pythia-70m (deduped) grown 2x in width with top_left growth (512 -> 1024 wide,
# 8 -> 16 heads of 64, MLP 2048 -> 4096, 6 layers: 70.4 M -> 178.6 M parameters, the same logits at step 0), then
# trained while pruned gradually (geometric, Journey Matters) back to the 70m's 44,630,016 non-zero linear weights.
#   torchrun --standalone --nproc_per_node=8 train.py config/grow_70m.py
#   python train.py config/grow_70m.py --init_from=path/to/pythia-70m-deduped    # offline: a local HF directory
# data_dir: any corpus prepared with the GPT-NeoX tokenizer (data/prepare.py --tokenizer=gpt-neox-20b). The other arms
# of the experiment are this file with other settings (config/experiment_70m.py runs them all and draws the plot).
out_dir = 'out-grow-70m'
data_dir = 'data/enwiki_neox'
init_from = 'EleutherAI/pythia-70m-deduped'
grow = {'n_embd': 1024}         # top_left: 16 heads of 64; MLP 4096 (the source's 4x ratio)
# 8 x 16 x 2048 = 262,144 tokens per iteration for any number of GPUs dividing 8; 2000 iterations = 524 M tokens
block_size = 2048
batch_size = 16
gradient_accumulation_steps = 8
max_iters = 2000
warmup_iters = 100
learning_rate = 3e-4            # continued training: a re-warmed, lower peak than Pythia-70m's 1e-3
min_lr = 3e-5
eval_interval = 100
eval_iters = 50
checkpoint_interval = 500       # a checkpoint (weights + AdamW) of the 1024-wide model is ~2.9 GB
log_interval = 10
compile = True
dtype = 'bfloat16'
# pruning to the small model's count: 1 - 44,630,016 / 127,008,768 of the linear weights (blocks + untied head),
# 21 geometric events from 10% to 60% of training (each removes the same fraction of the survivors), then 40% of
# training at the final masks. 'balanced' is the growth-aware magnitude score (README: growth-aware pruning)
final_sparsity = 1 - 44_630_016 / 127_008_768
prune_start = 200
prune_end = 1200
prune_every = 50
prune_schedule = 'geometric'
score = 'balanced'
