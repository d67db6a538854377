import pytest
from transformers import AutoTokenizer

from inference.detokenizer import IncrementalDetokenizer

TEXT = "Café 🙂 日本語 — naïve 👩‍👩‍👧 done"


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def test_pieces_never_split_a_multibyte_character(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    # The byte-level BPE really does cut characters: some single tokens decode to U+FFFD.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.add(i) for i in ids] + [detokenizer.flush()]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == TEXT
    assert len([p for p in pieces if p]) > 5
