import re
from pathlib import Path

import torch

from .errors import EngineError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(requested):
    """'auto' -> cuda:0 when torch sees a GPU, else cpu; 'cpu' and 'cuda:N' are taken as given."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", requested)
    if not match:
        raise EngineError(f"device must be 'auto', 'cpu' or 'cuda:N', not {requested!r}")
    index = int(match.group(1) or 0)
    if not torch.cuda.is_available():
        raise EngineError(f"device {requested!r} was requested but torch sees no GPU on this machine")
    if index >= torch.cuda.device_count():
        raise EngineError(
            f"device {requested!r} was requested but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    return torch.device(f"cuda:{index}")


def resolve_dtype(requested, device):
    """'auto' -> bfloat16 on a GPU and on a CPU with native bf16 arithmetic, else float32.
    (bf16 passed the quality gate against fp32, docs/quality-gate.json; where the CPU only
    emulates it, it is slower than fp32.)"""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" or cpu_has_native_bf16() else torch.float32
    try:
        return _DTYPES[requested]
    except KeyError:
        raise EngineError(f"dtype must be one of auto, {', '.join(_DTYPES)}; not {requested!r}") from None


def cpu_has_native_bf16(cpuinfo=Path("/proc/cpuinfo")):
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16; Linux only)."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
