"""Which engine a worker runs, from the settings: the built-in one (inference.load_engine), or one
that streams from an upstream OpenAI-compatible server (inference.upstream)."""
from django.conf import settings

from inference import EngineConfig, load_engine


def engine_config_from_settings():
    return EngineConfig(
        model=settings.CHAT_MODEL,
        device=settings.CHAT_DEVICE,
        dtype=settings.CHAT_DTYPE,
        cache_dir=settings.CHAT_MODEL_CACHE,
        context_window=settings.CHAT_CONTEXT_WINDOW,
        max_new_tokens_limit=settings.CHAT_MAX_NEW_TOKENS_LIMIT,
        quantize=settings.CHAT_QUANTIZE,
        max_batch_size=settings.CHAT_MAX_BATCH_SIZE,
        max_cache_tokens=settings.CHAT_MAX_CACHE_TOKENS,
        prefill_chunk_tokens=settings.CHAT_PREFILL_CHUNK_TOKENS,
    )


def load_engine_from_settings(upstream_url=None):
    """The built-in engine, or, with an upstream URL (argument or CHAT_UPSTREAM_URL), an engine that
    streams replies from that OpenAI-compatible server."""
    upstream_url = upstream_url or settings.CHAT_UPSTREAM_URL
    if upstream_url:
        from inference.upstream import UpstreamConfig, UpstreamEngine

        return UpstreamEngine(UpstreamConfig(
            url=upstream_url, api_key=settings.CHAT_UPSTREAM_API_KEY, model=settings.CHAT_UPSTREAM_MODEL,
            max_batch_size=settings.CHAT_UPSTREAM_MAX_IN_FLIGHT, max_new_tokens_limit=settings.CHAT_MAX_NEW_TOKENS_LIMIT,
            stall_timeout=settings.CHAT_STALL_TIMEOUT))
    return load_engine(engine_config_from_settings())
