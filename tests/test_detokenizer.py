import random

import pytest
from transformers import AutoTokenizer

from inference.detokenizer import ByteDetokenizer, Detokenizers, TokenBytes, WindowDetokenizer

TEXT = "Café 🙂 日本語 — naïve 👩‍👩‍👧 done"
VARIED = [
    TEXT,
    "def f(x):\n\treturn x ** 2  # square\n\n\n    indented   spaces ",
    "Ελληνικά, русский, עברית, العربية, हिन्दी, ไทย, 한국어, 中文（全角），emoji: 🇫🇷🏳️‍🌈🤖🧑🏽‍💻",
    "combining: e\u0301 a\u0308, zero width\u200bjoiner, BOM\ufeff, replacement \ufffd itself",
    "<tool_call>{\"name\": \"x\"}</tool_call> and [PAD151700] look-alikes",
]


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="module")
def detokenizers(tokenizer):
    return Detokenizers(tokenizer)


def pieces_of(detokenizer, ids):
    return [detokenizer.add(i) for i in ids] + [detokenizer.flush()]


def test_the_default_tokenizer_gets_the_byte_table(detokenizers):
    assert isinstance(detokenizers.new(), ByteDetokenizer)


def test_pieces_never_split_a_multibyte_character(tokenizer, detokenizers):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    # The byte-level BPE really does cut characters: some single tokens decode to U+FFFD.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    pieces = pieces_of(detokenizers.new(), ids)
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == TEXT
    assert len([p for p in pieces if p]) > 5


@pytest.mark.parametrize("text", VARIED)
def test_the_pieces_join_to_what_decode_gives(tokenizer, detokenizers, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert "".join(pieces_of(detokenizers.new(), ids)) == tokenizer.decode(ids, skip_special_tokens=True)


def test_it_agrees_with_decode_on_every_single_token(tokenizer, detokenizers):
    """Every id of the vocabulary alone (partial UTF-8 sequences, special and added tokens, padding)."""
    ids = list(range(len(tokenizer)))
    expected = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    table = detokenizers.token_bytes
    assert [table[i].decode("utf-8", errors="replace") for i in ids] == expected


def test_it_agrees_with_decode_on_random_token_runs(tokenizer, detokenizers):
    """Runs of random ids cut characters anywhere, leave some unfinished, mix in special tokens."""
    rng = random.Random(21)
    specials = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|im_start|>", "<tool_call>")]
    for _ in range(300):
        ids = [rng.choice(specials) if rng.random() < 0.05 else rng.randrange(len(tokenizer))
               for _ in range(rng.randrange(1, 12))]
        assert "".join(pieces_of(detokenizers.new(), ids)) == tokenizer.decode(ids, skip_special_tokens=True), ids


def test_an_unfinished_character_is_held_then_ends_as_a_replacement(tokenizer, detokenizers):
    emoji = tokenizer.encode("🦩", add_special_tokens=False)  # a flamingo: two tokens
    assert len(emoji) > 1
    detokenizer = detokenizers.new()
    assert [detokenizer.add(i) for i in emoji[:-1]] == [""] * (len(emoji) - 1)
    assert detokenizer.flush() == "\ufffd" == tokenizer.decode(emoji[:-1])


def test_ids_beyond_the_vocabulary_give_nothing(detokenizers):
    assert detokenizers.token_bytes[10**7] == b"" == detokenizers.token_bytes[-1]


def test_a_tokenizer_that_is_not_byte_level_decodes_through_windows(tokenizer):
    class NotByteLevel:
        def __init__(self, inner):
            self.decode = inner.decode

    assert TokenBytes.of(NotByteLevel(tokenizer)) is None
    detokenizer = Detokenizers(NotByteLevel(tokenizer)).new()
    assert isinstance(detokenizer, WindowDetokenizer)
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert "".join(pieces_of(detokenizer, ids)) == TEXT
