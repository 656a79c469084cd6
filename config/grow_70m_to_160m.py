# Pythia-70m shape (512/8H/6L, MLP 2048) -> Pythia-160m shape (768/12H/12L, MLP 3072): width x1.5 and depth x2.
# Top-left: the 70m weights are the top-left block of every weight, new heads/units start random on their
# input side and zero on their output side, new layers are identity blocks between the old ones.
# Only grown, evaluated and written to out_dir/model (max_iters=0); a GPT-NeoX-tokenized dataset for the val loss:
#   python train.py config/grow_70m_to_160m.py [--init_from=...] [--grow="{..., 'method': 'isotropic'}"]
init_from = 'EleutherAI/pythia-70m-deduped'
out_dir = 'out-grow-70m-to-160m'
data_dir = 'data/enwiki_neox'
grow = {'n_embd': 768, 'n_head': 12, 'n_layer': 12, 'method': 'top_left', 'depth_mode': 'interleave'}
max_iters = 0
save_hf = True
