# The small model continued: Pythia-70m as it is, dense, for the same tokens at the same learning rate as Recipe 2.
#   python train.py config/grow_70m.py config/grow_70m_small.py
out_dir = 'out-grow-70m-small'
grow_n_embd = None
final_sparsity = 0.0
