"""One GPT for both families the field grows from: Pythia / GPT-NeoX (rotary positions on the first rotary_pct of each
head, parallel residual x + attn(ln_1(x)) + mlp(ln_2(x)), exact GELU, untied head) and GPT-2 (learned positions,
sequential pre-LN residual, tanh GELU, tied head), with explicit shapes so that expanded models fit. byte_pool=True
replaces the embedding and the head with byte_pool.py's byte transformers. hf_io.py reads and writes HF directories."""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from byte_pool import PAD, ByteDecoder, ByteEncoder, decoder_targets, flops_per_token as byte_flops, wide

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
            setattr(self, k, v if getattr(self, k) is None else getattr(self, k))
        self.head_size = self.n_embd // self.n_head if self.head_size is None else self.head_size
        self.mlp_width = 4 * self.n_embd if self.mlp_width is None else self.mlp_width
        r, pct = self.rotary_ndims, f"rotary_pct={self.rotary_pct}"
        for bad, why in (  # transformers derives the head size as hidden / heads; rotate-half pairs dims i, i + r/2
                (self.n_head * self.head_size != self.n_embd,
                 f"n_embd={self.n_embd} is not n_head={self.n_head} heads of head_size={self.head_size}"),
                (self.gelu not in ('erf', 'tanh'), f"gelu={self.gelu!r}: use 'erf' or 'tanh'"),
                (not 0 <= self.rotary_pct <= 1, f"{pct} must lie in [0, 1]"),
                (r % 2, f"{pct} gives {r} rotary dims of head_size={self.head_size}: an odd number"),
                ((r == 0) != (self.arch == 'gpt2'), f"{pct}: gpt_neox needs rotary dims, gpt2 (learned ones) none"),
                (self.byte_pool and self.byte_embd % self.byte_head, "byte_embd is not a multiple of byte_head"),
                (self.byte_decoder not in ('causal', 'parallel'), "byte_decoder: use 'causal' or 'parallel'")):
            if bad:
                raise ValueError(why)
        self.tie_embeddings = self.tie_embeddings and not self.byte_pool  # no embedding and no head to tie

    @property
    def rotary_ndims(self):
        return int(self.head_size * self.rotary_pct)


# Pythia's shapes from the model cards / HF configs, GPT-2's from OpenAI's release. GPT-2's vocabulary (50257) is
# padded to 50304 for scratch training, a multiple of 64 as Pythia's is.
PRESETS = {f'pythia-{size}': dict(n_layer=L, n_head=H, n_embd=D) for size, L, H, D in (
    ('14m', 6, 4, 128), ('31m', 6, 8, 256), ('70m', 6, 8, 512), ('160m', 12, 12, 768), ('410m', 24, 16, 1024),
    ('1b', 16, 8, 2048), ('1.4b', 24, 16, 2048), ('2.8b', 32, 32, 2560), ('6.9b', 32, 32, 4096), ('12b', 36, 40, 5120))}
PRESETS['pythia-6.9b']['vocab_size'], PRESETS['pythia-12b']['vocab_size'] = 50432, 50688
PRESETS.update({name: dict(arch='gpt2', n_layer=L, n_head=H, n_embd=D, block_size=1024) for name, L, H, D in (
    ('gpt2', 12, 12, 768), ('gpt2-medium', 24, 16, 1024), ('gpt2-large', 36, 20, 1280), ('gpt2-xl', 48, 25, 1600))})


def preset_config(name, **overrides):
    key = name.split('/')[-1].removesuffix('-deduped')
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[key], **overrides})


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.head_size, self.dropout = config.n_head, config.head_size, config.dropout
        self.rotary_ndims = config.rotary_ndims
        # fused QKV laid out head by head, [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], as GPT-NeoX stores it:
        # adding a head is appending 3*head_size rows, which is what width expansion does
        self.c_attn, self.c_proj = nn.Linear(config.n_embd, 3 * config.n_embd), nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, cos, sin, kv_cache=None, layer=0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, self.n_head, 3 * self.head_size).transpose(1, 2).split(self.head_size, -1)
        if self.rotary_ndims:  # NeoX's rotate-half: dim i turns with dim i + r/2, both at the frequency of i
            r, cos, sin = self.rotary_ndims, cos.to(q.dtype), sin.to(q.dtype)
            rot = lambda x: torch.cat((-x[..., r // 2:r], x[..., :r // 2]), dim=-1)
            q, k = (torch.cat((x[..., :r] * cos + rot(x) * sin, x[..., r:]), dim=-1) for x in (q, k))
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        # query t sits at position S-T+t and sees keys [0, S-T+t]. is_causal aligns the mask top-left, exact only
        # when S == T; a chunk appended to a cache (1 < T < S) needs the bottom-right aligned mask spelled out. Without
        # a cache S == T always: no comparison of sizes, which compiled with dynamic shapes would not be a bool
        S = k.size(2)
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T) if kv_cache and 1 < T < S else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not kv_cache or T == S,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(config.n_embd, config.mlp_width), nn.Linear(config.mlp_width, config.n_embd)
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
        self.parallel_residual, self.drop = config.parallel_residual, nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, kv_cache=None, layer=0):
        a = self.drop(self.attn(self.ln_1(x), cos, sin, kv_cache, layer))
        if self.parallel_residual:
            return x + a + self.drop(self.mlp(self.ln_2(x)))
        x = x + a
        return x + self.drop(self.mlp(self.ln_2(x)))


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated to block_size."""
    def __init__(self, config, batch_size, device, dtype):
        shape = (config.n_layer, 2, batch_size, config.n_head, config.block_size, config.head_size)
        self.kv, self.pos = torch.zeros(shape, device=device, dtype=dtype), 0  # pos: advanced by GPT.forward

    def update(self, layer, k, v):
        end = self.pos + k.size(2)
        self.kv[layer, :, :, :, self.pos:end] = torch.stack((k, v))
        return self.kv[layer, :, :, :, :end].unbind(0)


def head_pass(h, w, targets, dtype, chunk, scale=None):
    """Cross-entropy of each row of logits h @ w.T (0 where targets is -1), chunk rows at a time; with scale (N,), also
    the gradients in h and w of sum_i scale_i * loss_i: d loss_i / d logits_i = softmax_i - onehot(targets_i)."""
    wd, losses, grad_h = w.to(dtype), [], []
    grad_w = None if scale is None else torch.zeros_like(w, dtype=torch.promote_types(w.dtype, torch.float32))
    for i in range(0, h.size(0), chunk):
        hc, t = h[i:i + chunk].to(dtype), targets[i:i + chunk, None].clamp(min=0)
        logits = wide(hc @ wd.t())
        lse = logits.logsumexp(-1, keepdim=True)
        losses.append((lse - logits.gather(1, t)).squeeze(1))
        if scale is not None:  # in place: one chunk's float32 logits are the peak memory
            g = logits.sub_(lse).exp_().scatter_add_(1, t, torch.full_like(lse, -1.0)).mul_(scale[i:i + chunk, None])
            g = g.to(dtype)
            grad_h.append(g @ wd)
            grad_w += g.t() @ hc
    losses = torch.where(targets >= 0, torch.cat(losses), 0.0)
    return (losses, None, None) if scale is None else (losses, torch.cat(grad_h).to(h.dtype), grad_w.to(w.dtype))


class HeadLoss(torch.autograd.Function):
    """F.cross_entropy(h @ w.T, targets, ignore_index=-1) holding one chunk's logits, not several (N, vocab) float32
    copies. A mean's gradient is known up to the scalar backward receives: forward forms it (ahead) from the logits it
    has; reduction='none' with gradients recomputes each chunk's logits in backward instead."""
    @staticmethod
    def forward(ctx, h, w, targets, dtype, chunk, mean, ahead):
        valid = targets >= 0
        scale = valid.to(torch.promote_types(h.dtype, torch.float32)) / valid.sum() if ahead else None
        out = head_pass(h, w, targets, dtype, chunk, scale)
        ctx.dtype, ctx.chunk, ctx.ahead = dtype, chunk, ahead
        ctx.save_for_backward(*(out[1:] if ahead else (h, w, targets)))
        return out[0].sum() / valid.sum() if mean else out[0]

    @staticmethod
    def backward(ctx, grad):
        if ctx.ahead:  # forward's gradients of the mean, scaled by the chain rule
            return *(g * grad for g in ctx.saved_tensors), None, None, None, None, None
        h, w, targets = ctx.saved_tensors
        return *head_pass(h, w, targets, ctx.dtype, ctx.chunk, grad * (targets >= 0))[1:], None, None, None, None, None


def chunked_cross_entropy(h, w, targets, reduction='mean', chunk=8192):
    """F.cross_entropy(float32 logits h @ w.T, targets, ignore_index=-1, reduction 'mean' | 'none'), chunk rows at a
    time: the matmul in the autocast dtype when autocast is on (as nn.Linear's), the softmax in at least float32."""
    dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
    ahead = reduction == 'mean' and torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)
    return HeadLoss.apply(h, w, targets, dtype, chunk, reduction == 'mean', ahead)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = c = config
        # registration order is initialisation order (the RNG draws) and AdamW's state order: wte stays first
        self.transformer = nn.ModuleDict(dict(
            **({} if c.byte_pool else dict(wte=nn.Embedding(c.vocab_size, c.n_embd))), drop=nn.Dropout(c.dropout),
            h=nn.ModuleList([Block(c) for _ in range(c.n_layer)]), ln_f=nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)))
        if c.arch == 'gpt2':
            self.transformer.wpe = nn.Embedding(c.block_size, c.n_embd)
        if c.byte_pool:  # the byte table spells each id (from the dataset's tokenizer): part of the model's meaning.
            self.byte_encoder, self.byte_decoder = ByteEncoder(c), ByteDecoder(c)  # int32: DDP broadcasts no int16
            self.register_buffer('byte_table', torch.full((c.vocab_size, c.byte_block), PAD, dtype=torch.int32))
        else:
            self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
            if c.tie_embeddings:
                self.lm_head.weight = self.transformer.wte.weight
        if r := c.rotary_ndims:
            inv_freq = 1.0 / (c.rotary_base ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
            freqs = torch.outer(torch.arange(c.block_size, dtype=torch.float64), inv_freq).repeat(1, 2)
            self.register_buffer('rope_cos', freqs.cos().float(), persistent=False)
            self.register_buffer('rope_sin', freqs.sin().float(), persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # residual-output projections scaled so that the residual stream's
            if name.endswith('c_proj.weight'):  # variance does not grow with depth (GPT-NeoX "wang_init")
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer) if c.arch == 'gpt2'
                                else 2 / (c.n_layer * math.sqrt(c.n_embd)))

    def _init_weights(self, m):  # GPT-NeoX "small_init" sqrt(2/(5d)) (Nguyen & Salazar 2019); GPT-2 0.02
        c = self.config
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02 if c.arch == 'gpt2' else math.sqrt(2 / (5 * c.n_embd)))
            if getattr(m, 'bias', None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets=None, kv_cache=None, reduction='mean'):
        """idx (B, T) ids, or (byte_pool) (B, T, byte_block) bytes -> (logits, None), or with targets (None, loss);
        byte_pool: ln_f's output for logits, the loss per byte. reduction='none': each token's loss, (B, T)."""
        (B, T), c = idx.shape[:2], self.config
        pos0 = kv_cache.pos if kv_cache is not None else 0
        if pos0 + T > c.block_size:
            raise ValueError(f"sequence of {pos0 + T} tokens exceeds block_size={c.block_size}")
        # byte_pool: the residual stream in float32 under autocast, as an embedding's output is
        x = (wide(self.byte_encoder(idx) if idx.dim() == 3 else self.byte_encoder.ids(self.byte_table, idx))
             if c.byte_pool else self.transformer.wte(idx))
        if c.arch == 'gpt2':
            x = x + self.transformer.wpe(torch.arange(pos0, pos0 + T, device=idx.device))
        cos, sin = (self.rope_cos[pos0:pos0 + T], self.rope_sin[pos0:pos0 + T]) if c.rotary_ndims else (None, None)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cos, sin, kv_cache, i)
        if kv_cache is not None:
            kv_cache.pos += T
        h = self.transformer.ln_f(x)
        if targets is None:
            return (h if c.byte_pool else self.lm_head(h)), None
        loss = (self.byte_decoder.loss(h.flatten(0, 1), self.byte_targets(targets), reduction) if c.byte_pool else
                chunked_cross_entropy(h.flatten(0, 1), self.lm_head.weight, targets.reshape(-1), reduction))
        return (h if c.byte_pool else None), loss if reduction == 'mean' else loss.view(B, T)

    byte_targets = lambda self, targets: decoder_targets(self.byte_table[targets.reshape(-1)])

    def loss_units(self, targets):
        """What the mean loss averages over: tokens, or (byte_pool) target bytes including each end-of-token."""
        return targets.numel() + (int((self.byte_table[targets] != PAD).sum()) if self.config.byte_pool else 0)

    @torch.no_grad()
    def token_logprobs(self, idx, targets):
        """log p(targets[:, t] | idx[:, :t+1]) and whether greedy decoding gives it (byte_pool: each byte), (B, T)."""
        out, _ = self(idx)
        if self.config.byte_pool:
            lp, greedy = self.byte_decoder.logprobs(out.flatten(0, 1), self.byte_targets(targets))
            return lp.sum(-1).view(targets.shape), greedy.all(-1).view(targets.shape)
        logp = F.log_softmax(out.float(), dim=-1)
        return logp.gather(-1, targets[..., None]).squeeze(-1), logp.argmax(-1) == targets

    def linear_weights(self, include_head=True):
        """What sparsity is measured against: the blocks' linears and the untied head (byte_pool: the byte linears)."""
        head = lambda n: (n.startswith('byte_') and n.split('.')[-2] not in ('wbe', 'wpe') if self.config.byte_pool
                          else n == 'lm_head.weight')  # a tied head is named transformer.wte.weight
        return {n: p for n, p in self.named_parameters() if p.dim() == 2 and (
            (n.startswith('transformer.h.') and n.endswith('weight')) or (include_head and head(n)))}

    def param_counts(self):
        count = lambda names: sum(p.numel() for n, p in self.named_parameters() if n.startswith(names))  # tied: once
        return dict(total=count(''), non_embedding=count(('transformer.h.', 'transformer.ln_f.')),
                    linear=sum(p.numel() for p in self.linear_weights().values()))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        params = [p for p in self.parameters() if p.requires_grad]  # decay matrices, never biases or LayerNorm gains
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

    def flops_per_token(self, T):
        """Training FLOPs per token: 6 per weight used in a matmul plus attention's QK^T and AV (PaLM App. B)."""
        c = self.config
        core = 6 * self.param_counts()['non_embedding'] + 12 * c.n_layer * c.n_embd * T
        return core + (byte_flops(c) if c.byte_pool else 6 * c.vocab_size * c.n_embd)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 generator=None, vocab_size=None):
        """Continuations: with the cache, one token a step until the context outgrows block_size; then the window
        slides, every position shifts, it is re-encoded each step. vocab_size: sample only ids below it."""
        kv_cache, sample = None, lambda logits: sample_next(logits, temperature, top_k, top_p, generator)
        for _ in range(max_new_tokens):
            if use_cache and idx.size(1) <= self.config.block_size:
                p = next(self.parameters())  # the cache in the weights' dtype
                kv_cache = kv_cache or KVCache(self.config, idx.size(0), p.device, p.dtype)
                logits = self(idx[:, kv_cache.pos:], kv_cache=kv_cache)[0][:, -1]
            else:
                logits = self(idx[:, -self.config.block_size:])[0][:, -1]
            if self.config.byte_pool:  # idx: bytes (B, T, byte_block); a new token's bytes, sampled one by one
                idx_next = self.byte_decoder.sample(logits, sample, self.config.byte_block)[:, None]
            else:
                idx_next = sample(logits[:, :vocab_size])
            idx = torch.cat((idx, idx_next.to(idx.dtype)), dim=1)
        return idx


# dense bf16 tensor-core peaks (FLOP/s) from NVIDIA's datasheets, most specific name first: the PCIe and NVL H100s
# run at lower clocks and power than the SXM part
PEAK_FLOPS = (('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H200 NVL', 835e12), ('GH200', 989e12),
              ('H100', 989e12), ('H200', 989e12), ('A100', 312e12), ('L40S', 362e12))
peak_flops_of = lambda name: next((flops for key, flops in PEAK_FLOPS if key.lower() in name.lower()), None)
peak_flops = lambda d: peak_flops_of(torch.cuda.get_device_name(d)) if torch.device(d).type == 'cuda' else None


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token per row from (B, V) logits; temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        logits[logits < torch.topk(logits, min(top_k, logits.size(-1)))[0][:, [-1]]] = -math.inf
    if top_p is not None and top_p < 1.0:
        probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # keep the smallest prefix reaching top_p
        logits[drop.scatter(1, order, drop)] = -math.inf
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
