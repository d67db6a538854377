"""Figures as people read them, for the admin's transcript and dashboard: `0.61 s`, `5.7 tok/s`."""

MISSING = "–"


def format_seconds(ms):
    """A duration given in milliseconds, in seconds with sensible precision."""
    if ms is None:
        return MISSING
    seconds = ms / 1000
    if seconds < 0.01:
        return "< 0.01 s"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 100:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s"


def format_rate(tokens_per_second):
    if tokens_per_second is None:
        return MISSING
    if tokens_per_second < 100:
        return f"{tokens_per_second:.1f} tok/s"
    return f"{tokens_per_second:.0f} tok/s"


def format_percent(fraction):
    if fraction is None:
        return MISSING
    return f"{fraction * 100:.0f}%" if fraction == 0 or fraction >= 0.1 else f"{fraction * 100:.1f}%"


PARAMS_ORDER = ["temperature", "top_p", "max_new_tokens", "seed"]


def format_params(params):
    """A reply's sampling parameters on one line (`temperature 0.7 · top_p 0.95 · max_new_tokens 24`);
    the system prompt is left out (the transcript shows it on its own)."""
    params = params or {}
    names = [n for n in PARAMS_ORDER if n in params] + sorted(set(params) - set(PARAMS_ORDER) - {"system"})
    return " · ".join(f"{name} {_number(params[name])}" for name in names if params[name] is not None)


def _number(value):
    return f"{value:g}" if isinstance(value, float) else str(value)
