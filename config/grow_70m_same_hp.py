# Recipe 2 with Recipe 1's hyperparameters: the grown model trained at the from-scratch learning rate (1e-3) and
# pruned by plain magnitude, so that the initialisation is the only difference from Recipe 1.
#   python train.py config/grow_70m.py config/grow_70m_same_hp.py
out_dir = 'out-grow-70m-same-hp'
learning_rate = 1e-3
min_lr = 1e-4
score = 'magnitude'
