from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run a model. Built by the caller; inference/ reads no environment."""

    model: str = DEFAULT_MODEL  # "default" (the packaged model), a Hugging Face id, or a folder
    device: str = "auto"  # "auto", "cpu" or "cuda:N"
    dtype: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "float32", "bfloat16", "float16"
    quantize: str = "auto"  # "auto" (inference.quantization.CPU_DEFAULT on a CPU, "none" on a GPU), "none",
    # "int8", "int4": weight-only integer Linear layers (CPU only)
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "chatsite" / "models")
    context_window: int = 0  # 0: the model's own maximum
    max_new_tokens_limit: int = 4096
    max_batch_size: int = 8  # replies decoded together; more wait in line
    max_cache_tokens: int = 65536  # KV-cache budget: prompt + max_new_tokens reserved per reply
    prefill_chunk_tokens: int = 256  # a long prompt is read this many tokens per scheduling round
    read_timeout: float = 600.0  # a reader gives up after this long without a piece
    cuda_graphs: str = "auto"  # "auto": decode steps replayed as CUDA graphs on a GPU; "off"; "eager" (tests)
