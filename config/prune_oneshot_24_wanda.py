# One-shot 2:4 Wanda (Sun et al. 2023): |W| x input-activation norm from 8 calibration batches, the 2 largest of
# every 4 consecutive inputs kept in each row; the pattern that config's to_semi_structured runs on the GPU.
# One event at iteration 0, no training (max_iters=0): the pruned model's val loss, and out_dir/model.
#   python train.py config/train_pydoc_cpu.py config/prune_oneshot_24_wanda.py --init_from=out-pydoc
out_dir = 'out-pydoc-24'
max_iters = 0
save_hf = True
final_sparsity = 0.5
pattern = '2:4'
score = 'wanda'
prune_start = 0
prune_end = 0
calib_batches = 8
