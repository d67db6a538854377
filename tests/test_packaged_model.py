import hashlib
import time

import pytest

from inference import EngineError
from inference import packaged_model


def test_it_assembles_the_parts_in_order_and_checks_the_sha256(tmp_path):
    parts = []
    for n, data in enumerate([b"first-", b"second-", b"third"], start=1):
        parts.append(tmp_path / f"part{n:02d}.bin")
        parts[-1].write_bytes(data)
    expected = hashlib.sha256(b"first-second-third").hexdigest()
    out = packaged_model.assemble_gguf(tmp_path / "model.gguf", parts, expected)
    assert out.read_bytes() == b"first-second-third"


def test_it_refuses_parts_whose_checksum_does_not_match(tmp_path):
    part = tmp_path / "part01.bin"
    part.write_bytes(b"tampered")
    with pytest.raises(EngineError, match="do not add up to the expected file"):
        packaged_model.assemble_gguf(tmp_path / "model.gguf", [part], packaged_model.GGUF_SHA256)
    assert not (tmp_path / "model.gguf").exists()


def test_the_installed_parts_are_the_expected_size():
    assert sum(p.stat().st_size for p in packaged_model.part_paths()) == packaged_model.GGUF_SIZE


def test_a_converted_model_is_reused_without_converting_again(default_model_dir, monkeypatch):
    def refuse(*args):
        raise AssertionError("the model was converted a second time")

    monkeypatch.setattr(packaged_model, "_convert_gguf", refuse)
    monkeypatch.setattr(packaged_model, "assemble_gguf", refuse)
    started = time.monotonic()
    from django.conf import settings

    assert packaged_model.ensure_converted(settings.CHAT_MODEL_CACHE) == default_model_dir
    assert time.monotonic() - started < 1
    assert (default_model_dir / "model.safetensors").stat().st_size > 400_000_000
