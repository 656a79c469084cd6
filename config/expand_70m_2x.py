# Pythia-70m (512 wide, 8 heads of 64, 6 layers, MLP 2048) -> 2x width: 1024 wide, 16 heads, MLP 4096.
# Isotropic: every residual coordinate, head and MLP unit gets exactly two copies (LayerNorm eps unchanged).
# python expand.py config/expand_70m_2x.py [--init_from=<dir | out_dir/ckpt.pt>] [--method=top_left]
init_from = 'EleutherAI/pythia-70m-deduped'
out_dir = 'out-expand-70m-2x'
method = 'isotropic'
n_embd = 1024
n_head = 16
n_layer = 6
