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


async def _taken_long_enough(worker, message_id, model, idle_seconds):
    """Wait until `worker` has taken the reply's request and it has been pending for `idle_seconds`
    (what a claim requires), then return that entry's id."""
    r, stream, deadline = request_queue.redis_client(), request_queue.stream_of(model), time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, "the worker never took the request"
        pending = await r.xpending_range(stream, request_queue.GROUP, min="-", max="+", count=10,
                                         consumername=worker.id)
        if message_id in worker.replies and pending and pending[0]["time_since_delivered"] >= idle_seconds * 1000:
            return pending[0]["message_id"]
        await asyncio.sleep(0.05)


def _bystander(engine):
    """A second worker whose adoption step the test runs by hand, at the moment it chooses."""
    from chat.worker import InferenceWorker

    bystander = InferenceWorker(engine, worker_id="bystander")
    bystander.tasks, bystander.room = set(), asyncio.Event()
    return bystander


async def _reply_row(message_id):
    from asgiref.sync import sync_to_async

    from chat.models import Message

    return await sync_to_async(Message.objects.get)(id=message_id)


@pytest.fixture
def slow_engine(tiny_engine):
    from tests.chat_support import RecordingEngine

    return RecordingEngine(tiny_engine, token_delay=0.05)


async def test_a_heartbeat_missing_for_a_moment_does_not_hand_a_live_workers_reply_to_another(slow_engine, clean_redis,
                                                                                               settings):
    settings.CHAT_WORKER_HEARTBEAT = 0.3
    owner, stop, task = await start_worker(slow_engine)
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "a long one",
                               "params": {"max_new_tokens": 40, "temperature": 0}})
    [ack] = [f for f in await receive_until(socket, "ack") if f["type"] == "ack"]
    reply = ack["reply"]
    entry_id = await _taken_long_enough(owner, reply, slow_engine.name, 0.9)
    clean_redis.delete(f"chat:worker:{owner.id}")
    assert await _bystander(slow_engine)._adopt_orphans() is None  # a Redis pause expired the heartbeat
    pending = await request_queue.redis_client().xpending_range(
        request_queue.stream_of(slow_engine.name), request_queue.GROUP, min="-", max="+", count=10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(entry_id, owner.id)]  # still the owner's
    frames = await receive_until(socket, "done", timeout=30)
    assert frames[-1]["finish_reason"] == "length" and len(slow_engine.streams) == 1
    await socket.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_streaming_reply_claimed_from_a_live_worker_is_finished_by_it_once_and_cleanly(slow_engine, clean_redis,
                                                                                                settings):
    settings.CHAT_WORKER_HEARTBEAT = 0.3
    owner, stop, task = await start_worker(slow_engine)
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "a long one",
                               "params": {"max_new_tokens": 40, "temperature": 0}})
    frames = await receive_until(socket, "token")
    reply = next(f["reply"] for f in frames if f["type"] == "ack")
    await _taken_long_enough(owner, reply, slow_engine.name, 0.9)
    bystander = _bystander(slow_engine)
    clean_redis.delete(f"chat:worker:{owner.id}")
    bystander.absent_since = {owner.id: time.monotonic() - 60}  # missing for longer than the grace period
    await bystander._adopt_orphans()  # claims the request, but the owner holds the reply: dropped, untouched
    assert (await _reply_row(reply)).generating
    frames += await receive_until(socket, "done", timeout=30)
    assert frames[-1]["finish_reason"] == "length", frames[-1]
    assert not [f for f in frames if f["type"] == "error"]
    row = await _reply_row(reply)
    assert (row.finish_reason, row.content) == ("length", "".join(f["text"] for f in frames if f["type"] == "token"))
    assert len(slow_engine.streams) == 1 and not bystander.replies
    assert await request_queue.depth() == (0, 0)
    await socket.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_request_not_yet_started_claimed_from_a_live_worker_is_generated_once(slow_engine, clean_redis,
                                                                                       settings):
    settings.CHAT_WORKER_HEARTBEAT = 0.3
    slow_engine.model.stalled.set()  # the owner has taken the request but produced nothing yet
    owner, stop, task = await start_worker(slow_engine)
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "not started",
                               "params": {"max_new_tokens": 5, "temperature": 0}})
    reply = next(f["reply"] for f in await receive_until(socket, "ack") if f["type"] == "ack")
    try:
        await _taken_long_enough(owner, reply, slow_engine.name, 0.9)
        bystander = _bystander(slow_engine)
        clean_redis.delete(f"chat:worker:{owner.id}")
        bystander.absent_since = {owner.id: time.monotonic() - 60}
        await bystander._adopt_orphans()
        assert not bystander.tasks and not bystander.replies  # it generates nothing
    finally:
        slow_engine.model.stalled.clear()
    frames = await receive_until(socket, "done", timeout=30)
    assert frames[-1]["finish_reason"] == "length"
    assert len(slow_engine.streams) == 1
    assert (await _reply_row(reply)).content == "".join(f["text"] for f in frames if f["type"] == "token")
    await socket.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_replys_hold_is_per_request_so_a_continue_is_not_blocked_by_the_last_generations(clean_redis):
    from chat.live_state import LiveReply

    reply = LiveReply(7)
    assert await reply.take_serving("worker-a", "1-0", 30)
    assert await reply.take_serving("worker-a", "1-0", 30)  # prolonged by its holder
    assert not await reply.take_serving("worker-b", "1-0", 30)  # the same request: worker-a serves it
    assert await reply.take_serving("worker-b", "2-0", 30)  # a later request of the reply (a continue)
    await reply.release_serving("worker-a", "1-0")  # not its hold any more: nothing happens
    assert not await reply.take_serving("worker-c", "2-0", 30)
    await reply.release_serving("worker-b", "2-0")
    assert await reply.take_serving("worker-c", "2-0", 30)
