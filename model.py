"""One GPT for Pythia / GPT-NeoX (rotary positions on the first rotary_pct of each head, parallel residual
x + attn(ln_1(x)) + mlp(ln_2(x)), erf GELU, untied head) and GPT-2 (learned positions, sequential pre-LN residual, tanh
GELU, tied head), with explicit shapes so that grown models fit; byte_pool: byte transformers for embedding and head."""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from byte_pool import PAD, ByteDecoder, ByteEncoder, decoder_targets, flops_per_token as byte_flops, wide

DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
FAMILY = {'gpt_neox': dict(rotary_pct=0.25, parallel_residual=True, tie_embeddings=False, gelu='erf'),
          'gpt2': dict(rotary_pct=0.0, parallel_residual=False, tie_embeddings=True, gelu='tanh')}


@dataclass
class GPTConfig:
    arch: str = 'gpt_neox'              # 'gpt_neox' or 'gpt2'; None fields below take this family's value (FAMILY)
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    head_size: int = None               # n_embd // n_head; stays fixed when a model is widened
    mlp_width: int = None               # 4 * n_embd
    vocab_size: int = 50304
    block_size: int = 2048
    layer_norm_eps: float = 1e-5
    rotary_pct: float = None            # share of each head's dims that rotate; gpt2: 0 (learned positions instead)
    rotary_base: float = 10000.0
    parallel_residual: bool = None
    tie_embeddings: bool = None
    gelu: str = None                    # 'erf' or 'tanh'
    dropout: float = 0.0
    byte_pool: bool = False             # byte_pool.py's encoder and decoder instead of the embedding and head
    byte_embd: int = 64                 # their width
    byte_head: int = 4
    byte_layer: int = 2                 # layers of each
    byte_block: int = 16                # bytes per token; longer tokens keep their first byte_block

    def __post_init__(self):
        if self.arch not in FAMILY:
            raise ValueError(f"unknown arch {self.arch!r}: use 'gpt_neox' (Pythia) or 'gpt2'")
        derived = dict(FAMILY[self.arch], head_size=self.n_embd // max(self.n_head, 1), mlp_width=4 * self.n_embd)
        vars(self).update({k: v for k, v in derived.items() if getattr(self, k) is None})
        r, pct = self.rotary_ndims, f"rotary_pct={self.rotary_pct}"
        for bad, why in (  # transformers derives the head size as hidden / heads; rotate-half pairs dims i, i + r/2
                (self.n_head * self.head_size != self.n_embd,
                 f"n_embd={self.n_embd} is not n_head={self.n_head} heads of head_size={self.head_size}"),
                (self.gelu not in ('erf', 'tanh'), f"gelu={self.gelu!r}: use 'erf' or 'tanh'"),
                (not 0 <= self.rotary_pct <= 1, f"{pct} must lie in [0, 1]"),
                (r % 2, f"{pct} gives {r} rotary dims of head_size={self.head_size}: an odd number"),
                ((r == 0) != (self.arch == 'gpt2'), f"{pct}: gpt_neox needs rotary dims, gpt2 (learned ones) none"),
                (self.byte_pool and self.byte_embd % self.byte_head, "byte_embd is not a multiple of byte_head")):
            if bad:
                raise ValueError(why)
        self.tie_embeddings = self.tie_embeddings and not self.byte_pool  # no embedding and no head to tie

    rotary_ndims = property(lambda self: int(self.head_size * self.rotary_pct))


# Pythia's shapes (HF configs), GPT-2's (OpenAI); GPT-2's 50257 ids padded to 50304, a multiple of 64 as Pythia's
PRESETS = {f'pythia-{size}': dict(n_layer=L, n_head=H, n_embd=D) for size, L, H, D in (
    ('14m', 6, 4, 128), ('31m', 6, 8, 256), ('70m', 6, 8, 512), ('160m', 12, 12, 768), ('410m', 24, 16, 1024),
    ('1b', 16, 8, 2048), ('1.4b', 24, 16, 2048), ('2.8b', 32, 32, 2560), ('6.9b', 32, 32, 4096), ('12b', 36, 40, 5120))}
PRESETS['pythia-6.9b']['vocab_size'], PRESETS['pythia-12b']['vocab_size'] = 50432, 50688
PRESETS.update({name: dict(arch='gpt2', n_layer=L, n_head=H, n_embd=D, block_size=1024) for name, L, H, D in (
    ('gpt2', 12, 12, 768), ('gpt2-medium', 24, 16, 1024), ('gpt2-large', 36, 20, 1280), ('gpt2-xl', 48, 25, 1600))})

# dense bf16 peak FLOP/s (NVIDIA datasheets), most specific name first: PCIe and NVL H100s clock lower than SXM
PEAK_FLOPS = (('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H200 NVL', 835e12), ('GH200', 989e12),
              ('H100', 989e12), ('H200', 989e12), ('A100', 312e12), ('L40S', 362e12))
peak_flops_of = lambda name: next((flops for key, flops in PEAK_FLOPS if key.lower() in name.lower()), None)
peak_flops = lambda d: peak_flops_of(torch.cuda.get_device_name(d)) if torch.device(d).type == 'cuda' else None


def preset_config(name, **overrides):
    if (key := name.split('/')[-1].removesuffix('-deduped')) not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[key], **overrides})


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c, self.ln_1, self.drop = c, nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps), nn.Dropout(c.dropout)
        # fused QKV head by head, [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], as GPT-NeoX stores it: width expansion appends
        self.attn = nn.ModuleDict(dict(c_attn=nn.Linear(c.n_embd, 3 * c.n_embd), c_proj=nn.Linear(c.n_embd, c.n_embd)))
        self.ln_2 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(c.n_embd, c.mlp_width), c_proj=nn.Linear(c.mlp_width, c.n_embd)))

    def forward(self, x, rope):
        (B, T, C), c, hs = x.shape, self.c, self.c.head_size
        q, k, v = self.attn.c_attn(self.ln_1(x)).view(B, T, c.n_head, 3 * hs).transpose(1, 2).split(hs, -1)
        if r := c.rotary_ndims:  # NeoX's rotate-half: dim i turns with dim i + r/2 (rope: sin's first half negated)
            cos, sin = rope.to(q.dtype)
            q, k = (torch.cat((t[..., :r] * cos + t[..., :r].roll(r // 2, -1) * sin, t[..., r:]), -1) for t in (q, k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=c.dropout if self.training else 0.0)
        a = self.drop(self.attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        m = self.mlp.c_fc(self.ln_2(x if c.parallel_residual else x + a))
        return x + a + self.drop(self.mlp.c_proj(F.gelu(m, approximate='tanh' if c.gelu == 'tanh' else 'none')))


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
            grad_h.append((g := g.to(dtype)) @ wd)
            grad_w += g.t() @ hc
    losses = torch.where(targets >= 0, torch.cat(losses), 0.0)
    return (losses, None, None) if scale is None else (losses, torch.cat(grad_h).to(h.dtype), grad_w.to(w.dtype))


class HeadLoss(torch.autograd.Function):
    """One chunk's logits at a time, never (N, vocab). A mean's gradient is known up to the scalar backward receives:
    forward forms it (ahead) from the logits it has; reduction='none' recomputes each chunk's logits in backward."""
    @staticmethod
    def forward(ctx, h, w, targets, dtype, chunk, mean, ahead):
        valid = targets >= 0
        scale = valid.to(torch.promote_types(h.dtype, torch.float32)) / valid.sum() if ahead else None
        out = head_pass(h, w, targets, dtype, chunk, scale)
        ctx.dtype, ctx.chunk, ctx.ahead = dtype, chunk, ahead
        ctx.save_for_backward(*(out[1:] if ahead else (h, w, targets)))
        return out[0].sum() / valid.sum() if mean else out[0]

    @staticmethod
    def backward(ctx, grad):  # ahead: forward's gradients of the mean, scaled by the chain rule
        s = ctx.saved_tensors
        grads = [g * grad for g in s] if ctx.ahead else head_pass(*s, ctx.dtype, ctx.chunk, grad * (s[2] >= 0))[1:]
        return *grads, None, None, None, None, None


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
            h=nn.ModuleList([Block(c) for _ in range(c.n_layer)]), ln_f=nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps),
            **(dict(wpe=nn.Embedding(c.block_size, c.n_embd)) if c.arch == 'gpt2' else {})))
        if c.byte_pool:  # the byte table spells each id (from the dataset's tokenizer): part of the model's meaning.
            self.byte_encoder, self.byte_decoder = ByteEncoder(c), ByteDecoder(c)  # int32: DDP broadcasts no int16
            self.register_buffer('byte_table', torch.full((c.vocab_size, c.byte_block), PAD, dtype=torch.int32))
        else:
            self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
            if c.tie_embeddings:
                self.lm_head.weight = self.transformer.wte.weight
        if r := c.rotary_ndims:  # cos and sin of position * base^(-2i/r), in float64; sin's first half negated
            f = torch.outer(torch.arange(c.block_size, dtype=torch.float64),
                            1.0 / (c.rotary_base ** (torch.arange(0, r, 2, dtype=torch.float64) / r)))
            rope = torch.stack((f.cos().repeat(1, 2), torch.cat((-f.sin(), f.sin()), 1))).float()
            self.register_buffer('rope', rope, persistent=False)
        self.apply(self._init_weights)
        std = 0.02 / math.sqrt(2 * c.n_layer) if c.arch == 'gpt2' else 2 / (c.n_layer * math.sqrt(c.n_embd))
        for p in (p for n, p in self.named_parameters() if n.endswith('c_proj.weight')):  # residual writers (and byte
            nn.init.normal_(p, 0.0, std)  # blocks' fc_proj): the stream's variance does not grow with depth (wang_init)

    def _init_weights(self, m):  # GPT-NeoX "small_init" sqrt(2/(5d)) (Nguyen & Salazar 2019); GPT-2 0.02
        if isinstance(m, (nn.Linear, nn.Embedding)):
            c = self.config
            nn.init.normal_(m.weight, 0.0, 0.02 if c.arch == 'gpt2' else math.sqrt(2 / (5 * c.n_embd)))
            if getattr(m, 'bias', None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets=None, reduction='mean'):
        """idx (B, T) ids, or (byte_pool) (B, T, byte_block) bytes -> (logits, None), or with targets (None, loss);
        byte_pool: ln_f's output for logits, the loss per byte. reduction='none': each token's loss, (B, T)."""
        (B, T), c = idx.shape[:2], self.config
        if T > c.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size={c.block_size}")
        # byte_pool: the residual stream in float32 under autocast, as an embedding's output is
        x = (wide(self.byte_encoder(idx) if idx.dim() == 3 else self.byte_encoder.ids(self.byte_table, idx))
             if c.byte_pool else self.transformer.wte(idx))
        if c.arch == 'gpt2':
            x = x + self.transformer.wpe(torch.arange(T, device=idx.device))
        rope = self.rope[:, :T] if c.rotary_ndims else None
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope)
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
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, vocab_size=None):
        """Each step re-encodes the last block_size tokens (no KV cache: nanoGPT's simplicity; sampling is not where
        this project spends time). vocab_size: sample only ids below it. byte_pool: idx (B, T, byte_block), bytes."""
        c, draw = self.config, lambda logits: sample_next(logits, temperature, top_k, top_p, generator)
        for _ in range(max_new_tokens):
            out = self(idx[:, -c.block_size:])[0][:, -1]
            y = self.byte_decoder.sample(out, draw, c.byte_block)[:, None] if c.byte_pool else draw(out[:, :vocab_size])
            idx = torch.cat((idx, y.to(idx.dtype)), dim=1)
        return idx


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
