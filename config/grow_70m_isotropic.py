# Recipe 2 with isotropic growth (HyperCloning): every residual coordinate, head and MLP unit copied twice.
#   python train.py config/grow_70m.py config/grow_70m_isotropic.py
out_dir = 'out-grow-70m-isotropic'
grow_method = 'isotropic'
