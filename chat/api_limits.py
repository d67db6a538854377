"""An API key's limits, as OpenAI counts them: requests and tokens per minute (sliding windows in Redis),
and calls in flight (counted in the turn's transaction: chat.turns.refuse_if_key_busy).

Each limit is the key's own (set by staff in the admin) or the configured default. A call over one is
refused before anything is stored, with OpenAI's 429 (code `rate_limit_exceeded`, `Retry-After`), and
every answer to a key's call carries the `x-ratelimit-*` headers, so a client can pace itself.
"""
import math
import time
from dataclasses import dataclass

from .live_state import add_to_window, release_window_slot, take_window_slot, window_entries

WINDOW = 60  # seconds: "per minute"


def _requests_key(key):
    return f"chat:apikey:{key.pk}:requests"


def _tokens_key(key):
    return f"chat:apikey:{key.pk}:tokens"


class KeyRateLimited(Exception):
    """A call over one of its key's limits: `kind` is "requests" or "tokens" (OpenAI's error type)."""

    def __init__(self, kind, detail, retry_after):
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


async def take_request(key):
    """Admit one call of `key` by its tokens and requests per minute; returns its request slot (give it
    back with release_request if the call is refused later), or raises KeyRateLimited."""
    tokens = await _token_usage(key)
    if tokens.used >= tokens.limit:
        raise KeyRateLimited("tokens", f"Rate limit reached for API key {key.name!r} on tokens per min (TPM): "
                             f"Limit {tokens.limit}, Used {tokens.used}. Please try again in {tokens.retry_after}s.",
                             tokens.retry_after)
    slot, retry_after = await take_window_slot(_requests_key(key), key.limit_requests, WINDOW)
    if retry_after:
        raise KeyRateLimited("requests", f"Rate limit reached for API key {key.name!r} on requests per min (RPM): "
                             f"Limit {key.limit_requests}, Used {key.limit_requests}, Requested 1. Please try again "
                             f"in {retry_after}s.", retry_after)
    return slot


async def release_request(key, slot):
    await release_window_slot(_requests_key(key), slot)


def in_flight_refusal(key):
    """The refusal of a call while `key` has as many generating as it may (raised in the turn's transaction)."""
    return KeyRateLimited("requests", f"Rate limit reached for API key {key.name!r} on requests in flight: Limit "
                          f"{key.limit_in_flight}. Wait for one to finish, then try again.", 1)


async def record_tokens(key_id, tokens):
    """Count a finished call's prompt + completion tokens against its key's tokens per minute."""
    if tokens:
        await add_to_window(f"chat:apikey:{key_id}:tokens", tokens, WINDOW)


@dataclass
class _Usage:
    limit: int
    used: int
    reset: float  # seconds until the window is empty again
    retry_after: int = 0  # seconds until it is under its limit again


async def _request_usage(key):
    entries = await window_entries(_requests_key(key), WINDOW)
    newest = entries[-1][1] if entries else None
    return _Usage(key.limit_requests, len(entries), newest + WINDOW - time.time() if newest else 0)


async def _token_usage(key):
    entries = [(int(member.split(":", 1)[0]), added) for member, added in await window_entries(_tokens_key(key), WINDOW)]
    used, now = sum(amount for amount, _ in entries), time.time()
    usage = _Usage(key.limit_tokens, used, entries[-1][1] + WINDOW - now if entries else 0)
    for amount, added in entries:  # the oldest leave first: when is the rest under the limit?
        if used < usage.limit:
            break
        used -= amount
        usage.retry_after = max(1, math.ceil(added + WINDOW - now))
    return usage


async def headers(key):
    """OpenAI's x-ratelimit-* headers of `key` as it stands now."""
    requests, tokens = await _request_usage(key), await _token_usage(key)
    return {
        "x-ratelimit-limit-requests": str(requests.limit),
        "x-ratelimit-remaining-requests": str(max(0, requests.limit - requests.used)),
        "x-ratelimit-reset-requests": _duration(requests.reset),
        "x-ratelimit-limit-tokens": str(tokens.limit),
        "x-ratelimit-remaining-tokens": str(max(0, tokens.limit - tokens.used)),
        "x-ratelimit-reset-tokens": _duration(tokens.reset),
    }


def _duration(seconds):
    """As OpenAI writes it: "1s", "6m0s", "20ms"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
