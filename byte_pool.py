"""Byte-level tokenization with BPE-boundary pooling (Super Tiny Language Models, 5.2; docs/byte_pool.md): embedding
and head replaced by byte transformers. ByteEncoder: a token's bytes, bidirectional, masked mean, projected to n_embd.
ByteDecoder: from the core's output at t, token t+1's bytes and an end-of-token symbol, byte by byte. The byte table
spells each id (longer tokens keep byte_block bytes). Eager runs skip work that changes no result."""
import torch
import torch.nn as nn
import torch.nn.functional as F

EOT, PAD, N_OUT, N_IN = 256, 257, 257, 258  # end-of-token (a target), padding (never one); decoder outputs, inputs
wide = lambda x: x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 autocast outputs (stream, logits) widened


def byte_table(token_bytes, vocab_size, byte_block):
    """(vocab_size, byte_block) int32: each id's bytes, truncated, PAD after; padded ids and special tokens: none."""
    table = torch.full((vocab_size, byte_block), PAD, dtype=torch.int32)
    for i, b in enumerate(token_bytes[:vocab_size]):
        table[i, :len(b[:byte_block])] = torch.tensor(list(b[:byte_block]), dtype=torch.int32)
    return table


def check_byte_table(model, tokenizer):
    """ValueError unless a byte-level model's table spells tokenizer's ids (else its inputs are wrong, silently)."""
    if model.config.byte_pool and not torch.equal(
            model.byte_table.cpu(), byte_table(tokenizer.token_bytes(), *model.byte_table.shape)):
        raise ValueError(f"the byte-level model's byte table does not spell the {tokenizer.name} tokenizer's ids: "
                         f"use the tokenizer (and a dataset made with it) the model was built on")


def to_text(rows):
    """Sampled tokens' bytes (T, byte_block) -> text, invalid UTF-8 (a character cut between tokens) as U+FFFD."""
    return bytes(b for b in rows.flatten().tolist() if b < 256).decode('utf-8', errors='replace')


def decoder_targets(rows):
    """(N, byte_block) table rows -> (N, byte_block + 1) decoder targets: the bytes, then EOT, then PAD."""
    return F.pad(rows.long(), (0, 1), value=PAD).scatter(1, (rows != PAD).sum(-1, keepdim=True), EOT)


def flops_per_token(c):
    """Training FLOPs per token of the encoder (byte_block positions) and decoder (byte_block + 1), padding included:
    6 per weight of a matmul per position, plus attention within the token; what a compiled model runs."""
    block, L = 12 * c.byte_embd ** 2, c.byte_block
    enc = L * c.byte_layer * (block + 2 * c.byte_embd * L) + c.byte_embd * c.n_embd
    dec = (L + 1) * (c.byte_layer * (block + 2 * c.byte_embd * (L + 1)) + c.byte_embd * N_OUT) + c.byte_embd * c.n_embd
    return 6 * (enc + dec)


class ByteBlock(nn.Module):  # a pre-LayerNorm transformer block over the bytes of one token
    def __init__(self, C, n_head, causal):
        super().__init__()
        self.n_head, self.causal, self.ln_1, self.qkv = n_head, causal, nn.LayerNorm(C), nn.Linear(C, 3 * C)
        self.proj, self.ln_2 = nn.Linear(C, C), nn.LayerNorm(C)
        self.fc, self.fc_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x, key_mask=None):
        N, L, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(N, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=self.causal)
        x = x + self.proj(y.transpose(1, 2).reshape(N, L, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class ByteEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wbe, self.wpe = nn.Embedding(N_IN, c.byte_embd), nn.Embedding(c.byte_block, c.byte_embd)
        self.h = nn.ModuleList([ByteBlock(c.byte_embd, c.byte_head, causal=False) for _ in range(c.byte_layer)])
        self.ln, self.proj = nn.LayerNorm(c.byte_embd), nn.Linear(c.byte_embd, c.n_embd)  # proj: as an embedding

    def forward(self, b):
        """b: (..., L <= byte_block) byte ids, PAD after each token's bytes -> (..., n_embd)."""
        shape, L, b = b.shape[:-1], b.size(-1), b.reshape(-1, b.size(-1)).long()
        real, x = b != PAD, self.wbe(b) + self.wpe.weight[:L]
        # pads are never attended to nor averaged; position 0 stays open: an empty token (end-of-text) has a key, mean 0
        key_mask = (real | (torch.arange(L, device=b.device) == 0))[:, None, None, :]
        for block in self.h:
            x = block(x, key_mask)
        pooled = (self.ln(x) * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        return self.proj(pooled).view(*shape, -1)

    def ids(self, table, idx):
        """Ids idx (B, T) -> vectors of their table rows. A batch repeats ids (8,192 enwiki tokens: ~2,700 distinct):
        eager runs encode each once; compiled, all (a data-dependent size: 4x slower, results/bytes_h200_456777c/)."""
        if torch.compiler.is_compiling():
            return self(table[idx])
        ids, where = torch.unique(idx, return_inverse=True)
        return F.embedding(where, self(table[ids]))


class ByteDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj, self.wbe = nn.Linear(c.n_embd, c.byte_embd), nn.Embedding(N_IN, c.byte_embd)  # proj: as the LM head
        self.wpe = nn.Embedding(c.byte_block + 1, c.byte_embd)
        self.h = nn.ModuleList([ByteBlock(c.byte_embd, c.byte_head, causal=True) for _ in range(c.byte_layer)])
        self.ln, self.head = nn.LayerNorm(c.byte_embd), nn.Linear(c.byte_embd, N_OUT)

    def forward(self, h, prev, L=None):
        """h (N, n_embd), prev (N, j) the token's bytes so far -> logits (N, j + 1, N_OUT); L (j + 1): unused."""
        x = torch.cat([self.proj(h)[:, None], self.wbe(prev.long())], dim=1)
        x = x + self.wpe.weight[:x.size(1)]
        for block in self.h:
            x = block(x)
        return self.head(self.ln(x))

    def teacher_forced(self, h, tgt):
        """Logits (N, L, N_OUT) for decoder targets tgt (N, L), each position fed the target bytes before it. No byte
        attends to a later one, so rows whose targets fit in the first half (enwiki: 9 tokens in 10) run over that
        half, their other logits 0 (PAD targets, never read). Compiled, every position (why: ByteEncoder.ids)."""
        L, S = tgt.size(1), (tgt.size(1) + 1) // 2
        if torch.compiler.is_compiling():
            return self(h, tgt[:, :-1])
        short = (tgt[:, S:] == PAD).all(1)
        long_rows, short_rows = (~short).nonzero().squeeze(1), short.nonzero().squeeze(1)
        logits = torch.cat([self(h[long_rows], tgt[long_rows, :-1]),
                            F.pad(self(h[short_rows], tgt[short_rows, :S - 1]), (0, 0, 0, L - S))])
        return logits[torch.argsort(torch.cat([long_rows, short_rows]))]

    def logprobs(self, h, tgt):
        """Teacher-forced log p of each target byte of tgt (N, L) (0 at PAD) and whether it is the argmax, (N, L)."""
        logits, real, t = wide(self.teacher_forced(h, tgt)), tgt != PAD, tgt.clamp(max=N_OUT - 1)
        lp = F.log_softmax(logits, dim=-1).gather(-1, t[..., None]).squeeze(-1) * real
        return lp, (logits.argmax(-1) == t) | ~real

    def loss(self, h, tgt, reduction='mean'):
        """Cross-entropy per target byte (EOT included); 'none': summed per token, (N,)."""
        logits = wide(self.teacher_forced(h, tgt).flatten(0, 1))
        nll = F.cross_entropy(logits, tgt.flatten(), ignore_index=PAD, reduction=reduction)
        return nll if reduction == 'mean' else nll.view(tgt.shape).sum(1)

    @torch.no_grad()
    def sample(self, h, sample_next, max_bytes):
        """One token's bytes (PAD after) per row of h, (N, max_bytes): sample_next((N, N_OUT) logits) until EOT."""
        out = torch.full((h.size(0), max_bytes), PAD, dtype=torch.long, device=h.device)
        done = torch.zeros(h.size(0), dtype=torch.bool, device=h.device)
        for j in range(max_bytes):
            nxt = sample_next(self(h, out[:, :j])[:, -1].float()).squeeze(-1)
            done |= nxt == EOT
            out[:, j] = torch.where(done, PAD, nxt)
            if done.all():
                break
        return out

