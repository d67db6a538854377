"""The request queue between web processes and inference workers: a Redis Stream with a
consumer group.

Channels' plain channels deliver at most once, with no acknowledgement: a worker that dies
takes the requests it had taken with it. Here a request stays pending (XPENDING) until the
worker that took it acknowledges it, after the reply is stored. When a worker's heartbeat
expires, any live worker claims its pending requests once they have been idle that long
(XPENDING by consumer, page by page, then XCLAIM with that minimum idle time, so two workers
never both get one) and removes the dead consumer from the group: one that had not started is
served again from the start; one that had streamed part of its reply is ended as an error
with the text kept (its tokens were already shown, so it is not silently regenerated).
Each entry is delivered to one consumer of the group, so no request is served twice.
"""
import json
import time

from django.conf import settings
from redis.exceptions import ResponseError

from .live_state import redis_client, worker_is_alive

STREAM = "chat:requests"
SNAPSHOT_SECONDS = 1.0
GROUP = "inference-workers"


async def enqueue(request):
    """Queue a request for the workers; returns its entry id. Admission keeps the waiting ones under
    CHAT_MAX_QUEUED_TURNS and acknowledged ones are deleted, so the length cap only ever bounds a
    stream that something else has filled."""
    cap = 10 * settings.CHAT_MAX_QUEUED_TURNS + 10_000
    return await redis_client().xadd(STREAM, {"request": json.dumps(request)}, maxlen=cap, approximate=True)


async def ensure_group():
    try:
        await redis_client().xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def take(worker_id, count, block_ms=1000):
    """Up to `count` new requests for this worker: [(entry id, request)]."""
    try:
        answer = await redis_client().xreadgroup(GROUP, worker_id, {STREAM: ">"}, count=count, block=block_ms)
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        await ensure_group()  # Redis lost the group (restart or flush): recreate it
        return []
    return [(entry_id, json.loads(fields["request"])) for _, entries in answer or [] for entry_id, fields in entries]


async def acknowledge(entry_id):
    r = redis_client()
    async with r.pipeline(transaction=True) as pipe:
        pipe.xack(STREAM, GROUP, entry_id)
        pipe.xdel(STREAM, entry_id)
        await pipe.execute()


async def claim_from_dead_workers(worker_id, min_idle_seconds, page=100):
    """Take over the pending requests of workers whose heartbeat has expired, then forget those workers.

    Only entries idle for `min_idle_seconds` (the heartbeat's expiry) are claimed: a worker that
    took a request a moment before its first heartbeat is not robbed of it, and when two live
    workers claim at once, XCLAIM's idle check lets only the first one have each entry."""
    r, min_idle_ms = redis_client(), int(min_idle_seconds * 1000)
    try:
        consumers = await r.xinfo_consumers(STREAM, GROUP)
    except ResponseError:
        return []
    claimed = []
    for consumer in consumers:
        name = consumer["name"]
        if name == worker_id or await worker_is_alive(name):
            continue
        start = "-"
        while True:  # page through all of its pending entries, not only the first page
            pending = await r.xpending_range(STREAM, GROUP, min=start, max="+", count=page, consumername=name,
                                             idle=min_idle_ms)
            if not pending:
                break
            entry_ids = [p["message_id"] for p in pending]
            for entry_id, fields in await r.xclaim(STREAM, GROUP, worker_id, min_idle_time=min_idle_ms,
                                                   message_ids=entry_ids):
                if fields:
                    claimed.append((entry_id, json.loads(fields["request"])))
                else:  # deleted from the stream meanwhile: nothing left to serve
                    await acknowledge(entry_id)
            start = f"({entry_ids[-1]}"
        if not await r.xpending_range(STREAM, GROUP, min="-", max="+", count=1, consumername=name):
            await r.xgroup_delconsumer(STREAM, GROUP, name)
    return claimed


async def queue_position(entry_id):
    """1 + how many requests wait ahead of this one for a worker; 0 once a worker has taken it.
    Every waiter of this process reads one snapshot of the queue, taken at most once a second."""
    waiting = await _waiting_snapshot()
    return waiting.get(entry_id, 0)


_snapshot = {"at": 0.0, "waiting": {}}


async def _waiting_snapshot():
    if time.monotonic() - _snapshot["at"] >= SNAPSHOT_SECONDS:
        _snapshot["waiting"], _snapshot["at"] = await _read_waiting(), time.monotonic()
    return _snapshot["waiting"]


async def _read_waiting():
    """{entry id: place in line} of the requests no worker has taken yet, in one read."""
    r = redis_client()
    try:
        groups = await r.xinfo_groups(STREAM)
    except ResponseError:
        return {}
    delivered = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), "0-0")
    entries = await r.xrange(STREAM, min=f"({delivered}", max="+", count=settings.CHAT_MAX_QUEUED_TURNS * 2)
    return {entry_id: place for place, (entry_id, _) in enumerate(entries, start=1)}


async def depth():
    """(waiting for a worker, taken but not yet acknowledged)."""
    r = redis_client()
    try:
        groups = await r.xinfo_groups(STREAM)
    except ResponseError:
        return 0, 0
    for group in groups:
        if group["name"] == GROUP:
            return int(group.get("lag") or 0), int(group["pending"])
    return 0, 0
