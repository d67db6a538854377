"""The shared request queue never serves one request twice, and forgets workers that died."""
import asyncio
import time

import pytest

from chat import request_queue
from chat.live_state import announce_worker
from tests.chat_support import connect, new_guest, receive_until, start_worker

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_dead_workers_request_is_reclaimed_and_generated_once_with_two_live_workers(engine, clean_redis,
                                                                                            settings):
    settings.CHAT_WORKER_HEARTBEAT = 0.3
    model = engine.name  # the ghost served the live workers' model: they adopt its requests
    await request_queue.ensure_group(model)
    await announce_worker("ghost", {"id": "ghost", "model": model}, ttl=1)  # a worker that is about to die
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "orphan",
                               "params": {"max_new_tokens": 5, "temperature": 0}})
    await receive_until(socket, "ack")
    [(_, request)] = await request_queue.take("ghost", 10, model=model)  # the ghost took it, then died
    assert set(request) >= {"message", "conversation", "owner"} and "messages" not in request  # ids, not history

    workers = [await start_worker(engine) for _ in range(2)]  # both look for dead workers' requests
    frames = await receive_until(socket, "done", timeout=30)
    assert frames[-1]["finish_reason"] == "length"
    deadline = time.monotonic() + 5
    stream = request_queue.stream_of(model)
    while any(c["name"] == "ghost" for c in await request_queue.redis_client().xinfo_consumers(
            stream, request_queue.GROUP)):
        assert time.monotonic() < deadline, "the dead worker stayed in the group"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # several more heartbeats: nobody claims or serves it again
    assert len(engine.streams) == 1
    assert await request_queue.depth() == (0, 0)
    await socket.disconnect()
    for _, stop, task in workers:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_workers_requests_are_not_taken_before_its_heartbeat_could_have_expired(clean_redis):
    await request_queue.ensure_group()
    await request_queue.enqueue({"type": "chat.generate", "message": 1})
    [(entry_id, _)] = await request_queue.take("starting", 1)  # took it before announcing itself
    assert await request_queue.claim_from_dead_workers("other", min_idle_seconds=5) == []
    claimed = await request_queue.claim_from_dead_workers("other", min_idle_seconds=0)
    assert [e for e, _ in claimed] == [entry_id]
    consumers = await request_queue.redis_client().xinfo_consumers(request_queue.STREAM, request_queue.GROUP)
    assert [c["name"] for c in consumers] == ["other"]


async def test_every_page_of_a_dead_workers_pending_requests_is_reclaimed(clean_redis):
    await request_queue.ensure_group()
    for n in range(7):
        await request_queue.enqueue({"type": "chat.generate", "message": n})
    assert len(await request_queue.take("dead", 10)) == 7
    claimed = await request_queue.claim_from_dead_workers("alive", min_idle_seconds=0, page=3)
    assert sorted(request["message"] for _, request in claimed) == list(range(7))
