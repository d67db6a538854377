"""Prometheus metrics (prometheus_client). Each web process counts what passes through it;
the workers' figures come from their heartbeats in Redis, so one scrape of any web process
shows every worker, labelled by worker id."""
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

TURNS = Counter("chat_turns_total", "Turns started, by kind", ["kind"])
ERRORS = Counter("chat_errors_total", "Errors answered to clients, by code", ["code"])
ACTIVE_STREAMS = Gauge("chat_active_streams", "Replies this process is relaying right now")
TIME_TO_FIRST_TOKEN = Histogram("chat_time_to_first_token_seconds", "From queueing a turn to its first token",
                                buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
TOKENS_PER_SECOND = Histogram("chat_tokens_per_second", "Streaming speed of each finished reply",
                              buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
REPLIES = Counter("chat_replies_total", "Replies ended, by finish reason", ["finish_reason"])


class TurnTiming:
    """The timings of one turn as this process relays it: feeds the histograms and the gauge."""

    def __init__(self):
        self.queued_at, self.first_token_at, self.open = time.monotonic(), None, True
        ACTIVE_STREAMS.inc()

    def token(self):
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
            TIME_TO_FIRST_TOKEN.observe(self.first_token_at - self.queued_at)

    def done(self, event):
        REPLIES.labels(event["finish_reason"]).inc()
        tokens = event["usage"]["completion_tokens"]
        if self.first_token_at is not None and tokens > 1:
            TOKENS_PER_SECOND.observe((tokens - 1) / max(1e-3, time.monotonic() - self.first_token_at))
        self.close()

    def close(self):
        if self.open:
            self.open = False
            ACTIVE_STREAMS.dec()


class _ClusterCollector:
    """The shared queue and every worker, from a snapshot taken by the /metrics view."""

    def __init__(self, queue_depth, workers):
        self.queue_depth, self.workers = queue_depth, workers

    def collect(self):
        waiting, taken = self.queue_depth
        queue = GaugeMetricFamily("chat_queue_depth", "Requests in the shared queue", labels=["state"])
        queue.add_metric(["waiting"], waiting)
        queue.add_metric(["taken"], taken)
        yield queue
        active = GaugeMetricFamily("chat_worker_active_replies", "Replies in the worker's batch", labels=["worker"])
        waiting_here = GaugeMetricFamily("chat_worker_waiting_replies", "Replies waiting inside the worker",
                                         labels=["worker"])
        replies = CounterMetricFamily("chat_worker_replies", "Replies the worker finished", labels=["worker", "finish_reason"])
        tokens = CounterMetricFamily("chat_worker_generated_tokens", "Tokens the worker generated", labels=["worker"])
        lookups = CounterMetricFamily("chat_worker_prefix_cache_lookups",
                                      "Replies admitted, by whether their prompt began with cached tokens",
                                      labels=["worker", "result"])
        reused = CounterMetricFamily("chat_worker_prefix_cache_reused_tokens",
                                     "Prompt tokens taken from the KV cache instead of read", labels=["worker"])
        evictions = CounterMetricFamily("chat_worker_prefix_cache_evictions",
                                        "Cached replies dropped (wholly or beyond a match) to make room", labels=["worker"])
        routed = CounterMetricFamily("chat_worker_routed_turns",
                                     "Turns of conversations warm on another worker: handed over to it, received "
                                     "from one, or handed back for want of room", labels=["worker", "outcome"])
        for info in self.workers:
            active.add_metric([info["id"]], info.get("active", 0))
            waiting_here.add_metric([info["id"]], info.get("waiting", 0))
            tokens.add_metric([info["id"]], info.get("tokens", 0))
            for reason, count in info.get("replies", {}).items():
                replies.add_metric([info["id"], reason], count)
            cache = info.get("prefix_cache") or {}
            if cache:
                lookups.add_metric([info["id"], "hit"], cache.get("hits", 0))
                lookups.add_metric([info["id"], "miss"], cache.get("misses", 0))
                reused.add_metric([info["id"]], cache.get("reused_tokens", 0))
                evictions.add_metric([info["id"]], cache.get("evictions", 0))
            for outcome, count in (info.get("routing") or {}).items():
                routed.add_metric([info["id"], outcome], count)
        yield from (active, waiting_here, replies, tokens, lookups, reused, evictions, routed)


def exposition(queue_depth, workers):
    from prometheus_client import REGISTRY

    cluster = CollectorRegistry(auto_describe=False)
    cluster.register(_ClusterCollector(queue_depth, workers))
    return generate_latest(REGISTRY) + generate_latest(cluster)
