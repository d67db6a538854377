"""Many users at once: replies share the worker's batch, and those beyond it are told they wait."""
import asyncio

import pytest

from inference import EngineConfig
from tests.chat_support import RecordingEngine, connect, new_guest, receive_until, start_worker

pytestmark = pytest.mark.django_db(transaction=True)


async def test_users_beyond_the_batch_see_their_place_in_line_and_are_served_in_order(
        tiny_engine, clean_redis, settings):
    settings.CHAT_WORKER_HEARTBEAT = 0.2
    engine = RecordingEngine(tiny_engine, token_delay=0.1, config=EngineConfig(max_batch_size=1))
    worker, stop, task = await start_worker(engine)
    sockets = [await connect(await new_guest()) for _ in range(3)]
    accepted = []
    for n, socket in enumerate(sockets):  # one after another: each is queued once the previous is
        await socket.send_json_to({"type": "send", "conversation": None, "content": f"user {n}",
                                   "params": {"max_new_tokens": 30, "temperature": 0}})
        accepted.append(await receive_until(socket, "ack"))
    frames = [before + await receive_until(socket, "done", timeout=30) for before, socket in zip(accepted, sockets)]
    queued = [[f["position"] for f in user_frames if f["type"] == "queued"] for user_frames in frames]
    assert queued[0] == []
    assert queued[1] and queued[1][0] == 1
    assert queued[2] and queued[2][0] == 2 and 1 in queued[2]  # moved up when the first finished
    assert all(f[-1]["finish_reason"] == "length" for f in frames)
    for socket in sockets:
        await socket.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_concurrent_users_are_decoded_in_one_batch(tiny_engine, clean_redis):
    engine = RecordingEngine(tiny_engine, token_delay=0.02, config=EngineConfig(max_batch_size=8))
    worker, stop, task = await start_worker(engine)
    sockets = [await connect(await new_guest()) for _ in range(4)]
    engine.model.stalled.set()  # hold the engine until every user's request has reached it, at any speed
    for n, socket in enumerate(sockets):
        await socket.send_json_to({"type": "send", "conversation": None, "content": f"user {n}",
                                   "params": {"max_new_tokens": 40, "temperature": 0}})
    while len(engine.streams) < 4:
        await asyncio.sleep(0.01)
    engine.model.stalled.clear()
    peak = 0
    while any(s.finish_reason is None for s in engine.streams) or len(engine.streams) < 4:
        peak = max(peak, engine.loop.stats()["active"])
        await asyncio.sleep(0.01)
    assert peak >= 3
    frames = [await receive_until(socket, "done", timeout=30) for socket in sockets]
    assert all(not any(f["type"] == "queued" for f in user_frames) for user_frames in frames)
    for socket in sockets:
        await socket.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)
