"""The Hugging Face format (GPTNeoX and GPT-2 directories that transformers loads to the same logits, weights exactly in
the dtype asked for; a byte-level model's holds our own names and config under a model_type transformers refuses by
name) and load_model, the one loader every script uses."""
import os
import re
import shutil
from dataclasses import asdict, fields
from functools import reduce

import torch
from safetensors.torch import load_file, save_file

import files
from model import GPT, GPTConfig

BYTE_MODEL_TYPE = 'growing_sparse_byte_pool'
MODEL_DIR_FILES = {'config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json',
                   'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt'}


def load_model(init_from, dtype=torch.float32):
    """(model, source) from a train.py checkpoint (ckpt.pt, or the out_dir holding it), a Hugging Face model
    directory or a hub id; the weights in dtype (None: as stored). source: path (the ckpt.pt or the directory),
    checkpoint (train.py's whole dict, None for a directory), record (config.json's 'growing_sparse' dict, or {})."""
    ckpt = init_from if os.path.isfile(init_from) else os.path.join(init_from, 'ckpt.pt')
    if not os.path.isfile(ckpt):
        model = from_pretrained(path := resolve_model_dir(init_from), dtype)
        record = files.read_json(os.path.join(path, 'config.json')).get('growing_sparse') or {}
        return model, dict(path=path, checkpoint=None, record=record)
    try:
        checkpoint = torch.load(ckpt, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f"{ckpt} is not a readable checkpoint (truncated or damaged: {type(e).__name__}): restore "
                         f"it, or point init_from at another one") from None
    # train.py stores the checksum of everything else: bytes damaged on disk are refused, never trained on
    if isinstance(checkpoint, dict) and 'checksum' in checkpoint and checkpoint['checksum'] != files.checksum(
            {k: v for k, v in checkpoint.items() if k != 'checksum'}):
        raise ValueError(f"{ckpt} is damaged (checksum mismatch): restore it or resume from another checkpoint")
    try:
        model = GPT(GPTConfig(**checkpoint['model_args'])).to(dtype or torch.float32)
        model.load_state_dict(checkpoint['model'])
    except Exception as e:
        raise ValueError(f"{ckpt} is not a checkpoint written by train.py, or its weights do not match its "
                         f"model_args ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    return model, dict(path=ckpt, checkpoint=checkpoint, record={})


def from_pretrained(name_or_path, dtype=None):
    """A GPT from a local HF directory (config.json + *.safetensors or pytorch_model*.bin) or a hub id, its weights
    the file's values cast once into dtype (None: the file's own)."""
    path = resolve_model_dir(name_or_path)
    hf = files.read_json(file := os.path.join(path, 'config.json'), what='model config: restore or re-export it')
    config = config_from_hf(hf, file)
    hf_sd = load_hf_weights(path)
    model = GPT(config).to(dtype or next((v.dtype for v in hf_sd.values() if v.is_floating_point()), torch.float32))
    try:
        model.load_state_dict(hf_to_state_dict(hf_sd, config, model.state_dict()))
    except RuntimeError as e:  # tensors missing or unexpected, shapes config.json does not imply
        why = ' '.join(str(e).split()[6:])[:500]
        raise ValueError(f"{path}: the weights do not match config.json: {why}") from None
    return model


def save_pretrained(model, out_dir, extra_meta=None, tokenizer=None, replace=False):
    """config.json (extra_meta as its 'growing_sparse' record) + model.safetensors in the model's dtype, and the
    tokenizer's files, that AutoModelForCausalLM and AutoTokenizer load; built beside out_dir and renamed in: a new or
    empty out_dir appears whole, an existing one has its files replaced, config.json last, or (replace) is swapped."""
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:  # its ids would index past wte
        raise ValueError(f"the {tokenizer.name} tokenizer has {tokenizer.vocab_size} ids but the model only "
                         f"{model.config.vocab_size}: it is not this model's tokenizer")
    out_dir = os.path.abspath(out_dir)
    tmp = os.path.join(os.path.dirname(out_dir), f'.{os.path.basename(out_dir)}.tmp{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        sd = state_dict_to_hf(model.state_dict(), model.config)
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, os.path.join(tmp, 'model.safetensors'),
                  metadata={'format': 'pt'})
        if tokenizer is not None:
            tokenizer.save_hf(tmp)
        hf = config_to_hf(model.config, dtype=next(model.parameters()).dtype)
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
    """ValueError unless out_dir may be replaced by a new model directory: absent, empty, or a model directory written
    here (config.json with a growing_sparse record, model files only); never the working directory or a parent."""
    path, cwd = os.path.realpath(out_dir), os.path.realpath(os.getcwd())
    if cwd == path or cwd.startswith(path.rstrip(os.sep) + os.sep):
        raise ValueError(f"out_dir {out_dir} is the working directory or one of its parents: choose a new directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"out_dir {out_dir} is a file: choose a directory")
    try:
        cfg = files.read_json(os.path.join(path, 'config.json'))
        ours = isinstance(cfg, dict) and ('growing_sparse' in cfg or cfg.get('model_type') == BYTE_MODEL_TYPE)
    except ValueError:
        ours = False
    others = sorted(set(os.listdir(path) if os.path.isdir(path) else []) - MODEL_DIR_FILES)
    if os.path.isdir(path) and os.listdir(path) and (not ours or others):
        what = f"other files ({', '.join(others[:3])})" if others else "a model this codebase did not write"
        raise ValueError(f"out_dir {out_dir} holds {what}: overwrite only replaces an empty directory or a model "
                         f"directory written here; choose a new directory")


def resolve_model_dir(name_or_path):
    """A local directory with a config.json, or a hub id downloaded (safetensors only where it also has .bin files)."""
    if os.path.exists(name_or_path) or name_or_path.startswith(('.', '/')):
        if not os.path.isfile(os.path.join(name_or_path, 'config.json')):
            raise FileNotFoundError(f"{name_or_path}: no such model directory (a folder with a config.json)")
        return name_or_path
    try:
        import huggingface_hub as hub
        try:
            weights = ['*.safetensors' if any(f.endswith('.safetensors') for f in hub.list_repo_files(name_or_path))
                       else 'pytorch_model*.bin']
        except Exception:  # offline: whatever the local cache holds
            weights = ['*.safetensors', 'pytorch_model*.bin']
        return hub.snapshot_download(name_or_path, allow_patterns=['*.json', 'merges.txt', *weights])
    except Exception as e:
        raise FileNotFoundError(f"{name_or_path!r} is not a local directory and could not be fetched from the Hugging "
                                f"Face hub ({type(e).__name__}: {e}); pass a local path or check the network") from None


def load_hf_weights(path):
    names = sorted(f for f in os.listdir(path) if f.endswith('.safetensors')) or sorted(
        f for f in os.listdir(path) if f.startswith('pytorch_model') and f.endswith('.bin'))
    if not names:
        raise FileNotFoundError(f"{path}: no *.safetensors or pytorch_model*.bin weights next to config.json")
    sd = {}
    for f in [os.path.join(path, name) for name in names]:
        try:
            sd.update(load_file(f) if f.endswith('.safetensors') else torch.load(f, 'cpu', weights_only=True))
        except Exception as e:  # safetensors and torch raise their own error types for a damaged file
            why = str(e).splitlines()[0][:200] if str(e) else 'damaged'
            raise ValueError(f"{f} cannot be read ({type(e).__name__}: {why}): restore or re-export it") from None
    return sd


# each GPTConfig field's config.json keys, the first one present read (rope.*: in rope_parameters, or transformers
# 4.x's rope_scaling), and its default when none is (R: required); both spellings of rope are written
R = object()
CONFIG_KEYS = {
    'gpt_neox': dict(n_layer=('num_hidden_layers', R), n_head=('num_attention_heads', R), n_embd=('hidden_size', R),
                     mlp_width=('intermediate_size', R), vocab_size=('vocab_size', R), gelu=('hidden_act', 'gelu'),
                     block_size=('max_position_embeddings', 2048), layer_norm_eps=('layer_norm_eps', 1e-5),
                     rotary_pct=('rope.partial_rotary_factor', 'rotary_pct', 0.25),
                     rotary_base=('rope.rope_theta', 'rotary_emb_base', 10000.0),
                     parallel_residual=('use_parallel_residual', True), tie_embeddings=('tie_word_embeddings', False)),
    'gpt2': dict(n_layer=('n_layer', R), n_head=('n_head', R), n_embd=('n_embd', R), mlp_width=('n_inner', None),
                 vocab_size=('vocab_size', R), block_size=('n_positions', 1024),
                 layer_norm_eps=('layer_norm_epsilon', 1e-5), gelu=('activation_function', 'gelu_new'))}
GELU = {'gelu': 'erf', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}
ONLY = {  # options transformers has and this model does not: the one value each may take here
    'gpt_neox': {'attention_bias': True, 'rope.rope_type': 'default', 'rope.type': 'default'},
    'gpt2': dict(scale_attn_by_inverse_layer_idx=False, add_cross_attention=False, scale_attn_weights=True,
                 tie_word_embeddings=True)}
FIELDS = {f.name: f for f in fields(GPTConfig)}
CHECKS = {int: (lambda v: type(v) is int and v > 0, 'a positive integer'),  # JSON can hold anything at all
          float: (lambda v: type(v) in (int, float) and v >= 0, 'a number >= 0'),
          bool: (lambda v: type(v) is bool, 'true or false'), str: (lambda v: type(v) is str, 'a string')}


def config_from_hf(hf, source='config'):
    """The GPTConfig of a config.json dict; ValueError naming source and the field for anything impossible (a zero
    or negative size, a string for a number, heads that do not divide the width...) or not implemented here."""
    if not isinstance(hf, dict):
        raise ValueError(f"{source} is not a JSON object: restore or re-export the model")
    mt, kw, names = hf.get('model_type'), {}, {}
    if mt == BYTE_MODEL_TYPE:  # our own fields
        kw = hf.get('gpt_config')
        if not isinstance(kw, dict) or kw.keys() - FIELDS.keys():
            raise ValueError(f"{source}: a byte-level model's config without a valid gpt_config: re-export the model")
        names = {k: f'gpt_config.{k}' for k in kw}
    elif mt in CONFIG_KEYS:
        rope = 'rope_parameters' if hf.get('rope_parameters') else 'rope_scaling'
        key = lambda k: k.replace('rope.', rope + '.')
        flat = {**hf, **{f'{rope}.{k}': v for k, v in (hf[rope] if isinstance(hf.get(rope), dict) else {}).items()}}
        for k, value in ONLY[mt].items():
            if flat.get(key(k), value) != value:
                raise ValueError(f"{source}: {key(k)}={flat[key(k)]!r} is not supported (only {value!r})")
        for ours, (*keys, default) in CONFIG_KEYS[mt].items():
            found = [key(k) for k in keys if flat.get(key(k)) is not None] + [None]
            if found[0] is None and default is R:
                raise ValueError(f"{source} lacks the field {keys[0]!r}: not a complete {mt} config")
            names[ours], kw[ours] = found[0] or key(keys[0]), default if found[0] is None else flat[found[0]]
        if kw['gelu'] not in GELU:
            raise ValueError(f"{source}: {names['gelu']}={kw['gelu']!r} is not supported ({', '.join(GELU)})")
        kw.update(arch=mt, gelu=GELU[kw['gelu']])
    else:
        raise ValueError(f"{source}: model_type {mt!r} is not supported: only 'gpt_neox' (Pythia) and 'gpt2'")
    for k, v in kw.items():
        fits, must = CHECKS[FIELDS[k].type]
        if not (FIELDS[k].default is None if v is None else fits(v)):  # None: the family's value, where there is one
            raise ValueError(f"{source}: {names.get(k, k)}={v!r} must be {must}")
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
    neox = c.arch == 'gpt_neox'
    hf = dict(architectures=['GPTNeoXForCausalLM' if neox else 'GPT2LMHeadModel'], model_type=c.arch, torch_dtype=dt,
              dtype=dt, **{k: v for k, v in ONLY[c.arch].items() if not k.startswith('rope.')},
              **dict.fromkeys(('hidden_dropout', 'attention_dropout') if neox else
                              ('resid_pdrop', 'embd_pdrop', 'attn_pdrop'), c.dropout),
              **(dict(bos_token_id=0, eos_token_id=0) if neox else dict(bos_token_id=50256, eos_token_id=50256)
                 if c.vocab_size > 50256 else {}))
    for ours, (*keys, _) in CONFIG_KEYS[c.arch].items():
        for k in keys:
            v = {'erf': 'gelu', 'tanh': 'gelu_new'}[c.gelu] if ours == 'gelu' else getattr(c, ours)
            (hf.setdefault('rope_parameters', dict(rope_type='default')) if k.startswith('rope.') else hf)[
                k.removeprefix('rope.')] = v
    return hf


# our tensor names -> GPT-NeoX's (GPT-2's are ours)
NEOX_NAMES = {'transformer.wte.': 'gpt_neox.embed_in.', 'transformer.ln_f.': 'gpt_neox.final_layer_norm.',
              'lm_head.': 'embed_out.', 'transformer.h.': 'gpt_neox.layers.', '.ln_1.': '.input_layernorm.',
              '.ln_2.': '.post_attention_layernorm.', '.attn.c_attn.': '.attention.query_key_value.',
              '.attn.c_proj.': '.attention.dense.', '.mlp.c_fc.': '.mlp.dense_h_to_4h.',
              '.mlp.c_proj.': '.mlp.dense_4h_to_h.'}
GPT2_CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
hf_name = lambda n, c: reduce(lambda n, pair: n.replace(*pair), NEOX_NAMES.items() if c.arch == 'gpt_neox' else (), n)


def gpt2_layout(name, v, c, to_hf):
    """GPT-2's Conv1D stores a linear's weight transposed, and its fused QKV as [all q | all k | all v]; ours is per
    head, [q_h k_h v_h]: our row (head, part, j) is GPT-2's row part*n_embd + head*head_size + j."""
    if c.arch != 'gpt2':
        return v
    h, part, j = torch.arange(c.n_head)[:, None, None], torch.arange(3)[:, None], torch.arange(c.head_size)
    perm = (part * c.n_embd + h * c.head_size + j).reshape(-1)
    t, p = (lambda v: v.t() if name.endswith(GPT2_CONV1D) else v), lambda v: v[perm] if 'c_attn' in name else v
    return t(v[torch.argsort(perm)] if 'c_attn' in name else v) if to_hf else p(t(v))


def hf_to_state_dict(hf_sd, c, names=None):
    """Hugging Face's tensors in our names and layouts; names: the ones to read (None: GPT(c)'s), so that buffers old
    checkpoints hold (attention.bias...) are left. A tied head reads the embedding; a byte-level model's are ours."""
    if c.byte_pool:
        return dict(hf_sd)
    if c.arch == 'gpt2' and not any(k.startswith('transformer.') for k in hf_sd):  # a bare GPT2Model (the hub's gpt2)
        hf_sd = {'transformer.' + k: v for k, v in hf_sd.items()}
    src = lambda n: hf_name('transformer.wte.weight' if c.tie_embeddings and n == 'lm_head.weight' else n, c)
    return {n: gpt2_layout(n, hf_sd[src(n)], c, False) for n in (GPT(c).state_dict() if names is None else names)
            if src(n) in hf_sd}


def state_dict_to_hf(sd, c):
    return dict(sd) if c.byte_pool else {hf_name(n, c): gpt2_layout(n, v, c, True) for n, v in sd.items()
                                         if not (c.tie_embeddings and n == 'lm_head.weight')}
