# One-shot 50% magnitude pruning of a model directory (or a train.py out_dir / ckpt.pt), one global threshold
# over every linear weight of the blocks and the untied head; val loss before/after on the pydoc dataset.
#   python prune.py config/prune_oneshot_50.py --init_from=out-pydoc --out_dir=out-pydoc-pruned50
sparsity = 0.5
scope = 'global'
pattern = 'unstructured'
score = 'magnitude'
prune_head = True
data_dir = 'data/pydoc'
block_size = 128
eval_iters = 20
