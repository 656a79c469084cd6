"""
One GPT for both families the field grows from:
- Pythia / GPT-NeoX (arch='gpt_neox'): rotary positions on the first rotary_pct of each head,
  parallel residual x + attn(ln_1(x)) + mlp(ln_2(x)), exact GELU, untied head.
- GPT-2 (arch='gpt2'): learned positions, sequential pre-LN residual, tanh GELU, tied head.
Shapes are explicit so that expanded models (more heads of the same size, any MLP width) fit.
Hugging Face directories are the interchange format: from_pretrained / save_pretrained.
"""
import json
import math
import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    arch: str = 'gpt_neox'              # 'gpt_neox' or 'gpt2'; None fields below take this family's value
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    head_size: int = None               # n_embd // n_head; stays fixed when a model is widened
    mlp_width: int = None               # 4 * n_embd
    vocab_size: int = 50304
    block_size: int = 2048
    layer_norm_eps: float = 1e-5
    rotary_pct: float = None            # gpt_neox: 0.25 (Pythia); gpt2: 0.0 (learned positions instead)
    rotary_base: float = 10000.0
    parallel_residual: bool = None      # gpt_neox: True; gpt2: False
    tie_embeddings: bool = None         # gpt_neox: False; gpt2: True
    gelu: str = None                    # 'erf' (gpt_neox) or 'tanh' (gpt2)
    dropout: float = 0.0

    def __post_init__(self):
        family = {'gpt_neox': dict(rotary_pct=0.25, parallel_residual=True, tie_embeddings=False, gelu='erf'),
                  'gpt2': dict(rotary_pct=0.0, parallel_residual=False, tie_embeddings=True, gelu='tanh')}
        if self.arch not in family:
            raise ValueError(f"unknown arch {self.arch!r}: use 'gpt_neox' (Pythia) or 'gpt2'")
        for k, v in family[self.arch].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.head_size is None:
            if self.n_embd % self.n_head:
                raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}: "
                                 f"choose a head count that divides the width")
            self.head_size = self.n_embd // self.n_head
        if self.n_head * self.head_size != self.n_embd:
            # Hugging Face's GPT-NeoX and GPT-2 both derive head size as hidden/heads
            raise ValueError(f"n_head*head_size = {self.n_head}*{self.head_size} != n_embd={self.n_embd}")
        if self.mlp_width is None:
            self.mlp_width = 4 * self.n_embd
        if self.gelu not in ('erf', 'tanh'):
            raise ValueError(f"gelu={self.gelu!r}: use 'erf' or 'tanh'")
        if not 0.0 <= self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct={self.rotary_pct} must lie in [0, 1]")
        if self.arch == 'gpt_neox' and self.rotary_ndims == 0:
            raise ValueError("gpt_neox needs rotary_pct > 0 (it has no learned positions)")
        if self.arch == 'gpt2' and self.rotary_pct != 0:
            raise ValueError("gpt2 uses learned positions: rotary_pct must be 0")

    @property
    def rotary_ndims(self):
        return int(self.head_size * self.rotary_pct)


# Pythia shapes from the model cards / HF configs; GPT-2 from OpenAI's release.
# GPT-2's vocabulary (50257) is padded to 50304 for scratch training, a multiple of 64 as Pythia's is.
PRESETS = {
    'pythia-14m':   dict(n_layer=6,  n_head=4,  n_embd=128),
    'pythia-31m':   dict(n_layer=6,  n_head=8,  n_embd=256),
    'pythia-70m':   dict(n_layer=6,  n_head=8,  n_embd=512),
    'pythia-160m':  dict(n_layer=12, n_head=12, n_embd=768),
    'pythia-410m':  dict(n_layer=24, n_head=16, n_embd=1024),
    'pythia-1b':    dict(n_layer=16, n_head=8,  n_embd=2048),
    'pythia-1.4b':  dict(n_layer=24, n_head=16, n_embd=2048),
    'pythia-2.8b':  dict(n_layer=32, n_head=32, n_embd=2560),
    'pythia-6.9b':  dict(n_layer=32, n_head=32, n_embd=4096, vocab_size=50432),
    'pythia-12b':   dict(n_layer=36, n_head=40, n_embd=5120, vocab_size=50688),
    'gpt2':         dict(arch='gpt2', n_layer=12, n_head=12, n_embd=768, block_size=1024),
    'gpt2-medium':  dict(arch='gpt2', n_layer=24, n_head=16, n_embd=1024, block_size=1024),
    'gpt2-large':   dict(arch='gpt2', n_layer=36, n_head=20, n_embd=1280, block_size=1024),
    'gpt2-xl':      dict(arch='gpt2', n_layer=48, n_head=25, n_embd=1600, block_size=1024),
}


def preset_config(name, **overrides):
    key = name.split('/')[-1].removesuffix('-deduped')
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[key], **overrides})


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.head_size, self.rotary_ndims = config.n_head, config.head_size, config.rotary_ndims
        # fused QKV laid out head by head, [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], as GPT-NeoX stores it:
        # adding a head is appending 3*head_size rows, which is what width expansion does
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x, cos, sin, kv_cache=None, layer=0):
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, self.n_head, 3 * self.head_size).transpose(1, 2)
        q, k, v = qkv.split(self.head_size, dim=-1)  # (B, nh, T, hs)
        if self.rotary_ndims:
            r = self.rotary_ndims
            cos, sin = cos.to(q.dtype), sin.to(q.dtype)
            q = torch.cat((q[..., :r] * cos + rotate_half(q[..., :r]) * sin, q[..., r:]), dim=-1)
            k = torch.cat((k[..., :r] * cos + rotate_half(k[..., :r]) * sin, k[..., r:]), dim=-1)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        # query t sits at position S-T+t and sees keys [0, S-T+t]. is_causal aligns the mask top-left, exact only
        # when S == T; a chunk appended to a cache (1 < T < S) needs the bottom-right aligned mask spelled out
        S = k.size(2)
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T) if 1 < T < S else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=T == S > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd)
        self.approximate = 'tanh' if config.gelu == 'tanh' else 'none'

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.mlp = MLP(config)
        self.parallel_residual = config.parallel_residual
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, kv_cache=None, layer=0):
        a = self.drop(self.attn(self.ln_1(x), cos, sin, kv_cache, layer))
        if self.parallel_residual:
            return x + a + self.drop(self.mlp(self.ln_2(x)))
        x = x + a
        return x + self.drop(self.mlp(self.ln_2(x)))


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated to block_size."""
    def __init__(self, config, batch_size, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # tokens cached; advanced by GPT.forward once every layer has written

    def update(self, layer, k, v):
        T = k.size(2)
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps),
        ))
        if config.arch == 'gpt2':
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        if config.rotary_ndims:
            r = config.rotary_ndims
            inv_freq = 1.0 / (config.rotary_base ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
            freqs = torch.outer(torch.arange(config.block_size, dtype=torch.float64), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)  # NeoX rotate-half pairs dim i with dim i + r/2
            self.register_buffer('rope_cos', emb.cos().float(), persistent=False)
            self.register_buffer('rope_sin', emb.sin().float(), persistent=False)
        self.apply(self._init_weights)
        # residual-output projections get a depth-scaled init so the residual stream's variance
        # does not grow with n_layer (GPT-2: 0.02/sqrt(2L); GPT-NeoX "wang_init": 2/(L*sqrt(d)))
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                std = (0.02 / math.sqrt(2 * config.n_layer) if config.arch == 'gpt2'
                       else 2 / (config.n_layer * math.sqrt(config.n_embd)))
                nn.init.normal_(p, mean=0.0, std=std)

    def _init_weights(self, module):
        # GPT-NeoX "small_init": sqrt(2/(5d)) (Nguyen & Salazar 2019); GPT-2: 0.02
        std = 0.02 if self.config.arch == 'gpt2' else math.sqrt(2 / (5 * self.config.n_embd))
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, kv_cache=None):
        B, T = idx.shape
        pos0 = kv_cache.pos if kv_cache is not None else 0
        if pos0 + T > self.config.block_size:
            raise ValueError(f"sequence of {pos0 + T} tokens exceeds block_size={self.config.block_size}")
        x = self.transformer.wte(idx)
        cos = sin = None
        if self.config.arch == 'gpt2':
            x = x + self.transformer.wpe(torch.arange(pos0, pos0 + T, device=idx.device))
        if self.config.rotary_ndims:
            cos, sin = self.rope_cos[pos0:pos0 + T], self.rope_sin[pos0:pos0 + T]
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, kv_cache, i)
        if kv_cache is not None:
            kv_cache.pos += T
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ---------------------------------------------------------------- parameter counts
    def linear_weights(self, include_head=True):
        """The weights sparsity is measured against: every linear in the blocks, plus the untied head."""
        out = {n: p for n, p in self.named_parameters() if n.startswith('transformer.h.') and n.endswith('weight')
               and p.dim() == 2}
        if include_head and not self.config.tie_embeddings:
            out['lm_head.weight'] = self.lm_head.weight
        return out

    def param_counts(self):
        params = dict(self.named_parameters())  # tied weights appear once
        total = sum(p.numel() for p in params.values())
        embedding = sum(p.numel() for n, p in params.items() if n.split('.')[-2] in ('wte', 'wpe', 'lm_head'))
        return dict(total=total, non_embedding=total - embedding,
                    linear=sum(p.numel() for p in self.linear_weights().values()))

    # ---------------------------------------------------------------- optimizer and MFU
    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # decay matrices (linears, embeddings), never biases or LayerNorm gains
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

    def flops_per_token(self, T):
        """Training FLOPs per token: 6 per weight used in a matmul plus attention's QK^T and AV (PaLM App. B)."""
        c = self.config
        matmul_params = self.param_counts()['non_embedding'] + c.vocab_size * c.n_embd
        return 6 * matmul_params + 12 * c.n_layer * c.n_embd * T

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 generator=None, vocab_size=None):
        """Sample continuations. With the cache, each step feeds one token; once the context outgrows
        block_size the window slides, every position shifts, and the window is re-encoded each step.
        vocab_size: sample only ids below it (a vocabulary padded past the tokenizer's has ids no text decodes to)."""
        kv_cache = None
        for _ in range(max_new_tokens):
            window = idx[:, -self.config.block_size:]
            if use_cache and idx.size(1) <= self.config.block_size:
                if kv_cache is None:
                    p = next(self.parameters())
                    kv_cache = KVCache(self.config, idx.size(0), p.device, p.dtype)
                    logits, _ = self(window, kv_cache=kv_cache)
                else:
                    logits, _ = self(idx[:, -1:], kv_cache=kv_cache)
            else:
                logits, _ = self(window)
            logits = logits[:, -1, :]
            if vocab_size is not None and vocab_size < logits.size(-1):
                logits = logits.clone()
                logits[:, vocab_size:] = -float('inf')
            idx_next = sample_next(logits, temperature, top_k, top_p, generator)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    # ---------------------------------------------------------------- Hugging Face interop
    @classmethod
    def from_pretrained(cls, name_or_path, dtype=torch.float32):
        """A local HF directory (config.json + *.safetensors or pytorch_model.bin) or a hub id."""
        path = resolve_model_dir(name_or_path)
        hf = read_config_json(path)
        config = config_from_hf(hf, source=os.path.join(path, 'config.json'))
        model = cls(config)
        sd = hf_to_state_dict(load_hf_weights(path), config)
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
        return model.to(dtype)

    def save_pretrained(self, out_dir, extra_meta=None, copy_files=(), replace=False):
        """Write config.json + model.safetensors that transformers.AutoModelForCausalLM loads, plus copy_files (e.g.
        a tokenizer). Everything is built in a temporary directory beside out_dir and renamed into place, so a crash
        never leaves a half-written model directory: a new (or empty) out_dir appears whole; an existing one has its
        files replaced one by one, config.json last, or (replace=True) is swapped for the new one entirely."""
        from safetensors.torch import save_file
        out_dir = os.path.abspath(out_dir)
        tmp = os.path.join(os.path.dirname(out_dir), f'.{os.path.basename(out_dir)}.tmp{os.getpid()}')
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            sd = state_dict_to_hf(self.state_dict(), self.config)
            save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, os.path.join(tmp, 'model.safetensors'),
                      metadata={'format': 'pt'})
            for f in copy_files:
                shutil.copy(f, tmp)
            hf = config_to_hf(self.config, dtype=next(self.parameters()).dtype)
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


# dense bf16 tensor-core peaks (FLOP/s) from NVIDIA's datasheets, most specific name first: the PCIe and NVL H100s
# run at lower clocks and power than the SXM part
PEAK_FLOPS = (('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H200 NVL', 835e12), ('GH200', 989e12),
              ('H100', 989e12), ('H200', 989e12), ('A100', 312e12), ('L40S', 362e12))


def peak_flops(device):
    """Dense bf16 tensor-core peak of the GPU, for MFU; None on CPU or an unknown GPU."""
    if torch.device(device).type != 'cuda':
        return None
    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(name):
    for key, flops in PEAK_FLOPS:
        if key.lower() in name.lower():
            return flops
    return None


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token per row from (B, V) logits; temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('inf')
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest prefix reaching top_p
        logits[drop.scatter(1, order, drop)] = -float('inf')
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def load_model(init_from):
    """(model, source) from anything a script's init_from may name: a train.py checkpoint (ckpt.pt, or the out_dir
    holding it), a Hugging Face model directory, or a hub id. source: path (the ckpt.pt or the model directory),
    checkpoint (train.py's whole checkpoint dict, or None for a directory), record (the directory's config.json
    'growing_sparse' provenance, {} if none)."""
    ckpt = init_from if os.path.isfile(init_from) else os.path.join(init_from, 'ckpt.pt')
    if os.path.isfile(ckpt):
        try:
            checkpoint = torch.load(ckpt, map_location='cpu', weights_only=True)
        except Exception as e:
            raise ValueError(f"{ckpt} is not a readable checkpoint (truncated or damaged: {type(e).__name__}): "
                             f"restore it, or point init_from at another one") from None
        try:
            model = GPT(GPTConfig(**checkpoint['model_args']))
            model.load_state_dict(checkpoint['model'])
        except Exception as e:
            raise ValueError(f"{ckpt} is not a checkpoint written by train.py, or its weights do not match its "
                             f"model_args ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
        return model, dict(path=ckpt, checkpoint=checkpoint, record={})
    path = resolve_model_dir(init_from)
    model = GPT.from_pretrained(path)
    record = read_config_json(path).get('growing_sparse') or {}
    return model, dict(path=path, checkpoint=None, record=record)


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
            ours = 'growing_sparse' in json.load(f)
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
