"""Cache-aware routing between two workers of one model (chat.worker's docstring): a follow-up goes
to the worker whose prompt cache holds its conversation, and reads only its new tokens there; with
that worker's batch full, another serves it at once."""
import asyncio
import dataclasses

import pytest
from asgiref.sync import sync_to_async

from chat import request_queue
from chat.live_state import announce_worker
from chat.models import Message
from chat.worker import TAKE_BLOCK_MS
from tests.chat_support import RecordingEngine, connect, new_guest, receive_until, send_turn, start_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def two_workers(tiny_engine, clean_redis, monkeypatch):
    """Two workers of one model with one batch slot each, and `readers`: the ids of the workers that
    may read new requests off the queue (the others still take what is handed to them), so a test
    chooses which worker sees a turn first."""
    config = dataclasses.replace(tiny_engine.config, max_batch_size=1)
    started = [await start_worker(RecordingEngine(tiny_engine, config=config)) for _ in range(2)]
    workers = [worker for worker, _, _ in started]
    readers = {worker.id for worker in workers}
    take = request_queue.take

    async def steered_take(worker_id, count, block_ms=1000, model=None):
        if worker_id not in readers:
            await asyncio.sleep(block_ms / 1000)
            return []
        return await take(worker_id, count, block_ms=block_ms, model=model)

    monkeypatch.setattr(request_queue, "take", steered_take)
    yield workers, readers
    for _, stop, task in started:
        stop.set()
    for _, _, task in started:
        await asyncio.wait_for(task, 10)


def served_by(reply_id):
    return Message.objects.values_list("worker", flat=True).get(pk=reply_id)


async def only(readers, worker):
    readers.clear()
    readers.add(worker.id)
    await asyncio.sleep(3 * TAKE_BLOCK_MS / 1000)  # a read already under way ends first


async def test_a_follow_up_lands_on_the_warm_worker_even_when_another_reads_it_first(two_workers):
    (warm, cold), readers = two_workers
    socket = await connect(await new_guest(identified=True))
    await only(readers, warm)
    first = await send_turn(socket, "Tell me about tea.")
    conversation = first[0]["conversation"]
    assert await sync_to_async(served_by)(first[-1]["message"]) == warm.id

    await only(readers, cold)  # the cold worker is the one that takes each follow-up off the queue
    for question in ("And coffee?", "And water?"):
        done = (await send_turn(socket, question, conversation=conversation))[-1]
        assert await sync_to_async(served_by)(done["message"]) == warm.id
        assert done["usage"]["cached_tokens"] > 0  # read from the warm worker's prompt cache, not again
    assert cold.routing["handed_over"] == 2 and warm.routing["received"] == 2
    assert not warm.engine.streams[0].cached_tokens  # its first turn had nothing cached
    await socket.disconnect()


async def test_with_the_warm_worker_busy_another_worker_serves_the_follow_up(two_workers, settings):
    settings.CHAT_TOKEN_FLUSH_INTERVAL = 0
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 2  # the long reply and the follow-up, side by side
    (warm, cold), readers = two_workers
    socket = await connect(await new_guest(identified=True))
    await only(readers, warm)
    first = await send_turn(socket, "Tell me about tea.")
    conversation = first[0]["conversation"]
    stale_heartbeat = warm.info()  # as it was announced before its batch filled: room for one

    warm.engine.model.delay = 0.05  # a long reply in another conversation fills the warm worker's one slot
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Write a long story.",
                               "params": {"max_new_tokens": 400, "temperature": 0}})
    long_ack = (await receive_until(socket, "ack"))[-1]
    long_reply = long_ack["reply"]
    await receive_until(socket, "token")
    await only(readers, cold)
    await announce_worker(warm.id, stale_heartbeat, ttl=30)  # the cold worker believes it has room

    await socket.send_json_to({"type": "send", "conversation": conversation, "content": "And coffee?",
                               "params": {"max_new_tokens": 4, "temperature": 0}})
    follow_up = (await receive_until(socket, "ack"))[-1]["reply"]
    while (await receive_until(socket, "done", timeout=30))[-1]["message"] != follow_up:
        pass
    assert await sync_to_async(served_by)(follow_up) == cold.id
    assert cold.routing["handed_over"] == 1 and warm.routing["handed_back"] == 1
    assert await sync_to_async(lambda: Message.objects.get(pk=long_reply).generating)()  # it did not wait for it
    await socket.send_json_to({"type": "stop", "conversation": long_ack["conversation"]})
    await socket.disconnect()
