"""
The tokenizers the project uses, behind one interface: encode(text) -> ids, decode(ids) -> text,
eot (end-of-text id appended to every document), vocab_size, and meta() to store in meta.json.
- 'gpt2': GPT-2 BPE via tiktoken (offline with TIKTOKEN_CACHE_DIR pointing at a cache)
- 'gpt-neox-20b': Pythia's tokenizer via `tokenizers`, from a local tokenizer.json or the hub
- 'char': the characters of the corpus, plus one extra id for end-of-text
"""
import json
import os

NEOX_HUB_ID = 'EleutherAI/gpt-neox-20b'


class Tokenizer:
    def __init__(self, name, encode, decode, eot, vocab_size, extra=None):
        self.name, self._encode, self._decode = name, encode, decode
        self.eot, self.vocab_size, self.extra = eot, vocab_size, extra or {}

    def encode(self, text):
        return self._encode(text)

    def decode(self, ids):
        return self._decode([int(i) for i in ids])

    def meta(self):
        return dict(tokenizer=self.name, vocab_size=self.vocab_size, eot=self.eot, **self.extra)


def get_tokenizer(name, path=None, chars=None):
    """name: 'gpt2' | 'gpt-neox-20b' | 'char'. path: a local tokenizer.json for gpt-neox-20b.
    chars: the alphabet for 'char' (a string)."""
    if name == 'gpt2':
        import tiktoken
        enc = tiktoken.get_encoding('gpt2')
        # encode_ordinary: text that happens to contain '<|endoftext|>' is text, not the special token
        return Tokenizer('gpt2', enc.encode_ordinary, enc.decode, enc.eot_token, enc.n_vocab)
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
        eot = tok.token_to_id('<|endoftext|>')
        tok.encode_special_tokens = True  # as gpt2's encode_ordinary: '<|endoftext|>' in a document is text
        # no special tokens are added around the text, so ids are the plain BPE of the document
        return Tokenizer('gpt-neox-20b', lambda s: tok.encode(s, add_special_tokens=False).ids,
                         lambda ids: tok.decode(ids, skip_special_tokens=False), eot, tok.get_vocab_size(),
                         extra={'tokenizer_path': os.path.abspath(path) if path else NEOX_HUB_ID})
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
        return Tokenizer('char', encode, lambda ids: ''.join(chars[i] for i in ids if i != eot), eot,
                         len(chars) + 1, extra={'chars': chars})
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
    """What names a model's tokenizer, given model.load_model's source: the meta.json (a dict) of the dataset a
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
