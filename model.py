"""
One GPT for both families the field grows from:
- Pythia / GPT-NeoX (arch='gpt_neox'): rotary positions on the first rotary_pct of each head,
  parallel residual x + attn(ln_1(x)) + mlp(ln_2(x)), exact GELU, untied head.
- GPT-2 (arch='gpt2'): learned positions, sequential pre-LN residual, tanh GELU, tied head.
Shapes are explicit so that expanded models (more heads of the same size, any MLP width) fit.
byte_pool=True replaces the token embedding and the LM head with byte_pool.py's small byte transformers.
Hugging Face directories are the interchange format: hf_io.py converts, loads and saves them
(GPT.from_pretrained / save_pretrained are its shortcuts).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from byte_pool import PAD, ByteDecoder, ByteEncoder, decoder_targets, wide
from byte_pool import flops_per_token as byte_flops_per_token

DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


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
    byte_pool: bool = False             # byte_pool.py's encoder and decoder instead of the embedding and head
    byte_embd: int = 64                 # their width
    byte_head: int = 4
    byte_layer: int = 2                 # layers of each
    byte_block: int = 16                # bytes per token; longer tokens keep their first byte_block
    byte_decoder: str = 'causal'        # 'causal' (byte by byte) or 'parallel'

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
        if self.byte_pool:
            self.tie_embeddings = False  # no embedding and no head to tie
            if self.byte_embd % self.byte_head:
                raise ValueError(f"byte_embd={self.byte_embd} is not a multiple of byte_head={self.byte_head}")
            if self.byte_decoder not in ('causal', 'parallel'):
                raise ValueError(f"byte_decoder={self.byte_decoder!r}: use 'causal' or 'parallel'")

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
        # registration order is initialisation order (the RNG draws) and AdamW's state order: wte stays first
        self.transformer = nn.ModuleDict(dict(
            **({} if config.byte_pool else dict(wte=nn.Embedding(config.vocab_size, config.n_embd))),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps),
        ))
        if config.arch == 'gpt2':
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        if config.byte_pool:
            self.byte_encoder, self.byte_decoder = ByteEncoder(config), ByteDecoder(config)
            # each id's bytes (byte_pool.byte_table, set from the dataset's tokenizer): part of the model's meaning.
            # int32: collectives (DDP's buffer broadcast) take no int16
            self.register_buffer('byte_table', torch.full((config.vocab_size, config.byte_block), PAD,
                                                          dtype=torch.int32))
        else:
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

    def forward(self, idx, targets=None, kv_cache=None, reduction='mean'):
        """idx: (B, T) token ids, or for byte_pool also (B, T, byte_block) bytes (sampled tokens need not be in the
        vocabulary). Returns (logits, loss); byte_pool: (ln_f's output, mean loss per target byte).
        reduction='none': the loss of each token, (B, T) (byte_pool: summed over its bytes)."""
        B, T = idx.shape[:2]
        pos0 = kv_cache.pos if kv_cache is not None else 0
        if pos0 + T > self.config.block_size:
            raise ValueError(f"sequence of {pos0 + T} tokens exceeds block_size={self.config.block_size}")
        if self.config.byte_pool:  # the residual stream in float32 under autocast, as an embedding's output is
            x = wide(self.encode_bytes(idx))
        else:
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
        h = self.transformer.ln_f(x)
        if self.config.byte_pool:
            if targets is None:
                return h, None
            loss = self.byte_decoder.loss(h.flatten(0, 1), self.byte_targets(targets), reduction)
            return h, loss if reduction == 'mean' else loss.view(B, T)
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1,
                                   reduction=reduction)
            loss = loss if reduction == 'mean' else loss.view(B, T)
        return logits, loss

    def encode_bytes(self, idx):
        """byte_pool: the core's input vectors of ids (B, T), or of bytes (B, T, byte_block)."""
        if idx.dim() == 3:
            return self.byte_encoder(idx)
        # a token's vector is a function of its id alone, and a batch repeats ids (8,192 enwiki tokens hold about
        # 2,700 distinct ones), so eager runs encode each distinct id once. Compiled, every position: a size that
        # depends on the data splits the graph and syncs the host (4x slower on an H200, results/bytes_h200_456777c/)
        if torch.compiler.is_compiling():
            return self.byte_encoder(self.byte_table[idx])
        ids, where = torch.unique(idx, return_inverse=True)
        return F.embedding(where, self.byte_encoder(self.byte_table[ids]))

    def byte_targets(self, targets):
        return decoder_targets(self.byte_table[targets.reshape(-1)])

    def loss_units(self, targets):
        """What the mean loss averages over: tokens, or (byte_pool) target bytes including each end-of-token."""
        if not self.config.byte_pool:
            return targets.numel()
        return int((self.byte_table[targets] != PAD).sum()) + targets.numel()

    @torch.no_grad()
    def token_logprobs(self, idx, targets):
        """log p(targets[:, t] | idx[:, :t+1]) and whether greedy decoding gives exactly that token, both (B, T)
        (byte_pool: the token's bytes and its end-of-token symbol, each the argmax)."""
        out, _ = self(idx)
        if self.config.byte_pool:
            lp, greedy = self.byte_decoder.logprobs(out.flatten(0, 1), self.byte_targets(targets))
            return lp.sum(-1).view(targets.shape), greedy.all(-1).view(targets.shape)
        logp = F.log_softmax(out.float(), dim=-1)
        return logp.gather(-1, targets[..., None]).squeeze(-1), logp.argmax(-1) == targets

    # ---------------------------------------------------------------- parameter counts
    def linear_weights(self, include_head=True):
        """The weights sparsity is measured against: every linear in the blocks, plus the untied head."""
        out = {n: p for n, p in self.named_parameters() if n.startswith('transformer.h.') and n.endswith('weight')
               and p.dim() == 2}
        if include_head and self.config.byte_pool:  # the byte modules' linears count as the head (not embeddings)
            out.update({n: p for n, p in self.named_parameters() if n.startswith('byte_') and p.dim() == 2
                        and n.split('.')[-2] not in ('wbe', 'wpe')})
        elif include_head and not self.config.tie_embeddings:
            out['lm_head.weight'] = self.lm_head.weight
        return out

    def param_counts(self):
        params = dict(self.named_parameters())  # tied weights appear once
        total = sum(p.numel() for p in params.values())
        embedding = sum(p.numel() for n, p in params.items()
                        if n.split('.')[-2] in ('wte', 'wpe', 'lm_head') or n.startswith('byte_'))
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
        core = 6 * self.param_counts()['non_embedding'] + 12 * c.n_layer * c.n_embd * T
        if not c.byte_pool:
            return core + 6 * c.vocab_size * c.n_embd
        return core + byte_flops_per_token(c)

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 generator=None, vocab_size=None):
        """Sample continuations. With the cache, each step feeds one token; once the context outgrows
        block_size the window slides, every position shifts, and the window is re-encoded each step.
        vocab_size: sample only ids below it (a vocabulary padded past the tokenizer's has ids no text decodes to)."""
        kv_cache = None
        sample = lambda logits: sample_next(logits, temperature, top_k, top_p, generator)  # noqa: E731
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
            if self.config.byte_pool:  # idx: bytes (B, T, byte_block); a new token's bytes, sampled one by one
                idx_next = self.byte_decoder.sample(logits, sample, self.config.byte_block)[:, None]
            else:
                if vocab_size is not None and vocab_size < logits.size(-1):
                    logits = logits.clone()
                    logits[:, vocab_size:] = -float('inf')
                idx_next = sample(logits)
            idx = torch.cat((idx, idx_next.to(idx.dtype)), dim=1)
        return idx

    # ---------------------------------------------------------------- Hugging Face format (hf_io.py)
    @classmethod
    def from_pretrained(cls, name_or_path, dtype=None):
        """A Hugging Face directory or hub id, with weights exactly in dtype (None: the file's); see hf_io.py."""
        from hf_io import from_pretrained
        return from_pretrained(name_or_path, dtype)

    def save_pretrained(self, out_dir, extra_meta=None, tokenizer=None, replace=False):
        """A directory transformers loads (and a tokenizer for AutoTokenizer); see hf_io.save_pretrained."""
        from hf_io import save_pretrained
        save_pretrained(self, out_dir, extra_meta, tokenizer, replace)


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
