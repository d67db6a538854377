"""The request queue between web processes and inference workers: a Redis Stream per model, each
with a consumer group, so a turn is only ever taken by a worker serving its model and each model's
turns are served first come, first served.

Channels' plain channels deliver at most once, with no acknowledgement: a worker that dies
takes the requests it had taken with it. Here a request stays pending (XPENDING) until the
worker that took it acknowledges it, after the reply is stored. When a worker's heartbeat
has been missing for a grace period (seen missing by the claimer, on its own clock, so that a Redis
pause that expired every heartbeat at once robs no live worker), any live worker claims its pending
requests once they have been idle that long (XPENDING by consumer, page by page, then XCLAIM with
that minimum idle time, so two workers never both get one) and removes the dead consumer from the
group: one that had not started is served again from the start; one that had streamed part of its
reply is ended as an error with the text kept (its tokens were already shown, so it is not silently
regenerated). Whoever serves a reply first holds it (chat.live_state.LiveReply.take_serving, kept
while it generates), so a request claimed from a worker that was only slow is dropped by whichever
of the two does not hold it: a reply is served once. A worker
reads, claims and acknowledges only on its own model's stream (`model=` below; without one, the
plain STREAM, which no worker reads).
"""
import json
import time

from django.conf import settings
from redis.exceptions import ResponseError

from .live_state import redis_client, worker_is_alive

STREAM = "chat:requests"  # requests that name no model; a model's stream is "chat:requests:<model>"
STREAMS = "chat:request-streams"  # every stream requests were put in, for depth()
SNAPSHOT_SECONDS = 1.0
GROUP = "inference-workers"


def stream_of(model=None):
    """The stream of one model's requests."""
    return f"{STREAM}:{model}" if model else STREAM


async def enqueue(request):
    """Queue a request for the workers serving request["model"]; returns its entry id. Admission keeps
    the waiting ones under CHAT_MAX_QUEUED_TURNS and acknowledged ones are deleted, so the length cap
    only ever bounds a stream that something else has filled."""
    cap = 10 * settings.CHAT_MAX_QUEUED_TURNS + 10_000
    stream = stream_of(request.get("model"))
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.sadd(STREAMS, stream)
        pipe.xadd(stream, {"request": json.dumps(request)}, maxlen=cap, approximate=True)
        _, entry_id = await pipe.execute()
    return entry_id


async def ensure_group(model=None):
    stream = stream_of(model)
    try:
        await redis_client().xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    await redis_client().sadd(STREAMS, stream)


async def take(worker_id, count, block_ms=1000, model=None):
    """Up to `count` new requests for this worker (serving `model`): [(entry id, request)]."""
    try:
        answer = await redis_client().xreadgroup(GROUP, worker_id, {stream_of(model): ">"}, count=count,
                                                 block=block_ms)
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        await ensure_group(model)  # Redis lost the group (restart or flush): recreate it
        return []
    return [(entry_id, json.loads(fields["request"])) for _, entries in answer or [] for entry_id, fields in entries]


async def hand_over(entry_id, to_worker, model=None):
    """Make a request this worker took pending for `to_worker` instead (XCLAIM): it is still served
    once, by whoever holds it, and adopted like any other if that worker dies. False when the entry
    is gone (acknowledged meanwhile)."""
    claimed = await redis_client().xclaim(stream_of(model), GROUP, to_worker, min_idle_time=0, message_ids=[entry_id])
    return any(fields for _, fields in claimed)


async def own_pending(worker_id, model=None, count=1000):
    """Every request pending for this worker (taken, or handed to it, and not yet acknowledged)."""
    try:
        answer = await redis_client().xreadgroup(GROUP, worker_id, {stream_of(model): "0"}, count=count)
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return []
    return [(entry_id, json.loads(fields["request"]))
            for _, entries in answer or [] for entry_id, fields in entries if fields]


async def acknowledge(entry_id, model=None):
    r, stream = redis_client(), stream_of(model)
    async with r.pipeline(transaction=True) as pipe:
        pipe.xack(stream, GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()


async def claim_from_dead_workers(worker_id, min_idle_seconds, page=100, model=None, grace_seconds=0,
                                  absent_since=None):
    """Take over the pending requests of workers whose heartbeat has expired, then forget those workers.

    Only entries idle for `min_idle_seconds` (the heartbeat's expiry) are claimed: a worker that
    took a request a moment before its first heartbeat is not robbed of it, and when two live
    workers claim at once, XCLAIM's idle check lets only the first one have each entry. With
    `grace_seconds`, a worker is only dead once this caller has seen it missing for that long
    (`absent_since`, the caller's own {worker id: monotonic time first seen missing}). Only the
    stream of `model` (this worker's) is looked at: a dead worker's requests wait for one serving its
    model."""
    r, min_idle_ms, stream = redis_client(), int(min_idle_seconds * 1000), stream_of(model)
    absent_since = {} if absent_since is None else absent_since
    try:
        consumers = await r.xinfo_consumers(stream, GROUP)
    except ResponseError:
        return []
    claimed = []
    for consumer in consumers:
        name = consumer["name"]
        if name == worker_id or await worker_is_alive(name):
            absent_since.pop(name, None)
            continue
        missing_since = absent_since.setdefault(name, time.monotonic())
        if time.monotonic() - missing_since < grace_seconds:
            continue
        start = "-"
        while True:  # page through all of its pending entries, not only the first page
            pending = await r.xpending_range(stream, GROUP, min=start, max="+", count=page, consumername=name,
                                             idle=min_idle_ms)
            if not pending:
                break
            entry_ids = [p["message_id"] for p in pending]
            for entry_id, fields in await r.xclaim(stream, GROUP, worker_id, min_idle_time=min_idle_ms,
                                                   message_ids=entry_ids):
                if fields:
                    claimed.append((entry_id, json.loads(fields["request"])))
                else:  # deleted from the stream meanwhile: nothing left to serve
                    await acknowledge(entry_id, model)
            start = f"({entry_ids[-1]}"
        if not await r.xpending_range(stream, GROUP, min="-", max="+", count=1, consumername=name):
            await r.xgroup_delconsumer(stream, GROUP, name)
            absent_since.pop(name, None)
    return claimed


async def queue_position(entry_id, model=None):
    """1 + how many requests for the same model wait ahead of this one; 0 once a worker has taken it.
    Every waiter of this process reads one snapshot of its model's queue, taken at most once a second."""
    waiting = await _waiting_snapshot(stream_of(model))
    return waiting.get(entry_id, 0)


_snapshots = {}  # stream -> {"at": monotonic time, "waiting": {entry id: place}}


async def _waiting_snapshot(stream):
    snapshot = _snapshots.setdefault(stream, {"at": 0.0, "waiting": {}})
    if time.monotonic() - snapshot["at"] >= SNAPSHOT_SECONDS:
        snapshot["waiting"], snapshot["at"] = await _read_waiting(stream), time.monotonic()
    return snapshot["waiting"]


async def _read_waiting(stream):
    """{entry id: place in line} of the requests no worker has taken yet, in one read."""
    r = redis_client()
    try:
        groups = await r.xinfo_groups(stream)
    except ResponseError:
        return {}
    delivered = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), "0-0")
    entries = await r.xrange(stream, min=f"({delivered}", max="+", count=settings.CHAT_MAX_QUEUED_TURNS * 2)
    return {entry_id: place for place, (entry_id, _) in enumerate(entries, start=1)}


async def depth():
    """(waiting for a worker, taken but not yet acknowledged), over every model's stream."""
    r = redis_client()
    waiting = pending = 0
    for stream in await r.smembers(STREAMS):
        try:
            groups = await r.xinfo_groups(stream)
        except ResponseError:  # gone (Redis flushed or restarted): nothing waits there
            continue
        for group in groups:
            if group["name"] == GROUP:
                waiting, pending = waiting + int(group.get("lag") or 0), pending + int(group["pending"])
    return waiting, pending
