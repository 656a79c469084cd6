"""The tokenizers behind one interface: encode(text), encode_batch(texts, threads), decode(ids), eot (end-of-text, after
every document), vocab_size, meta() (for meta.json), token_bytes() (each id's UTF-8 bytes), save_hf (files AutoTokenizer
loads to the same ids). 'gpt2': tiktoken (offline: TIKTOKEN_CACHE_DIR); 'gpt-neox-20b': `tokenizers`; 'char'."""
import os
from functools import cache

import files

TOKENIZERS = ('gpt2', 'gpt-neox-20b', 'char')
NEOX_HUB_ID, EOT_TEXT = 'EleutherAI/gpt-neox-20b', '<|endoftext|>'


class Tokenizer:
    def __init__(self, name, encode, decode, eot, vocab_size, spell, save, extra=None, encode_batch=None):
        self.name, self.encode, self.eot, self.vocab_size, self._save = name, encode, eot, vocab_size, save
        self.decode = lambda ids: decode([int(i) for i in ids])  # numpy ids too
        self.encode_batch = encode_batch or (lambda texts, threads=None: [encode(t) for t in texts])
        self.meta = lambda: dict(tokenizer=name, vocab_size=vocab_size, eot=eot, **(extra or {}))  # for meta.json
        # token_bytes(): [bytes] per id, b'' for special tokens: a text's UTF-8 size is the sum over its ids, undecoded
        self.token_bytes = cache(lambda: [spell(i) for i in range(vocab_size)])

    def save_hf(self, out_dir):
        """Files with which AutoTokenizer gives the same ids and end-of-text as bos and eos (lm-eval's prefix)."""
        self._save(out_dir)
        special = dict(bos_token=EOT_TEXT, eos_token=EOT_TEXT, unk_token=EOT_TEXT)
        files.write_json(os.path.join(out_dir, 'special_tokens_map.json'), special)
        files.write_json(os.path.join(out_dir, 'tokenizer_config.json'), dict(
            special, tokenizer_class='GPT2Tokenizer' if self.name == 'gpt2' else 'PreTrainedTokenizerFast',
            add_bos_token=False, add_eos_token=False, add_prefix_space=False, clean_up_tokenization_spaces=False))


def get_tokenizer(name, path=None, chars=None):
    """name: one of TOKENIZERS; path: a local tokenizer.json for gpt-neox-20b; chars: the 'char' alphabet."""
    if name == 'gpt2':
        import tiktoken
        from tiktoken.load import read_file_cached
        try:
            enc = tiktoken.get_encoding('gpt2')
        except Exception as e:  # no network and no cache: requests' or tiktoken's own error types
            raise FileNotFoundError(f"tiktoken could not load the gpt2 BPE files ({type(e).__name__}): offline, set "
                                    f"TIKTOKEN_CACHE_DIR to a tiktoken cache (../shared/data/tiktoken_cache)") from None
        save = lambda d: [files.write(os.path.join(d, name), lambda f, u=url: f.write(read_file_cached(  # GPT-2's own
            'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/' + u)))  # files, from tiktoken's cache
            for name, url in (('vocab.json', 'encoder.json'), ('merges.txt', 'vocab.bpe'))]
        # encode_ordinary: '<|endoftext|>' inside a document is text, not the special token
        return Tokenizer('gpt2', enc.encode_ordinary, enc.decode, enc.eot_token, enc.n_vocab, save=save,
                         spell=lambda i: b'' if i == enc.eot_token else enc.decode_single_token_bytes(i),
                         encode_batch=lambda t, threads=None: enc.encode_ordinary_batch(
                             t, num_threads=threads or os.cpu_count()))
    if name == 'gpt-neox-20b':
        from tokenizers import Tokenizer as HFTokenizer, decoders
        try:
            tok = HFTokenizer.from_file(path) if path else HFTokenizer.from_pretrained(NEOX_HUB_ID)
        except Exception as e:
            raise FileNotFoundError(f"could not load the tokenizer {path or NEOX_HUB_ID} ({type(e).__name__}): pass "
                                    f"--tokenizer_path=a GPT-NeoX-20B tokenizer.json") from None
        tok.encode_special_tokens = True  # as gpt2's encode_ordinary
        added = {t.content: t.special for t in tok.get_added_tokens_decoder().values()}
        # byte-level BPE spells a printable byte as itself, the n-th other byte as chr(256 + n); special tokens: b''
        other = [b for b in range(256) if not (0x21 <= b < 0x7f or 0xa1 <= b < 0xad or b >= 0xae)]
        byte_of = {chr(b): b for b in range(256) if b not in other} | {chr(256 + n): b for n, b in enumerate(other)} \
            if isinstance(tok.decoder, decoders.ByteLevel) else None
        spell = lambda i: b'' if (s := tok.id_to_token(i)) is None or added.get(s) else \
            s.encode() if s in added or byte_of is None else bytes(byte_of[c] for c in s)
        return Tokenizer('gpt-neox-20b', lambda s: tok.encode(s, add_special_tokens=False).ids,
                         lambda ids: tok.decode(ids, skip_special_tokens=False), tok.token_to_id(EOT_TEXT),
                         tok.get_vocab_size(), spell, lambda d: tok.save(os.path.join(d, 'tokenizer.json')),
                         extra={'tokenizer_path': os.path.abspath(path) if path else NEOX_HUB_ID},
                         encode_batch=lambda t, threads=None: [e.ids for e in tok.encode_batch(
                             t, add_special_tokens=False)])
    if name == 'char':
        if not chars:
            raise ValueError("the 'char' tokenizer needs its alphabet (meta.json's 'chars')")
        stoi, eot = {c: i for i, c in enumerate(chars)}, len(chars)  # one id past the alphabet: end-of-text
        def encode(s):
            try:
                return [stoi[c] for c in s]
            except KeyError as e:
                raise ValueError(f"character {e.args[0]!r} is not in this char tokenizer's alphabet") from None
        def save(out_dir):  # in `tokenizers`' terms: every character (newlines too) one word, joined with nothing
            from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
            t = HFTokenizer(models.WordLevel({**stoi, EOT_TEXT: eot}, unk_token=EOT_TEXT))
            t.pre_tokenizer, t.decoder = pre_tokenizers.Split(Regex(r'[\s\S]'), behavior='isolated'), decoders.Fuse()
            t.add_special_tokens([EOT_TEXT])
            t.save(os.path.join(out_dir, 'tokenizer.json'))
        return Tokenizer('char', encode, lambda ids: ''.join(chars[i] for i in ids if i != eot), eot, len(chars) + 1,
                         lambda i: b'' if i == eot else chars[i].encode(), save, extra={'chars': chars})
    raise ValueError(f"unknown tokenizer {name!r}: use one of {', '.join(TOKENIZERS)}")


def tokenizer_from_meta(meta):
    """The tokenizer a meta.json (a dict) names."""
    path = meta.get('tokenizer_path')
    return get_tokenizer(meta['tokenizer'], path=None if path == NEOX_HUB_ID else path, chars=meta.get('chars'))


def tokenizer_record(source):
    """What names the tokenizer of a model loaded by hf_io.load_model (None: nothing): a checkpoint's or a directory's
    record (a meta dict or a name), or rather its data_dir's meta.json where that agrees with the record."""
    ckpt, record = source['checkpoint'], source['record']
    name = ckpt.get('data') if ckpt is not None else record.get('tokenizer')
    data_dir = (ckpt.get('config') or {}).get('data_dir') if ckpt is not None else record.get('data_dir')
    path = os.path.join(data_dir or '', 'meta.json')
    if (ckpt is None and not isinstance(name, str)) or not data_dir or not os.path.isfile(path):
        return name
    meta = files.read_json(path, ('tokenizer',), 'dataset meta.json')
    try:
        return check_tokenizers(name or meta['tokenizer'], meta, '', '') or meta
    except ValueError:
        return name


def model_tokenizer(arch, source, name=None, path=None):
    """The tokenizer of a model loaded by hf_io.load_model, the one rule every script uses: the one named here (name,
    path); else the model's record (tokenizer_record); else a tokenizer.json beside the weights (any `tokenizers` file
    loads as gpt-neox-20b's does); else its family's (gpt2: GPT-2 BPE; gpt_neox: GPT-NeoX-20B from path or the hub)."""
    meta = tokenizer_record(source)
    if name is not None or isinstance(meta, dict):
        meta = meta if isinstance(meta, dict) else {}
        return tokenizer_from_meta(dict(meta, tokenizer=name or meta['tokenizer'], **{'tokenizer_path': path} if path
                                        else {}))
    local = os.path.join(source['path'], 'tokenizer.json') if source['checkpoint'] is None else ''
    name = meta or (None if os.path.isfile(local) else {'gpt2': 'gpt2', 'gpt_neox': 'gpt-neox-20b'}[arch])
    if source['checkpoint'] is not None or name not in (None, 'gpt2', 'gpt-neox-20b'):
        raise ValueError(f"{source['path']} names tokenizer {name!r} but not its alphabet or file (its data_dir has no "
                         f"meta.json here): pass --tokenizer and --tokenizer_path")
    return get_tokenizer(name or 'gpt-neox-20b', path=path or (local if os.path.isfile(local) else None))


def check_tokenizers(a, b, a_name, b_name):
    """The one tokenizer rule: unless ids mean the same text in a and b, a ValueError naming both and what differs.
    Each is a tokenizer meta dict, a name, a Tokenizer (names, vocabulary sizes and char alphabets must agree where
    both say) or a model (anything with .config.vocab_size), which only needs to hold every id of the other."""
    spelled = lambda t: (True, None, t.config.vocab_size, None) if hasattr(t, 'config') else (False, *map((
        t.meta() if isinstance(t, Tokenizer) else {'tokenizer': t} if isinstance(t, str) else t).get,
        ('tokenizer', 'vocab_size', 'chars')))  # (a model?, name, vocab_size, chars)
    (ma, na, va, ca), (mb, nb, vb, cb) = spelled(a), spelled(b)
    i = next((i for i, (x, y) in enumerate(zip([*ca, None], [*cb, None])) if x != y), -1) if ca and cb else -1
    model = lambda m, size, other: m and other and other > size and \
        f"the model's vocabulary of {size} ids cannot hold ids up to {other - 1}"
    why = next(filter(None, (model(ma, va, vb), model(mb, vb, va), not (ma or mb) and na != nb and 'their names differ',
                             not (ma or mb) and va and vb and va != vb and 'their vocabulary sizes differ', i >= 0 and
                             f"their alphabets differ at id {i} ({ca[i:i + 1]!r} vs {cb[i:i + 1]!r})")), None)
    if why:
        desc = lambda m, n, v: f"{v} ids" if m else f"{n}, {v} ids"
        raise ValueError(f"{a_name} ({desc(ma, na, va)}) and {b_name} ({desc(mb, nb, vb)}) use different tokenizers: "
                         f"{why}")
