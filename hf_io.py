"""
The Hugging Face format, this codebase's interchange format, and the one loader every script uses.
- load_model(init_from): a train.py checkpoint (ckpt.pt, or the out_dir holding one), a Hugging Face model directory,
  or a hub id -> (GPT, source)
- from_pretrained / save_pretrained: GPTNeoX and GPT-2 directories (config.json + safetensors) that transformers
  loads to the same logits, with the weights exactly in the dtype asked for, and with the tokenizer's files
- the conversion between our modules and Hugging Face's (names, GPT-2's Conv1D and fused-QKV layouts)
A byte-level model (byte_pool) has no transformers class: its directory has the same files, our own tensor names and
config under model_type BYTE_MODEL_TYPE, which transformers refuses by name instead of loading something else.
"""
import json
import os
import shutil

import torch

from model import GPT, GPTConfig

BYTE_MODEL_TYPE = 'growing_sparse_byte_pool'
DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def load_model(init_from, dtype=torch.float32):
    """(model, source) from anything a script's init_from may name: a train.py checkpoint (ckpt.pt, or the out_dir
    holding it), a Hugging Face model directory, or a hub id; the weights in dtype (None: as stored). source: path
    (the ckpt.pt or the model directory), checkpoint (train.py's whole checkpoint dict, or None for a directory),
    record (the directory's config.json 'growing_sparse' provenance, {} if none)."""
    ckpt = init_from if os.path.isfile(init_from) else os.path.join(init_from, 'ckpt.pt')
    if os.path.isfile(ckpt):
        try:
            checkpoint = torch.load(ckpt, map_location='cpu', weights_only=True)
        except Exception as e:
            raise ValueError(f"{ckpt} is not a readable checkpoint (truncated or damaged: {type(e).__name__}): "
                             f"restore it, or point init_from at another one") from None
        try:
            model = GPT(GPTConfig(**checkpoint['model_args']))
            if dtype is not None:
                model.to(dtype)
            model.load_state_dict(checkpoint['model'])
        except Exception as e:
            raise ValueError(f"{ckpt} is not a checkpoint written by train.py, or its weights do not match its "
                             f"model_args ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
        return model, dict(path=ckpt, checkpoint=checkpoint, record={})
    path = resolve_model_dir(init_from)
    model = from_pretrained(path, dtype)
    record = read_config_json(path).get('growing_sparse') or {}
    return model, dict(path=path, checkpoint=None, record=record)


def from_pretrained(name_or_path, dtype=None):
    """A local HF directory (config.json + *.safetensors or pytorch_model.bin) or a hub id, as a GPT whose weights
    are the file's values exactly in dtype (None: the file's own dtype): the model is built in dtype and the stored
    tensors are cast once, straight into it."""
    path = resolve_model_dir(name_or_path)
    config = config_from_hf(read_config_json(path), source=os.path.join(path, 'config.json'))
    sd = hf_to_state_dict(load_hf_weights(path), config)
    if dtype is None:
        dtype = next((v.dtype for v in sd.values() if v.is_floating_point()), torch.float32)
    model = GPT(config).to(dtype)
    ours = model.state_dict()
    expected = {k for k in ours if not (config.tie_embeddings and k == 'lm_head.weight')}
    missing, unexpected = expected - sd.keys(), sd.keys() - expected
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match config.json: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    for k, v in sd.items():
        if v.shape != ours[k].shape:
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)} but config.json implies "
                             f"{tuple(ours[k].shape)}: the checkpoint and its config disagree")
    model.load_state_dict(sd, strict=not config.tie_embeddings)
    return model


def save_pretrained(model, out_dir, extra_meta=None, tokenizer=None, replace=False):
    """Write config.json + model.safetensors (in the model's dtype) that transformers.AutoModelForCausalLM loads,
    and the tokenizer's files (a data.tokenizer.Tokenizer) that AutoTokenizer loads to the same ids. Everything is
    built in a temporary directory beside out_dir and renamed into place, so a crash never leaves a half-written
    model directory: a new (or empty) out_dir appears whole; an existing one has its files replaced one by one,
    config.json last, or (replace=True) is swapped for the new one entirely."""
    from safetensors.torch import save_file
    out_dir = os.path.abspath(out_dir)
    tmp = os.path.join(os.path.dirname(out_dir), f'.{os.path.basename(out_dir)}.tmp{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        sd = state_dict_to_hf(model.state_dict(), model.config)
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, os.path.join(tmp, 'model.safetensors'),
                  metadata={'format': 'pt'})
        if tokenizer is not None:
            tokenizer.save_hf(tmp)
        hf = config_to_hf(model.config, dtype=next(model.parameters()).dtype)
        if extra_meta:
            hf['growing_sparse'] = extra_meta  # provenance (expansion, pruning); transformers ignores it
        with open(os.path.join(tmp, 'config.json'), 'w') as f:
            json.dump(hf, f, indent=2)
        if replace and os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        if not os.path.isdir(out_dir) or not os.listdir(out_dir):
            os.replace(tmp, out_dir)
        else:
            for name in sorted(os.listdir(tmp), key=lambda n: n == 'config.json'):
                os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------- HF format conversion
MODEL_DIR_FILES = {'config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json',
                   'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt'}


def check_replaceable(out_dir):
    """ValueError unless out_dir may be replaced by a new model directory: it does not exist, is empty, or is a model
    directory this codebase wrote (a config.json with a growing_sparse record, and model files only). Never the
    working directory or a folder holding it."""
    path, cwd = os.path.realpath(out_dir), os.path.realpath(os.getcwd())
    if cwd == path or cwd.startswith(path.rstrip(os.sep) + os.sep):
        raise ValueError(f"out_dir {out_dir} is the working directory or one of its parents: choose a new directory")
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise ValueError(f"out_dir {out_dir} is a file: choose a directory")
    names = set(os.listdir(path))
    if not names:
        return
    try:
        with open(os.path.join(path, 'config.json')) as f:
            cfg = json.load(f)
        ours = 'growing_sparse' in cfg or cfg.get('model_type') == BYTE_MODEL_TYPE
    except (OSError, ValueError):
        ours = False
    others = sorted(names - MODEL_DIR_FILES)
    if not ours or others:
        what = f"other files ({', '.join(others[:3])})" if others else "a model this codebase did not write"
        raise ValueError(f"out_dir {out_dir} holds {what}: overwrite only replaces an empty directory or a model "
                         f"directory written here; choose a new directory")


def resolve_model_dir(name_or_path):
    if os.path.isdir(name_or_path):
        if not os.path.exists(os.path.join(name_or_path, 'config.json')):
            raise FileNotFoundError(f"{name_or_path} has no config.json: not a Hugging Face model directory")
        return name_or_path
    if os.path.exists(name_or_path) or name_or_path.startswith(('.', '/')):
        raise FileNotFoundError(f"{name_or_path}: no such model directory")
    try:
        import huggingface_hub
        # the weights in one format only: safetensors where the repository has them (most have both, and the
        # .bin files would double the download), else pytorch_model*.bin
        try:
            files = huggingface_hub.list_repo_files(name_or_path)
            weights = ['*.safetensors'] if any(f.endswith('.safetensors') for f in files) else ['pytorch_model*.bin']
        except Exception:  # offline: whatever the local cache holds
            weights = ['*.safetensors', 'pytorch_model*.bin']
        return huggingface_hub.snapshot_download(name_or_path, allow_patterns=['*.json', 'merges.txt', *weights])
    except Exception as e:
        raise FileNotFoundError(f"{name_or_path!r} is not a local directory and could not be fetched from the "
                                f"Hugging Face hub ({type(e).__name__}: {e}); pass a local path or check the "
                                f"network") from None


def read_config_json(path):
    """A model directory's config.json as a dict, or ValueError naming the file."""
    file = os.path.join(path, 'config.json')
    try:
        with open(file, encoding='utf-8') as f:
            hf = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({getattr(e, 'msg', e)}): restore or re-export the model") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{file} is not a JSON object: restore or re-export the model")
    return hf


def load_hf_weights(path):
    files = sorted(f for f in os.listdir(path) if f.endswith('.safetensors'))
    if not files:
        files = sorted(f for f in os.listdir(path) if f.startswith('pytorch_model') and f.endswith('.bin'))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors or pytorch_model*.bin weights next to config.json")
    sd = {}
    for f in files:
        try:
            if f.endswith('.safetensors'):
                from safetensors.torch import load_file
                sd.update(load_file(os.path.join(path, f)))
            else:
                sd.update(torch.load(os.path.join(path, f), map_location='cpu', weights_only=True))
        except Exception as e:  # safetensors and torch raise their own error types for a damaged file
            raise ValueError(f"{os.path.join(path, f)} cannot be read ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else 'damaged'}): restore or re-export the "
                             f"model") from None
    return sd


def config_from_hf(hf, source='config'):
    if hf.get('model_type') == BYTE_MODEL_TYPE:
        try:
            return GPTConfig(**hf['gpt_config'])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: a byte-level model's config without a valid gpt_config ({e}): restore or "
                             f"re-export the model") from None
    try:
        return _config_from_hf(hf, source)
    except KeyError as e:
        raise ValueError(f"{source} lacks the field {e.args[0]!r}: not a complete {hf.get('model_type')} config; "
                         f"restore or re-export the model") from None
    except TypeError as e:
        raise ValueError(f"{source}: a field has the wrong type ({e}): restore or re-export the model") from None


def _config_from_hf(hf, source):
    mt = hf.get('model_type')
    if mt == 'gpt_neox':
        rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
        rope_type = rope.get('rope_type', rope.get('type', 'default'))  # 'type': the transformers 4.x spelling
        if rope_type != 'default':
            raise ValueError(f"{source}: rope type {rope_type!r} is not supported (only plain RoPE)")
        if not hf.get('attention_bias', True):
            raise ValueError(f"{source}: attention_bias=False is not supported")
        act = {'gelu': 'erf', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}.get(hf.get('hidden_act', 'gelu'))
        if act is None:
            raise ValueError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported (gelu, gelu_new)")
        return GPTConfig(
            arch='gpt_neox', n_layer=hf['num_hidden_layers'], n_head=hf['num_attention_heads'],
            n_embd=hf['hidden_size'], mlp_width=hf['intermediate_size'], vocab_size=hf['vocab_size'],
            block_size=hf.get('max_position_embeddings', 2048), layer_norm_eps=hf.get('layer_norm_eps', 1e-5),
            rotary_pct=rope.get('partial_rotary_factor', hf.get('rotary_pct', 0.25)),
            rotary_base=rope.get('rope_theta', hf.get('rotary_emb_base', 10000.0)),
            parallel_residual=hf.get('use_parallel_residual', True),
            tie_embeddings=hf.get('tie_word_embeddings', False), gelu=act)
    if mt == 'gpt2':
        for key in ('scale_attn_by_inverse_layer_idx', 'add_cross_attention'):
            if hf.get(key):
                raise ValueError(f"{source}: GPT-2 option {key}=True is not supported")
        for key in ('scale_attn_weights', 'tie_word_embeddings'):
            if not hf.get(key, True):
                raise ValueError(f"{source}: GPT-2 option {key}=False is not supported")
        act = {'gelu': 'erf', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}.get(
            hf.get('activation_function', 'gelu_new'))
        if act is None:
            raise ValueError(f"{source}: activation_function={hf['activation_function']!r} is not supported")
        n_embd = hf['n_embd']
        return GPTConfig(
            arch='gpt2', n_layer=hf['n_layer'], n_head=hf['n_head'], n_embd=n_embd,
            mlp_width=hf.get('n_inner') or 4 * n_embd, vocab_size=hf['vocab_size'],
            block_size=hf.get('n_positions', 1024), layer_norm_eps=hf.get('layer_norm_epsilon', 1e-5),
            tie_embeddings=hf.get('tie_word_embeddings', True), gelu=act)
    raise ValueError(f"{source}: model_type {mt!r} is not supported; this codebase loads 'gpt_neox' "
                     f"(Pythia) and 'gpt2' models")


def config_to_hf(c, dtype=torch.float32):
    dt = str(dtype).removeprefix('torch.')
    if c.byte_pool:
        from dataclasses import asdict
        return dict(model_type=BYTE_MODEL_TYPE, architectures=['GPT'], gpt_config=asdict(c), torch_dtype=dt,
                    note="a byte-level model (byte_pool.py) of the growing-sparse codebase: transformers has no class "
                         "for it; load it with hf_io.load_model or GPT.from_pretrained")
    if c.arch == 'gpt_neox':
        return dict(
            architectures=['GPTNeoXForCausalLM'], model_type='gpt_neox', num_hidden_layers=c.n_layer,
            num_attention_heads=c.n_head, hidden_size=c.n_embd, intermediate_size=c.mlp_width,
            vocab_size=c.vocab_size, max_position_embeddings=c.block_size, layer_norm_eps=c.layer_norm_eps,
            # both spellings: transformers >= 5 reads rope_parameters, older versions the flat keys
            rotary_pct=c.rotary_pct, rotary_emb_base=c.rotary_base,
            rope_parameters=dict(rope_type='default', rope_theta=c.rotary_base, partial_rotary_factor=c.rotary_pct),
            use_parallel_residual=c.parallel_residual, tie_word_embeddings=c.tie_embeddings,
            hidden_act='gelu' if c.gelu == 'erf' else 'gelu_new', attention_bias=True,
            hidden_dropout=c.dropout, attention_dropout=c.dropout, bos_token_id=0, eos_token_id=0,
            torch_dtype=dt, dtype=dt)
    if c.parallel_residual or not c.tie_embeddings:
        raise ValueError("transformers' GPT-2 has a sequential residual and tied embeddings; this config has "
                         "parallel_residual or an untied head, so it cannot be saved as gpt2")
    return dict(
        architectures=['GPT2LMHeadModel'], model_type='gpt2', n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
        n_inner=c.mlp_width, vocab_size=c.vocab_size, n_positions=c.block_size, n_ctx=c.block_size,
        layer_norm_epsilon=c.layer_norm_eps, activation_function='gelu_new' if c.gelu == 'tanh' else 'gelu',
        tie_word_embeddings=True, resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
        torch_dtype=dt, dtype=dt, **({'bos_token_id': 50256, 'eos_token_id': 50256} if c.vocab_size > 50256 else {}))


# name maps between our modules and HF's; per block, ours -> theirs
_NEOX_BLOCK = {'ln_1': 'input_layernorm', 'ln_2': 'post_attention_layernorm', 'attn.c_attn': 'attention.query_key_value',
               'attn.c_proj': 'attention.dense', 'mlp.c_fc': 'mlp.dense_h_to_4h', 'mlp.c_proj': 'mlp.dense_4h_to_h'}
_NEOX_TOP = {'transformer.wte.weight': 'gpt_neox.embed_in.weight', 'transformer.ln_f.weight': 'gpt_neox.final_layer_norm.weight',
             'transformer.ln_f.bias': 'gpt_neox.final_layer_norm.bias', 'lm_head.weight': 'embed_out.weight'}
_GPT2_TOP = {'transformer.wte.weight': 'transformer.wte.weight', 'transformer.wpe.weight': 'transformer.wpe.weight',
             'transformer.ln_f.weight': 'transformer.ln_f.weight', 'transformer.ln_f.bias': 'transformer.ln_f.bias'}
_GPT2_CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')


def _name_map(c):
    """ours -> HF for every tensor in the model."""
    m = dict(_NEOX_TOP) if c.arch == 'gpt_neox' else dict(_GPT2_TOP)
    for i in range(c.n_layer):
        for ours, theirs in _NEOX_BLOCK.items():
            for s in ('weight', 'bias'):
                m[f'transformer.h.{i}.{ours}.{s}'] = (f'gpt_neox.layers.{i}.{theirs}.{s}' if c.arch == 'gpt_neox'
                                                      else f'transformer.h.{i}.{ours}.{s}')
    if c.tie_embeddings:
        m.pop('lm_head.weight', None)
    return m


def _gpt2_qkv_perm(c, device=None):
    """Row order taking GPT-2's [all q | all k | all v] to our per-head [q_h k_h v_h] layout."""
    h, hs, C = torch.arange(c.n_head), torch.arange(c.head_size), c.n_embd
    part = torch.arange(3)
    # our row (head, part, j) comes from GPT-2 row part*C + head*hs + j
    return (part[None, :, None] * C + h[:, None, None] * c.head_size + hs[None, None, :]).reshape(-1)


def hf_to_state_dict(hf_sd, c):
    if c.byte_pool:  # our own names
        return dict(hf_sd)
    if c.arch == 'gpt2':  # bare GPT2Model checkpoints (the hub's 'gpt2') have no 'transformer.' prefix
        if not any(k.startswith('transformer.') for k in hf_sd):
            hf_sd = {('transformer.' + k if not k.startswith('lm_head') else k): v for k, v in hf_sd.items()}
    out = {}
    for ours, theirs in _name_map(c).items():
        if theirs not in hf_sd:
            continue
        v = hf_sd[theirs]
        if c.arch == 'gpt2' and ours.endswith(_GPT2_CONV1D):
            v = v.t()
        if c.arch == 'gpt2' and 'c_attn' in ours:
            v = v[_gpt2_qkv_perm(c)]
        out[ours] = v
    return out


def state_dict_to_hf(sd, c):
    if c.byte_pool:
        return dict(sd)
    out = {}
    inv = torch.argsort(_gpt2_qkv_perm(c)) if c.arch == 'gpt2' else None
    for ours, theirs in _name_map(c).items():
        v = sd[ours]
        if c.arch == 'gpt2' and 'c_attn' in ours:
            v = v[inv]
        if c.arch == 'gpt2' and ours.endswith(_GPT2_CONV1D):
            v = v.t()
        out[theirs] = v
    return out
