# One-shot 2:4 Wanda (Sun et al. 2023): |W| x input-activation norm from 8 calibration batches, the 2 largest of
# every 4 consecutive inputs kept in each row; the pattern that config's to_semi_structured runs on the GPU.
#   python prune.py config/prune_oneshot_24_wanda.py --init_from=out-pydoc --out_dir=out-pydoc-24
sparsity = 0.5
pattern = '2:4'
score = 'wanda'
data_dir = 'data/pydoc'
block_size = 128
calib_batches = 8
eval_iters = 20
