"""How the service has been doing, day by day, from the database (so the figures survive
restarts): turns, finish reasons and error causes, thumbs-down rate, time to first token and
streaming speed percentiles, active users; and the page's charts of them (chat.svg_charts draws,
chat.admin serves the page)."""
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from . import svg_charts
from .formatting import format_percent, format_rate, format_seconds
from .models import Message, decode_rate

DEFAULT_DAYS = 14
MAX_DAYS = 366
PERCENTILES = (50, 90)


@dataclass
class Figures:
    days: list  # datetime.date, oldest first, one per day of the period
    turns: list  # replies started per day (regenerations included)
    finish_reasons: list  # (label, replies) over the period, most first
    error_causes: list  # (cause, replies) over the period, most first
    thumbs_down_rate: list  # per day: thumbs-down / rated replies, None where nothing was rated
    rated: list  # rated replies per day
    first_token_ms: dict  # percentile -> per-day values (None where no reply)
    tokens_per_second: dict  # percentile -> per-day values
    active_users: list  # distinct signed-in users and guests who sent a message, per day
    totals: dict


def figures(days=DEFAULT_DAYS, today=None):
    """The dashboard's figures for the `days` days up to and including `today` (the current date)."""
    today = today or timezone.localdate()
    day_list = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    since = timezone.make_aware(datetime.combine(day_list[0], time.min))
    replies = Message.objects.filter(role=Message.Role.ASSISTANT, created__gte=since)
    per_day = {row["day"]: row for row in replies.annotate(day=TruncDate("created")).values("day").annotate(
        turns=Count("id"), rated=Count("id", filter=Q(rating__isnull=False)),
        down=Count("id", filter=Q(rating=-1)))}
    timings = _timings_per_day(replies)
    users = _active_users(since)

    def daily(key):
        return [per_day.get(day, {}).get(key, 0) for day in day_list]

    down, rated = daily("down"), daily("rated")
    every_timing = [timing for day in timings.values() for timing in day]
    return Figures(
        days=day_list,
        turns=daily("turns"),
        finish_reasons=finish_reasons(replies),
        error_causes=error_causes(replies),
        thumbs_down_rate=[d / r if r else None for d, r in zip(down, rated)],
        rated=rated,
        first_token_ms={p: [percentile([t[0] for t in timings.get(day, [])], p) for day in day_list]
                        for p in PERCENTILES},
        tokens_per_second={p: [percentile([t[1] for t in timings.get(day, [])], p) for day in day_list]
                           for p in PERCENTILES},
        active_users=[users.get(day, 0) for day in day_list],
        totals={
            "turns": sum(daily("turns")),
            "errors": replies.filter(finish_reason=Message.FinishReason.ERROR).count(),
            "thumbs_down_rate": sum(down) / sum(rated) if sum(rated) else None,
            "first_token_ms": percentile([t[0] for t in every_timing], 50),
            "tokens_per_second": percentile([t[1] for t in every_timing], 50),
            "active_users": _distinct_users(since),
        },
    )


def charts(figures):
    """The dashboard page's headline figures and charts (chat.svg_charts), for its template."""
    labels = [day.strftime("%b %d") for day in figures.days]
    keys = [day.isoformat() for day in figures.days]
    totals = figures.totals

    def percentiles(values_by_percentile):
        return [(f"p{p}", values) for p, values in values_by_percentile.items()]

    return {
        "headline": [
            ("Turns", str(totals["turns"])),
            ("Errors", str(totals["errors"])),
            ("Thumbs-down rate", format_percent(totals["thumbs_down_rate"])),
            ("Median time to first token", format_seconds(totals["first_token_ms"])),
            ("Median speed", format_rate(totals["tokens_per_second"])),
            ("Active users", str(totals["active_users"])),
        ],
        "charts": [
            ("Turns per day", svg_charts.column_chart("turns", "Turns per day", labels, keys, figures.turns)),
            ("Replies by finish reason", svg_charts.bar_list(
                "finish-reasons", "Replies by finish reason", figures.finish_reasons)),
            ("Errors by cause", svg_charts.bar_list("errors", "Errors by cause", figures.error_causes)),
            ("Thumbs-down rate (of rated replies)", svg_charts.column_chart(
                "thumbs-down", "Thumbs-down rate per day", labels, keys, figures.thumbs_down_rate, format_percent)),
            ("Time to first token (seconds)", svg_charts.line_chart(
                "first-token", "Time to first token per day", labels, keys,
                percentiles(figures.first_token_ms), format_seconds, lambda ms: f"{ms / 1000:g}")),
            ("Streaming speed (tokens per second)", svg_charts.line_chart(
                "speed", "Tokens per second per day", labels, keys,
                percentiles(figures.tokens_per_second), format_rate, lambda rate: f"{rate:g}")),
            ("Active users per day", svg_charts.column_chart(
                "active-users", "Active users per day", labels, keys, figures.active_users)),
        ],
    }


def finish_reasons(replies):
    labels = dict(Message.FinishReason.choices)
    rows = replies.values("finish_reason").annotate(n=Count("id")).order_by("-n", "finish_reason")
    return [(labels.get(row["finish_reason"], row["finish_reason"]), row["n"]) for row in rows]


def error_causes(replies):
    """Errors grouped by cause: their detail without the figures in it (timeouts, token counts)
    and without what was kept (`; the text so far is kept`)."""
    causes = {}
    for row in replies.filter(finish_reason=Message.FinishReason.ERROR).values("error_detail").annotate(n=Count("id")):
        cause = error_cause(row["error_detail"])
        causes[cause] = causes.get(cause, 0) + row["n"]
    return sorted(causes.items(), key=lambda item: (-item[1], item[0]))


def error_cause(detail):
    cause = (detail or "").split(";")[0].strip()
    cause = re.sub(r"\d+(\.\d+)?", "N", cause)
    return (cause[:77] + "…" if len(cause) > 78 else cause) or "(no detail)"


def percentile(values, p):
    """The p-th percentile of `values` (linear between the closest ranks), or None if empty."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    rank = (len(values) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def _timings_per_day(replies):
    """day -> [(time to first token in ms, tokens per second or None)] of the replies that streamed."""
    timings = {}
    rows = replies.filter(time_to_first_token_ms__isnull=False).annotate(day=TruncDate("created")).values_list(
        "day", "time_to_first_token_ms", "completion_tokens", "generation_ms")
    for day, first_token_ms, tokens, generation_ms in rows:
        timings.setdefault(day, []).append((first_token_ms, decode_rate(tokens, generation_ms, first_token_ms)))
    return timings


def _user_messages(since):
    return Message.objects.filter(role=Message.Role.USER, created__gte=since)


def _active_users(since):
    rows = _user_messages(since).annotate(day=TruncDate("created")).values("day").annotate(
        users=Count("conversation__user", distinct=True),
        guests=Count("conversation__guest_key", distinct=True, filter=Q(conversation__user__isnull=True)))
    return {row["day"]: row["users"] + row["guests"] for row in rows}


def _distinct_users(since):
    counts = _user_messages(since).aggregate(
        users=Count("conversation__user", distinct=True),
        guests=Count("conversation__guest_key", distinct=True, filter=Q(conversation__user__isnull=True)))
    return counts["users"] + counts["guests"]
