"""The request queue between web processes and inference workers: a Redis Stream with a
consumer group.

Channels' plain channels deliver at most once, with no acknowledgement: a worker that dies
takes the requests it had taken with it. Here a request stays pending (XPENDING) until the
worker that took it acknowledges it, after the reply is stored. When a worker's heartbeat
expires, any live worker claims its pending requests (XCLAIM): one that had not started is
served again from the start; one that had streamed part of its reply is ended as an error
with the text kept (its tokens were already shown, so it is not silently regenerated).
Each entry is delivered to one consumer of the group, so no request is served twice.
"""
import json

from redis.exceptions import ResponseError

from .live_state import redis_client, worker_is_alive

STREAM = "chat:requests"
GROUP = "inference-workers"


async def enqueue(request):
    """Queue a request for the workers; returns its entry id."""
    return await redis_client().xadd(STREAM, {"request": json.dumps(request)})


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


async def claim_from_dead_workers(worker_id, count=50):
    """Take over the pending requests of workers whose heartbeat has expired."""
    r = redis_client()
    try:
        pending = await r.xpending_range(STREAM, GROUP, min="-", max="+", count=count)
    except ResponseError:
        return []
    orphaned = [p["message_id"] for p in pending
                if p["consumer"] != worker_id and not await worker_is_alive(p["consumer"])]
    if not orphaned:
        return []
    claimed = await r.xclaim(STREAM, GROUP, worker_id, min_idle_time=0, message_ids=orphaned)
    return [(entry_id, json.loads(fields["request"])) for entry_id, fields in claimed if fields]


async def queue_position(entry_id):
    """1 + how many requests wait ahead of this one for a worker; 0 once a worker has taken it."""
    r = redis_client()
    try:
        groups = await r.xinfo_groups(STREAM)
    except ResponseError:
        return 0
    delivered = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), "0-0")
    if _entry_key(entry_id) <= _entry_key(delivered):
        return 0
    return len(await r.xrange(STREAM, min=f"({delivered}", max=entry_id, count=10_000))


def _entry_key(entry_id):
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


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
