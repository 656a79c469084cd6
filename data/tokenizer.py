"""
The tokenizers the project uses, behind one interface: encode(text) -> ids, decode(ids) -> text,
eot (end-of-text id appended to every document), vocab_size, meta() to store in meta.json, token_bytes() (the UTF-8
bytes each id stands for) and save_hf() (the files transformers' AutoTokenizer loads to the same ids).
- 'gpt2': GPT-2 BPE via tiktoken (offline with TIKTOKEN_CACHE_DIR pointing at a cache)
- 'gpt-neox-20b': Pythia's tokenizer via `tokenizers`, from a local tokenizer.json or the hub
- 'char': the characters of the corpus, plus one extra id for end-of-text
"""
import json
import os

NEOX_HUB_ID = 'EleutherAI/gpt-neox-20b'
EOT_TEXT = '<|endoftext|>'
GPT2_FILES = {'vocab.json': 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json',
              'merges.txt': 'https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe'}


class Tokenizer:
    def __init__(self, name, encode, decode, eot, vocab_size, extra=None, token_bytes=None, save_hf=None):
        self.name, self._encode, self._decode = name, encode, decode
        self.eot, self.vocab_size, self.extra = eot, vocab_size, extra or {}
        self._token_bytes, self._save_hf, self._table = token_bytes, save_hf, None

    def encode(self, text):
        return self._encode(text)

    def decode(self, ids):
        return self._decode([int(i) for i in ids])

    def meta(self):
        return dict(tokenizer=self.name, vocab_size=self.vocab_size, eot=self.eot, **self.extra)

    def token_bytes(self):
        """[bytes] per id: what each token spells in UTF-8 (b'' for end-of-text and other special tokens), so that
        a text's byte count is the sum over its ids, with no decoding of partial characters."""
        if self._table is None:
            self._table = [self._token_bytes(i) for i in range(self.vocab_size)]
        return self._table

    def save_hf(self, out_dir):
        """Write the files with which transformers.AutoTokenizer.from_pretrained(out_dir) gives the same ids (and
        end-of-text as its bos/eos token, the prefix lm-evaluation-harness scores documents after)."""
        self._save_hf(out_dir)
        special = dict(bos_token=EOT_TEXT, eos_token=EOT_TEXT, unk_token=EOT_TEXT)
        with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w') as f:
            json.dump(dict(tokenizer_class='GPT2Tokenizer' if self.name == 'gpt2' else 'PreTrainedTokenizerFast',
                           add_bos_token=False, add_eos_token=False, add_prefix_space=False,
                           clean_up_tokenization_spaces=False, **special), f, indent=1)
        with open(os.path.join(out_dir, 'special_tokens_map.json'), 'w') as f:
            json.dump(special, f, indent=1)


def byte_level_alphabet():
    """{char: byte} of byte-level BPE (GPT-2, GPT-NeoX): vocabularies spell every byte as one printable character,
    the byte itself where it is printable ('!'..'~', '¡'..'¬', '®'..'ÿ'), else chr(256 + n) for the n-th other byte."""
    printable = set(range(0x21, 0x7f)) | set(range(0xa1, 0xad)) | set(range(0xae, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table


def get_tokenizer(name, path=None, chars=None):
    """name: 'gpt2' | 'gpt-neox-20b' | 'char'. path: a local tokenizer.json for gpt-neox-20b.
    chars: the alphabet for 'char' (a string)."""
    if name == 'gpt2':
        import tiktoken
        try:
            enc = tiktoken.get_encoding('gpt2')
        except Exception as e:  # no network and no cache: requests' or tiktoken's own error types
            raise FileNotFoundError(f"tiktoken could not load the gpt2 BPE files ({type(e).__name__}): offline, set "
                                    f"TIKTOKEN_CACHE_DIR to a tiktoken cache (../shared/data/tiktoken_cache)") from None

        def save_hf(out_dir):  # GPT-2's own vocab/merges files: tiktoken's cache holds them (or fetches them)
            from tiktoken.load import read_file_cached
            for fname, url in GPT2_FILES.items():
                with open(os.path.join(out_dir, fname), 'wb') as f:
                    f.write(read_file_cached(url))
        # encode_ordinary: text that happens to contain '<|endoftext|>' is text, not the special token
        return Tokenizer('gpt2', enc.encode_ordinary, enc.decode, enc.eot_token, enc.n_vocab,
                         token_bytes=lambda i: b'' if i == enc.eot_token else enc.decode_single_token_bytes(i),
                         save_hf=save_hf)
    if name in ('gpt-neox-20b', 'pythia'):
        from tokenizers import Tokenizer as HFTokenizer
        if path is not None:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"tokenizer file {path} does not exist: pass the path of the "
                                        f"GPT-NeoX-20B tokenizer.json")
            tok = HFTokenizer.from_file(path)
        else:
            try:
                tok = HFTokenizer.from_pretrained(NEOX_HUB_ID)
            except Exception as e:
                raise FileNotFoundError(f"could not fetch {NEOX_HUB_ID} from the hub ({e}); pass a local "
                                        f"tokenizer.json instead") from None
        eot = tok.token_to_id(EOT_TEXT)
        added = {t.content: t.special for t in tok.get_added_tokens_decoder().values()}
        from tokenizers import decoders
        alphabet = byte_level_alphabet() if isinstance(tok.decoder, decoders.ByteLevel) else None

        def token_bytes(i):
            s = tok.id_to_token(i)
            if s is None or added.get(s):
                return b''  # an id past the vocabulary, or a special token: no text
            return s.encode('utf-8') if s in added or alphabet is None else bytes(alphabet[c] for c in s)
        tok.encode_special_tokens = True  # as gpt2's encode_ordinary: '<|endoftext|>' in a document is text
        # no special tokens are added around the text, so ids are the plain BPE of the document
        return Tokenizer('gpt-neox-20b', lambda s: tok.encode(s, add_special_tokens=False).ids,
                         lambda ids: tok.decode(ids, skip_special_tokens=False), eot, tok.get_vocab_size(),
                         extra={'tokenizer_path': os.path.abspath(path) if path else NEOX_HUB_ID},
                         token_bytes=token_bytes, save_hf=lambda d: tok.save(os.path.join(d, 'tokenizer.json')))
    if name == 'char':
        if not chars:
            raise ValueError("the 'char' tokenizer needs its alphabet (meta.json's 'chars')")
        stoi = {c: i for i, c in enumerate(chars)}
        eot = len(chars)  # one id past the alphabet marks end-of-text and decodes to nothing

        def encode(s):
            try:
                return [stoi[c] for c in s]
            except KeyError as e:
                raise ValueError(f"character {e.args[0]!r} is not in this char tokenizer's alphabet") from None

        def save_hf(out_dir):
            # the `tokenizers` library's spelling of a character vocabulary: one piece per character (any
            # character, newlines included), each looked up in the alphabet; pieces are joined without spaces
            from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
            t = HFTokenizer(models.WordLevel({**stoi, EOT_TEXT: eot}, unk_token=EOT_TEXT))
            t.pre_tokenizer = pre_tokenizers.Split(Regex(r'[\s\S]'), behavior='isolated')
            t.decoder = decoders.Fuse()
            t.add_special_tokens([EOT_TEXT])
            t.save(os.path.join(out_dir, 'tokenizer.json'))
        return Tokenizer('char', encode, lambda ids: ''.join(chars[i] for i in ids if i != eot), eot,
                         len(chars) + 1, extra={'chars': chars},
                         token_bytes=lambda i: b'' if i == eot else chars[i].encode('utf-8'), save_hf=save_hf)
    raise ValueError(f"unknown tokenizer {name!r}: use 'gpt2', 'gpt-neox-20b' or 'char'")


def tokenizer_from_meta(meta_path_or_dict):
    """Rebuild the tokenizer that wrote a dataset, from its meta.json."""
    meta = meta_path_or_dict
    if isinstance(meta, str):
        with open(meta) as f:
            meta = json.load(f)
    path = meta.get('tokenizer_path')
    return get_tokenizer(meta['tokenizer'], path=None if path in (None, NEOX_HUB_ID) else path,
                         chars=meta.get('chars'))


def tokenizer_record(source):
    """What names a model's tokenizer, given hf_io.load_model's source: the meta.json (a dict) of the dataset a
    train.py checkpoint was trained on, or what a model directory's record says (a meta.json dict, or a name,
    completed from the record's data_dir/meta.json when that dataset used the same tokenizer); None when nothing
    does. Scripts that write model directories store it as the record's 'tokenizer'."""
    if source['checkpoint'] is None:
        record = source['record']
        name, data_dir = record.get('tokenizer'), record.get('data_dir')
        if not isinstance(name, str) or not data_dir:
            return name
    else:  # a name alone cannot rebuild a char alphabet or find a tokenizer file: the dataset's meta.json can
        name, data_dir = None, (source['checkpoint'].get('config') or {}).get('data_dir')
    path = os.path.join(data_dir or '', 'meta.json')
    if not data_dir or not os.path.isfile(path):
        return name
    with open(path) as f:
        meta = json.load(f)
    return meta if name in (None, meta.get('tokenizer')) else name


def model_tokenizer(arch, source, name=None, path=None):
    """The tokenizer of a model loaded by hf_io.load_model, the one rule sample.py, eval.py and every exporter use:
    a tokenizer named here (name, path); else the model's record (a checkpoint's dataset meta.json, a directory's
    growing_sparse record); else a tokenizer.json next to the weights; else the family's own (gpt2: GPT-2 BPE;
    gpt_neox: GPT-NeoX-20B from path or the hub). ValueError / FileNotFoundError when none can be built."""
    meta = tokenizer_record(source)
    if name is not None:
        return get_tokenizer(name, path=path, chars=meta.get('chars') if isinstance(meta, dict) else None)
    if isinstance(meta, dict):
        return tokenizer_from_meta({**meta, 'tokenizer_path': path} if path else meta)
    model_dir = source['path'] if source['checkpoint'] is None else None
    if source['checkpoint'] is not None and meta is None:
        raise ValueError(f"{source['path']} was trained on data_dir="
                         f"{source['checkpoint']['config'].get('data_dir')!r}, which has no meta.json here to name the "
                         f"tokenizer: pass --tokenizer=... (and --tokenizer_path=...)")
    local = os.path.join(model_dir, 'tokenizer.json') if model_dir else None
    local = local if local and os.path.exists(local) else None
    name = meta or (None if local else {'gpt2': 'gpt2', 'gpt_neox': 'gpt-neox-20b'}[arch])
    if name is None or name in ('gpt-neox-20b', 'pythia'):  # any `tokenizers` tokenizer.json loads this way
        return get_tokenizer('gpt-neox-20b', path=path or local)
    if name == 'gpt2':
        return get_tokenizer('gpt2')
    raise ValueError(f"{model_dir}: config.json names tokenizer {name!r} but not its alphabet or file (its data_dir "
                     f"has no meta.json here): pass --tokenizer=... and --tokenizer_path=...")
