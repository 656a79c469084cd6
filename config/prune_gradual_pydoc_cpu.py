# Gradual pruning inside train.py: the pydoc quickstart taken to 80% sparsity on the Journey Matters schedule
# (geometric: each of the 6 events at iterations 100, 200, ..., 600 removes the same fraction, 1 - 0.2^(1/6),
# of the surviving weights), then trained on at the final masks.
#   python train.py config/train_pydoc_cpu.py config/prune_gradual_pydoc_cpu.py
# metrics.jsonl gets sparsity, nonzero_linear, avg_linear_params (N_avg) and target_sparsity at each eval.
out_dir = 'out-pydoc-sparse80'
max_iters = 900
final_sparsity = 0.8
prune_start = 100
prune_end = 600
prune_every = 100
prune_schedule = 'geometric'
scope = 'global'
pattern = 'unstructured'
score = 'magnitude'           # 'balanced' when training from an expanded model (growth-aware)
prune_head = True
