"""Generated token ids to text pieces that never split a character, at a dictionary look-up per token.

A byte-level BPE tokenizer (GPT-2's scheme: Qwen, Llama 3, Mistral's newer ones) spells every
token as bytes, and can end a token in the middle of a UTF-8 sequence. For those, TokenBytes
maps each id to its bytes once, when the engine loads, and a reply's ByteDetokenizer feeds them to
an incremental UTF-8 decoder, which holds back an unfinished character until its last byte comes:
the pieces join to exactly what tokenizer.decode(ids, skip_special_tokens=True) gives. Other
tokenizers (SentencePiece's) decode a short window of ids per token instead (WindowDetokenizer,
the approach of text-generation-inference's decode_token).
"""
import codecs

from tokenizers import decoders


def _byte_level_alphabet():
    """GPT-2's byte-level alphabet: the character standing for each byte in a token's spelling.
    Printable bytes stand for themselves; the others are moved to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    moved = [b for b in range(256) if b not in printable]
    alphabet = {chr(b): b for b in printable}
    alphabet.update({chr(256 + n): b for n, b in enumerate(moved)})
    return alphabet


_ALPHABET = _byte_level_alphabet()
_AS_LATIN1 = str.maketrans({char: chr(byte) for char, byte in _ALPHABET.items()})  # then .encode("latin-1")


class TokenBytes:
    """Each token id's bytes (b'' for special tokens, which a reply's text skips)."""

    def __init__(self, table):
        self.table = table

    @classmethod
    def of(cls, tokenizer):
        """The table for a byte-level tokenizer; None for any other (or one whose decode rewrites text)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
            return None
        if not isinstance(backend.decoder, decoders.ByteLevel):
            return None
        vocab, added_tokens = backend.get_vocab(with_added_tokens=False), tokenizer.added_tokens_decoder
        table = [b""] * (max([len(tokenizer) - 1, *vocab.values(), *added_tokens]) + 1)
        for token, token_id in vocab.items():
            # a spelling outside the alphabet is taken as plain text, as the tokenizers library does
            spelled = _ALPHABET.keys() >= set(token)
            table[token_id] = token.translate(_AS_LATIN1).encode("latin-1") if spelled else token.encode()
        for token_id, added in added_tokens.items():
            table[token_id] = b"" if added.special else added.content.encode()
        return cls(table)

    def __getitem__(self, token_id):
        return self.table[token_id] if 0 <= token_id < len(self.table) else b""


class ByteDetokenizer:
    def __init__(self, token_bytes):
        self.token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id):
        """The text this token completes ('' while a character is pending)."""
        return self._utf8.decode(self.token_bytes[token_id])

    def flush(self):
        """Whatever is still held back when the reply ends (an unfinished character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


class WindowDetokenizer:
    """For tokenizers that are not byte-level: decode a short window of ids per token and hold a
    token back while the window's text ends in U+FFFD (a character not yet complete)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, token_id):
        self.tokens.append(token_id)
        prefix_text = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self):
        prefix_text = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.tokens)
        return new_text[len(prefix_text) :]

    def _decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""


class Detokenizers:
    """Made once per loaded tokenizer (the table is built here); new() gives each reply its own."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.token_bytes = TokenBytes.of(tokenizer)

    def new(self):
        return ByteDetokenizer(self.token_bytes) if self.token_bytes else WindowDetokenizer(self.tokenizer)

    def bytes_of(self, token_id):
        """One token's bytes on its own (a non-byte-level tokenizer's decode of it)."""
        if self.token_bytes:
            return self.token_bytes[token_id]
        return self.tokenizer.decode([token_id], skip_special_tokens=True).encode()

