"""Model loading, prompting and streamed generation. Plain Python: no Django here.

    from inference import load_engine
    engine = load_engine()
    for piece in engine.stream_reply("What is the capital of France?"): print(piece, end="", flush=True)

Names are imported lazily so that light modules (sampling, errors) can be used by web
processes without importing torch.
"""
import importlib

_EXPORTS = {
    "DEFAULT_MODEL": "config", "EngineConfig": "config",
    "Engine": "engine", "load_engine": "engine", "load_model": "engine",
    "EngineError": "errors",
    "ReplyStream": "generation",
    "PromptTooLong": "prompt", "build_prompt": "prompt",
    "InvalidParameters": "sampling", "SamplingParams": "sampling",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
