# The Pythia-14m core of the byte-level comparison, an overlay on train_bytes_70m.py (everything else as there: the
# grow experiment's small-model settings at scale A). The byte encoder and decoder (2 layers each, 128 wide) replace
# the 12.9 M embedding and head parameters.
#   python train.py config/train_bytes_70m.py config/train_bytes_14m.py                                    # bytes
#   python train.py config/train_bytes_70m.py config/train_bytes_14m.py --byte_pool=False --out_dir=out-bpe-14m
out_dir = 'out-bytes-14m'
model_preset = 'pythia-14m'
byte_embd = 128
