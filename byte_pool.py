"""
Byte-level tokenization with BPE-boundary pooling (Super Tiny Language Models, section 5.2): the model's token
embedding and LM head, replaced by two small byte transformers, so that no tensor is vocabulary-sized.
- ByteEncoder: a token's UTF-8 bytes (256 values + pad), embedded with byte positions, a bidirectional transformer
  under a key-padding mask, a masked mean (pads never enter it), a projection to n_embd: the core's input vector.
- ByteDecoder: from the core's output at position t, the bytes of token t+1 and then an end-of-token symbol.
  'causal': autoregressive within the token (a causal byte transformer whose first input is the core's vector);
  'parallel': every byte position at once from the core's vector alone (bytes independent given it).
The byte table maps each token id to its bytes (data/tokenizer.py's token_bytes), so existing .bin files serve.
A token longer than byte_block bytes keeps its first byte_block bytes: the encoder sees them, and the decoder's
target is them followed by the end-of-token symbol (README: how often this happens on enwiki).
Two savings, eager only, leave every result as it was, to float rounding: a batch's distinct ids are encoded once
each (GPT.encode_bytes), and the decoder runs a short token over the first half of its positions
(ByteDecoder.teacher_forced). A compiled model runs every position, in one graph of fixed sizes.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

EOT, PAD = 256, 257     # end-of-token (a decoder target) and padding (never a target); bytes are 0..255
N_OUT, N_IN = 257, 258  # the decoder predicts bytes and EOT; inputs may also be PAD


def byte_table(token_bytes, vocab_size, byte_block):
    """(vocab_size, byte_block) int32: each id's bytes, truncated to byte_block, padded with PAD. Ids past the
    tokenizer's (a vocabulary padded to a multiple of 64) and special tokens have no bytes: an empty row."""
    table = torch.full((vocab_size, byte_block), PAD, dtype=torch.int32)
    for i, b in enumerate(token_bytes[:vocab_size]):
        b = b[:byte_block]
        if b:
            table[i, :len(b)] = torch.tensor(list(b), dtype=torch.int32)
    return table


def check_byte_table(model, tokenizer):
    """ValueError unless a byte-level model's byte table spells tokenizer's ids: with another tokenizer its inputs
    would be the wrong bytes, silently."""
    if getattr(model.config, 'byte_pool', False) and not torch.equal(
            model.byte_table.cpu(), byte_table(tokenizer.token_bytes(), model.config.vocab_size, model.config.byte_block)):
        raise ValueError(f"the byte-level model's byte table does not spell the {tokenizer.name} tokenizer's ids: "
                         f"use the tokenizer (and a dataset made with it) the model was built on")


def to_text(rows):
    """Sampled tokens' bytes (T, byte_block) -> text; bytes that are not valid UTF-8 (a character cut between
    tokens, or a sampled byte string no text has) become U+FFFD instead of an error."""
    return bytes(b for b in rows.flatten().tolist() if b < 256).decode('utf-8', errors='replace')


def wide(x):
    """x in at least float32 (a bf16 autocast output: the residual stream, logits for a softmax); float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def decoder_targets(rows):
    """(N, byte_block) table rows -> (N, byte_block + 1) decoder targets: the bytes, then EOT, then PAD."""
    n = (rows != PAD).sum(-1, keepdim=True)
    tgt = torch.cat([rows.long(), torch.full_like(rows[:, :1], PAD, dtype=torch.long)], dim=1)
    return tgt.scatter(1, n, EOT)


def flops_per_token(c):
    """Training FLOPs per token of the encoder (over byte_block positions) and the decoder (byte_block + 1), padding
    included: 6 per weight of a matmul per position, plus attention within the token. What a compiled model runs;
    an eager one runs less (GPT.encode_bytes encodes each distinct id of a batch once, and a short token's decoder
    runs over half the positions: ByteDecoder.teacher_forced)."""
    block, L = 12 * c.byte_embd ** 2, c.byte_block
    enc = L * c.byte_layer * (block + 2 * c.byte_embd * L) + c.byte_embd * c.n_embd
    dec = (L + 1) * (c.byte_layer * (block + 2 * c.byte_embd * (L + 1)) + c.byte_embd * N_OUT) + c.byte_embd * c.n_embd
    return 6 * (enc + dec)


class ByteBlock(nn.Module):
    """A pre-LayerNorm transformer block over the bytes of one token."""
    def __init__(self, n_embd, n_head, causal):
        super().__init__()
        self.n_head, self.causal = n_head, causal
        self.ln_1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.fc_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x, key_mask=None):
        N, L, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(N, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal)
        x = x + self.proj(y.transpose(1, 2).reshape(N, L, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class ByteEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wbe = nn.Embedding(N_IN, c.byte_embd)
        self.wpe = nn.Embedding(c.byte_block, c.byte_embd)
        self.h = nn.ModuleList([ByteBlock(c.byte_embd, c.byte_head, causal=False) for _ in range(c.byte_layer)])
        self.ln = nn.LayerNorm(c.byte_embd)
        self.proj = nn.Linear(c.byte_embd, c.n_embd)  # writes the residual stream, as an embedding does

    def forward(self, b):
        """b: (..., L <= byte_block) byte ids, PAD after each token's bytes -> (..., n_embd)."""
        shape, L = b.shape[:-1], b.size(-1)
        b = b.reshape(-1, L).long()
        real = b != PAD
        x = self.wbe(b) + self.wpe.weight[:L]
        # pads are never attended to (and never averaged); position 0 stays open so that an empty token (an
        # end-of-text) has a key, its mean being over no bytes: 0
        key_mask = real.clone()
        key_mask[:, 0] = True
        for block in self.h:
            x = block(x, key_mask)
        x = self.ln(x) * real[..., None]
        pooled = x.sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        return self.proj(pooled).view(*shape, -1)


class ByteDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.causal = c.byte_decoder == 'causal'
        self.proj = nn.Linear(c.n_embd, c.byte_embd)  # reads ln_f's output, as the LM head does
        if self.causal:
            self.wbe = nn.Embedding(N_IN, c.byte_embd)
        self.wpe = nn.Embedding(c.byte_block + 1, c.byte_embd)
        self.h = nn.ModuleList([ByteBlock(c.byte_embd, c.byte_head, causal=self.causal)
                                for _ in range(c.byte_layer)])
        self.ln = nn.LayerNorm(c.byte_embd)
        self.head = nn.Linear(c.byte_embd, N_OUT)

    def forward(self, h, prev=None, L=None):
        """h: (N, n_embd) core outputs; prev: (N, j) the token's bytes so far (causal) -> logits (N, L, N_OUT) for
        byte positions 0..L-1 (causal: L = j + 1; parallel: every position, L = byte_block + 1)."""
        z = self.proj(h)[:, None]
        if self.causal:
            if prev is not None and prev.size(1):
                z = torch.cat([z, self.wbe(prev.long())], dim=1)
            x = z + self.wpe.weight[:z.size(1)]
        else:
            x = z + self.wpe.weight[:L or self.wpe.num_embeddings]
        for block in self.h:
            x = block(x)
        return self.head(self.ln(x))

    def teacher_forced(self, h, tgt):
        """Logits (N, L, N_OUT) for decoder targets tgt (N, L), each position fed the target bytes before it.
        Causal: no byte position attends to a later one, so the logits a row's targets read do not depend on the
        positions after its end-of-token; the rows whose targets fit in the first half of the positions (enwiki:
        9 tokens in 10 have at most 8 bytes) run over that half only, and their other logits are 0 (PAD targets,
        never read). Compiled, every row runs over every position (why: GPT.encode_bytes)."""
        L = tgt.size(1)
        if not self.causal:
            return self(h, L=L)
        if torch.compiler.is_compiling():
            return self(h, tgt[:, :-1])
        S = (L + 1) // 2
        short = (tgt[:, S:] == PAD).all(1)
        long_rows, short_rows = (~short).nonzero().squeeze(1), short.nonzero().squeeze(1)
        logits = torch.cat([self(h[long_rows], tgt[long_rows, :-1]),
                            F.pad(self(h[short_rows], tgt[short_rows, :S - 1]), (0, 0, 0, L - S))])
        return logits[torch.argsort(torch.cat([long_rows, short_rows]))]

    def logprobs(self, h, tgt):
        """h: (N, n_embd); tgt: (N, L) decoder targets -> log p of each target byte (0 at PAD) and whether it is
        the argmax, both (N, L), under teacher forcing."""
        logits = wide(self.teacher_forced(h, tgt))
        real = tgt != PAD
        t = tgt.clamp(max=N_OUT - 1)
        lp = F.log_softmax(logits, dim=-1).gather(-1, t[..., None]).squeeze(-1) * real
        return lp, (logits.argmax(-1) == t) | ~real

    def loss(self, h, tgt, reduction='mean'):
        """Cross-entropy per target byte (EOT included); 'none': summed per token, (N,)."""
        logits = self.teacher_forced(h, tgt)
        nll = F.cross_entropy(wide(logits.flatten(0, 1)), tgt.flatten(), ignore_index=PAD, reduction=reduction)
        return nll if reduction == 'mean' else nll.view(tgt.shape).sum(1)

    @torch.no_grad()
    def sample(self, h, sample_next, max_bytes):
        """Bytes of one token per row of h, sampled byte by byte with sample_next(logits (N, N_OUT)) -> (N, 1),
        until EOT (forced after max_bytes). Returns (N, max_bytes) with PAD after each token's bytes."""
        N = h.size(0)
        out = torch.full((N, max_bytes), PAD, dtype=torch.long, device=h.device)
        done = torch.zeros(N, dtype=torch.bool, device=h.device)
        logits_all = None if self.causal else self(h)
        for j in range(max_bytes):
            logits = self(h, out[:, :j])[:, -1] if self.causal else logits_all[:, j]
            nxt = sample_next(logits.float()).squeeze(-1)
            done |= nxt == EOT
            out[:, j] = torch.where(done, PAD, nxt)
            if done.all():
                break
        return out


if __name__ == '__main__':
    # How often tokens outgrow byte_block on a prepared dataset (data/prepare.py): the share of tokens longer than
    # each block size, and the share of the text's bytes the truncation drops.
    #   python byte_pool.py --data_dir=data/enwiki_neox --out_json=results/byte_long_tokens_neox.json
    import json
    import numpy as np
    from configurator import configure, fail, non_empty, one_of
    from data import open_tokens, read_meta
    from data.tokenizer import tokenizer_from_meta
    data_dir, split, out_json, blocks = 'data/enwiki_neox', 'val', None, [8, 12, 16, 24, 32]
    configure(globals(), rules=dict(data_dir=non_empty, split=one_of('train', 'val')))
    try:
        meta = read_meta(data_dir)
        ids = np.asarray(open_tokens(data_dir, split, meta))
        lengths = np.array([len(b) for b in tokenizer_from_meta(meta).token_bytes()])
    except (ValueError, FileNotFoundError, KeyError) as e:
        fail(e)
    count = np.bincount(ids, minlength=len(lengths))[:len(lengths)]
    tokens, nbytes = int(count.sum()), int((count * lengths).sum())
    out = dict(data_dir=data_dir, split=split, tokenizer=meta['tokenizer'], tokens=tokens, bytes=nbytes,
               bytes_per_token=nbytes / tokens, longest_token_in_vocab=int(lengths.max()),
               longest_token_seen=int(lengths[count > 0].max()), blocks={})
    for b in blocks:
        over = lengths > b
        out['blocks'][b] = dict(tokens_longer=int(count[over].sum()), share_of_tokens=float(count[over].sum() / tokens),
                                share_of_bytes_dropped=float((count * np.maximum(lengths - b, 0)).sum() / nbytes),
                                vocab_entries_longer=int(over.sum()))
    print(json.dumps(out, indent=1))
    if out_json:
        with open(out_json, 'w') as f:
            json.dump(out, f, indent=1)
