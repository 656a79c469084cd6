"""The Hugging Face format (transformers loads our directories to our logits, weights exact in dtype); load_model."""
import contextlib
import os
import re
import shutil
from dataclasses import asdict, fields

import torch
from safetensors.torch import load_file, save_file

import files
from data.tokenizer import check_tokenizers
from model import GPT, GPTConfig

BYTE_MODEL_TYPE = 'growing_sparse_byte_pool'  # a byte-level model's: our names and fields, a type transformers refuses
MODEL_DIR_FILES = {'config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json',
                   'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt'}
first_line = lambda e, n: f"{type(e).__name__}: {(str(e).splitlines() or ['damaged'])[0][:n]}"


def load_model(init_from, dtype=torch.float32):
    """(model, dict(path, checkpoint, record)) from ckpt.pt, its out_dir, an HF dir or hub id; dtype None: as stored."""
    ckpt = init_from if os.path.isfile(init_from) else os.path.join(init_from, 'ckpt.pt')
    if not os.path.isfile(ckpt):
        model = from_pretrained(path := resolve_model_dir(init_from), dtype)
        record = files.read_json(os.path.join(path, 'config.json')).get('growing_sparse') or {}
        return model, dict(path=path, checkpoint=None, record=record)
    try:
        checkpoint = torch.load(ckpt, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f"{ckpt} is not a readable checkpoint ({type(e).__name__}): restore or replace it") from None
    if isinstance(checkpoint, dict) and 'checksum' in checkpoint and checkpoint['checksum'] != files.checksum(
            {k: v for k, v in checkpoint.items() if k != 'checksum'}):  # train.py's: damaged bytes are never used
        raise ValueError(f"{ckpt} is damaged (checksum mismatch): restore it or resume from another checkpoint")
    try:
        model = GPT(GPTConfig(**checkpoint['model_args'])).to(dtype or torch.float32)
        model.load_state_dict(checkpoint['model'])
    except Exception as e:
        raise ValueError(f"{ckpt} is not a checkpoint written by train.py, or its weights do not match its "
                         f"model_args ({first_line(e, 300)})") from None
    return model, dict(path=ckpt, checkpoint=checkpoint, record={})


def from_pretrained(name_or_path, dtype=None):
    """A GPT from an HF directory or hub id, its weights the files' values cast once into dtype (None: as stored)."""
    path = resolve_model_dir(name_or_path)
    hf = files.read_json(file := os.path.join(path, 'config.json'), what='model config: restore or re-export it')
    config, hf_sd, ls = config_from_hf(hf, file), {}, sorted(os.listdir(path))
    if not (weights := [f for f in ls if f.endswith('.safetensors')] or [f for f in ls if re.fullmatch(
            r'pytorch_model.*\.bin', f)]):
        raise FileNotFoundError(f"{path}: no *.safetensors or pytorch_model*.bin weights next to config.json")
    for f in (os.path.join(path, f) for f in weights):
        try:  # safetensors and torch raise their own error types for a damaged file
            hf_sd.update(load_file(f) if f.endswith('.safetensors') else torch.load(f, 'cpu', weights_only=True))
        except Exception as e:
            raise ValueError(f"{f} cannot be read ({first_line(e, 200)}): restore or re-export it") from None
    model = GPT(config).to(dtype or next((v.dtype for v in hf_sd.values() if v.is_floating_point()), torch.float32))
    try:
        model.load_state_dict(hf_to_state_dict(hf_sd, config, model.state_dict()))
    except RuntimeError as e:  # tensors missing or unexpected, shapes config.json does not imply
        raise ValueError(f"{path}: the weights do not match config.json: "
                         f"{' '.join(str(e).split()[6:])[:500]}") from None
    return model


def save_pretrained(model, out_dir, extra_meta=None, tokenizer=None, replace=False):
    """config.json (extra_meta: its 'growing_sparse' record), model.safetensors in the model's dtype, the tokenizer's
    files; built beside out_dir, swapped in whole (a new or empty out_dir, or replace) or file by file, config last."""
    check_tokenizers(model, tokenizer, 'the model', f'the {tokenizer.name} tokenizer') if tokenizer else None
    hf = config_to_hf(model.config, dtype=next(model.parameters()).dtype)
    head, name = os.path.split(out_dir := os.path.abspath(out_dir))
    shutil.rmtree(tmp := os.path.join(head, f'.{name}.tmp{os.getpid()}'), ignore_errors=True)
    try:
        os.makedirs(tmp)
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict_to_hf(model.state_dict(), model.config)
                   .items()}, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
        if tokenizer is not None:
            tokenizer.save_hf(tmp)
        files.write_json(os.path.join(tmp, 'config.json'), dict(hf, growing_sparse=extra_meta) if extra_meta else hf)
        if replace and os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        if not os.path.isdir(out_dir) or not os.listdir(out_dir):
            os.replace(tmp, out_dir)
        for name in sorted(os.listdir(tmp) if os.path.isdir(tmp) else [], key=lambda n: n == 'config.json'):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    except OSError as e:
        raise files.os_error(out_dir, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(out_dir):
    """ValueError unless out_dir may be replaced: absent, empty or our model directory, never the cwd or a parent."""
    if os.path.commonpath([path := os.path.realpath(out_dir), os.path.realpath(os.getcwd())]) == path:
        raise ValueError(f"out_dir {out_dir} is the working directory or one of its parents: choose a new directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"out_dir {out_dir} is a file: choose a directory")
    cfg = {}
    with contextlib.suppress(ValueError):  # missing or damaged: not ours
        cfg = files.read_json(os.path.join(path, 'config.json'))
    ours = isinstance(cfg, dict) and ('growing_sparse' in cfg or cfg.get('model_type') == BYTE_MODEL_TYPE)
    others = sorted(set(ls := os.listdir(path) if os.path.isdir(path) else []) - MODEL_DIR_FILES)
    if ls and (not ours or others):
        what = f"other files ({', '.join(others[:3])})" if others else "a model this codebase did not write"
        raise ValueError(f"out_dir {out_dir} holds {what}: overwrite replaces only empty or our model directories")


def resolve_model_dir(name_or_path):
    """A local directory with a config.json, or a hub id downloaded (safetensors only where it also has .bin files)."""
    if os.path.exists(name_or_path) or name_or_path.startswith(('.', '/')):
        if not os.path.isfile(os.path.join(name_or_path, 'config.json')):
            raise FileNotFoundError(f"{name_or_path}: no such model directory (a folder with a config.json)")
        return name_or_path
    try:
        import huggingface_hub as hub
        weights = ['*.safetensors', 'pytorch_model*.bin']  # offline: whatever the local cache holds
        with contextlib.suppress(Exception):
            weights = ['*.safetensors' if any(f.endswith('.safetensors') for f in hub.list_repo_files(name_or_path))
                       else 'pytorch_model*.bin']
        return hub.snapshot_download(name_or_path, allow_patterns=['*.json', 'merges.txt', *weights])
    except Exception as e:
        raise FileNotFoundError(f"{name_or_path!r} is not a local directory and could not be fetched from the Hugging "
                                f"Face hub ({type(e).__name__}: {e}); pass a local path or check the network") from None


R = object()  # field: its config.json keys, the first present read (rope.*: in rope_parameters, or transformers 4.x's
CONFIG_KEYS = {  # rope_scaling; every one written), and its default when none is (R: required)
    'gpt_neox': dict(n_layer=('num_hidden_layers', R), n_head=('num_attention_heads', R), n_embd=('hidden_size', R),
                     mlp_width=('intermediate_size', R), vocab_size=('vocab_size', R), gelu=('hidden_act', 'gelu'),
                     block_size=('max_position_embeddings', 2048), layer_norm_eps=('layer_norm_eps', 1e-5),
                     rotary_pct=('rope.partial_rotary_factor', 'rotary_pct', 0.25),
                     rotary_base=('rope.rope_theta', 'rotary_emb_base', 10000.0),
                     parallel_residual=('use_parallel_residual', True), tie_embeddings=('tie_word_embeddings', False)),
    'gpt2': dict(n_layer=('n_layer', R), n_head=('n_head', R), n_embd=('n_embd', R), mlp_width=('n_inner', None),
                 vocab_size=('vocab_size', R), block_size=('n_positions', 1024),
                 layer_norm_eps=('layer_norm_epsilon', 1e-5), gelu=('activation_function', 'gelu_new'))}
GELU, FIELDS = {'gelu': 'erf', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}, {f.name: f for f in fields(GPTConfig)}
ONLY = {  # options transformers has and this model does not: the values each may take here (the first is written)
    'gpt_neox': {'attention_bias': [True], 'rope.rope_type': ['default'], 'rope.type': ['default'],
                 'hidden_act': [*GELU, None]},  # None: the default
    'gpt2': dict(scale_attn_by_inverse_layer_idx=[False], add_cross_attention=[False], scale_attn_weights=[True],
                 tie_word_embeddings=[True], activation_function=[*GELU, None])}
HF_ARCH = {'gpt_neox': ('GPTNeoXForCausalLM', ('hidden_dropout', 'attention_dropout'), 0),  # dropout keys, and
           'gpt2': ('GPT2LMHeadModel', ('resid_pdrop', 'embd_pdrop', 'attn_pdrop'), 50256)}  # bos = eos if in vocab
CHECKS = {int: (lambda v: type(v) is int and v > 0, 'a positive integer'),  # JSON can hold anything at all
          float: (lambda v: type(v) in (int, float) and v >= 0, 'a number >= 0'),
          bool: (lambda v: type(v) is bool, 'true or false'), str: (lambda v: type(v) is str, 'a string')}


def config_from_hf(hf, source='config'):
    """The GPTConfig of a config.json dict, or one ValueError line naming source and the impossible or unknown field."""
    if not isinstance(hf, dict):
        raise ValueError(f"{source} is not a JSON object: restore or re-export the model")
    mt, kw = hf.get('model_type'), hf.get('gpt_config')  # a byte-level model's: our own fields
    if mt == BYTE_MODEL_TYPE and not (isinstance(kw, dict) and kw.keys() <= FIELDS.keys()):
        raise ValueError(f"{source}: a byte-level model's config without a valid gpt_config: re-export the model")
    names = {k: f'gpt_config.{k}' for k in kw} if mt == BYTE_MODEL_TYPE else {}
    if mt in CONFIG_KEYS:
        rope = 'rope_parameters' if hf.get('rope_parameters') else 'rope_scaling'
        flat = {**hf, **{'rope.' + k: v for k, v in (hf[rope] if isinstance(hf.get(rope), dict) else {}).items()}}
        show, kw = lambda k: k.replace('rope.', rope + '.'), dict(arch=mt)
        if k := next((k for k, values in ONLY[mt].items() if flat.get(k, values[0]) not in values), None):
            raise ValueError(f"{source}: {show(k)}={flat[k]!r} is not supported (only {str(ONLY[mt][k])[1:-1]})")
        for ours, (*keys, default) in CONFIG_KEYS[mt].items():
            k = next((k for k in keys if flat.get(k) is not None), None)
            if k is None and default is R:
                raise ValueError(f"{source} lacks the field {keys[0]!r}: not a complete {mt} config")
            names[ours], kw[ours] = show(k or keys[0]), default if k is None else flat[k]
        kw['gelu'] = GELU[kw['gelu']]
    elif mt != BYTE_MODEL_TYPE:
        raise ValueError(f"{source}: model_type {mt!r} is not supported: only 'gpt_neox' (Pythia) and 'gpt2'")
    for k, v in kw.items():  # None: the family's value, where there is one
        if not (FIELDS[k].default is None if v is None else CHECKS[FIELDS[k].type][0](v)):
            raise ValueError(f"{source}: {names.get(k, k)}={v!r} must be {CHECKS[FIELDS[k].type][1]}")
    try:
        return GPTConfig(**kw)
    except ValueError as e:  # GPTConfig's message, in config.json's names
        raise ValueError(f"{source}: " + re.sub(r'\w+', lambda m: names.get(m.group(), m.group()), str(e))) from None


def config_to_hf(c, dtype=torch.float32):
    dt = str(dtype).removeprefix('torch.')
    if c.byte_pool:
        return dict(model_type=BYTE_MODEL_TYPE, architectures=['GPT'], gpt_config=asdict(c), torch_dtype=dt,
                    note="a byte-level model (byte_pool.py) of the growing-sparse codebase: load it with hf_io")
    if c.arch == 'gpt2' and (c.parallel_residual or not c.tie_embeddings):
        raise ValueError("transformers' GPT-2 has a sequential residual and a tied head: this model is no gpt2")
    arch, dropouts, eot = HF_ARCH[c.arch]
    hf = dict(architectures=[arch], model_type=c.arch, torch_dtype=dt, dtype=dt, **dict.fromkeys(dropouts, c.dropout),
              **{k: v[0] for k, v in ONLY[c.arch].items() if '.' not in k},
              **(dict(bos_token_id=eot, eos_token_id=eot) if c.vocab_size > eot else {}))
    for ours, (*keys, _) in CONFIG_KEYS[c.arch].items():
        v = {'erf': 'gelu', 'tanh': 'gelu_new'}[c.gelu] if ours == 'gelu' else getattr(c, ours)
        for *rope, k in (k.split('.') for k in keys):  # rope.k: in rope_parameters
            (hf.setdefault('rope_parameters', dict(rope_type='default')) if rope else hf)[k] = v
    return hf


NEOX_NAMES = {  # our tensor names -> GPT-NeoX's (GPT-2's are ours)
    'transformer.wte.': 'gpt_neox.embed_in.', 'transformer.ln_f.': 'gpt_neox.final_layer_norm.',
    'lm_head.': 'embed_out.', 'transformer.h.': 'gpt_neox.layers.', '.ln_1.': '.input_layernorm.',
    '.ln_2.': '.post_attention_layernorm.', '.attn.c_attn.': '.attention.query_key_value.',
    '.attn.c_proj.': '.attention.dense.', '.mlp.c_fc.': '.mlp.dense_h_to_4h.', '.mlp.c_proj.': '.mlp.dense_4h_to_h.'}
NEOX_RE = re.compile('|'.join(map(re.escape, NEOX_NAMES)))
hf_name = lambda n, c: NEOX_RE.sub(lambda m: NEOX_NAMES[m[0]], n) if c.arch == 'gpt_neox' else n
# GPT-2's Conv1D stores the blocks' weights transposed, (in, out); its fused QKV rows are (part, head, j), ours per head
conv1d = lambda n, v: v.t() if n.startswith('transformer.h.') and v.dim() == 2 else v
qkv = lambda n, v, a, b: v.unflatten(0, (a, b, -1)).transpose(0, 1).flatten(0, 2) if 'c_attn' in n else v
gpt2_layout = lambda n, v, c, to_hf: (v if c.arch != 'gpt2' else conv1d(n, qkv(n, v, c.n_head, 3)) if to_hf else
                                      qkv(n, conv1d(n, v), 3, c.n_head))
state_dict_to_hf = lambda sd, c: dict(sd) if c.byte_pool else {  # a tied head is saved once, as the embedding
    hf_name(n, c): gpt2_layout(n, v, c, True) for n, v in sd.items() if n != 'lm_head.weight' or not c.tie_embeddings}


def hf_to_state_dict(hf_sd, c, names=None):
    """Hugging Face's tensors in our names and layouts, for names only (None: GPT(c)'s): old checkpoints hold more."""
    bare = 'transformer.' if c.arch == 'gpt2' and 'transformer.wte.weight' not in hf_sd else ''  # the hub's gpt2
    src = lambda n: hf_name(n.replace('lm_head', 'transformer.wte') if c.tie_embeddings else n, c).removeprefix(bare)
    return dict(hf_sd) if c.byte_pool else {n: gpt2_layout(n, hf_sd[src(n)], c, False) for n in (
        GPT(c).state_dict() if names is None else names) if src(n) in hf_sd}
