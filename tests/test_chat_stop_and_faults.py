"""Stopping replies, and turns that no worker answers."""
import asyncio

import pytest
from asgiref.sync import sync_to_async

from chat.models import Message
from tests.chat_support import RecordingEngine, connect, new_guest, receive_until, send_turn, start_worker, text_of

pytestmark = pytest.mark.django_db(transaction=True)


async def test_stop_ends_the_reply_as_cancelled_and_keeps_the_partial_text(worker, engine, settings):
    settings.CHAT_TOKEN_FLUSH_INTERVAL = 0
    engine.model.delay = 0.05
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Count to a thousand",
                               "params": {"max_new_tokens": 400, "temperature": 0}})
    ack = await socket.receive_json_from()
    frames = await receive_until(socket, "token")
    frames += [await socket.receive_json_from(timeout=5) for _ in range(3)]
    await socket.send_json_to({"type": "stop", "conversation": ack["conversation"]})
    frames += await receive_until(socket, "done")
    done = frames[-1]
    assert done["finish_reason"] == "cancelled"
    stream = engine.streams[-1]
    assert 4 <= stream.completion_tokens < 50  # the worker really stopped, long before 400
    reply = await sync_to_async(Message.objects.get)(pk=done["message"])
    assert reply.finish_reason == "cancelled"
    assert reply.content == text_of(frames) != ""
    # the next turn works at once
    assert (await send_turn(socket, "Again", conversation=ack["conversation"]))[-1]["finish_reason"] == "length"
    await socket.disconnect()


async def test_stop_halts_generation_on_the_worker_within_a_token_or_two(worker, engine):
    engine.model.delay = 0.1
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Go",
                               "params": {"max_new_tokens": 400}})
    ack = await socket.receive_json_from()
    await receive_until(socket, "token")
    stream = engine.streams[-1]
    await socket.send_json_to({"type": "stop", "conversation": ack["conversation"]})
    at_stop = stream.completion_tokens
    await receive_until(socket, "done")
    assert stream.finish_reason == "cancelled"
    assert stream.completion_tokens - at_stop <= 2
    await socket.disconnect()


async def test_a_second_send_while_generating_is_refused_as_busy(worker, engine):
    engine.model.delay = 0.05
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Long one",
                               "params": {"max_new_tokens": 60}})
    ack = await socket.receive_json_from()
    await socket.send_json_to({"type": "send", "conversation": ack["conversation"], "content": "Another"})
    frames = await receive_until(socket, "error")
    assert frames[-1]["code"] == "busy"
    assert (await receive_until(socket, "done"))[-1]["finish_reason"] == "length"
    assert await sync_to_async(Message.objects.filter(content="Another").count)() == 0
    await socket.disconnect()


async def test_a_turn_with_no_worker_running_ends_with_no_worker_at_once(clean_redis):
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Anyone there?"})
    frames = await receive_until(socket, "done", timeout=5)
    error = next(f for f in frames if f["type"] == "error")
    assert error["code"] == "no_worker" and "no inference worker is running" in error["detail"]
    assert frames[-1]["finish_reason"] == "error"
    # the user's words are kept, and the reply can be regenerated once a worker is back
    assert await sync_to_async(Message.objects.filter(content="Anyone there?").count)() == 1
    await socket.disconnect()


async def test_a_worker_that_stalls_mid_reply_ends_it_as_an_error_in_bounded_time(
        tiny_engine, clean_redis, settings):
    settings.CHAT_TOKEN_FLUSH_INTERVAL = 0
    settings.CHAT_STALL_TIMEOUT = 2
    stalling = RecordingEngine(tiny_engine, token_delay=0.05)
    worker, stop, task = await start_worker(stalling)
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Hi",
                               "params": {"max_new_tokens": 400}})
    frames = await receive_until(socket, "token")
    frames += [await socket.receive_json_from(timeout=5) for _ in range(2)]
    stalling.model.stalled.set()  # generation hangs: no more tokens, no reply
    frames += await receive_until(socket, "done", timeout=15)
    done = frames[-1]
    assert done["finish_reason"] == "error"
    assert "stopped responding" in done["detail"]
    reply = await sync_to_async(Message.objects.get)(pk=done["message"])
    assert reply.finish_reason == "error" and reply.content == text_of(frames) != ""
    await socket.disconnect()
    stalling.model.stalled.clear()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_turn_no_worker_takes_ends_as_an_error_after_the_request_timeout(
        tiny_engine, clean_redis, settings):
    settings.CHAT_REQUEST_TIMEOUT = 1
    await clean_redis_worker_announcement()
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Hello?"})
    frames = await receive_until(socket, "done", timeout=10)
    assert frames[-1]["finish_reason"] == "error"
    assert "no inference worker took this turn" in frames[-1]["detail"]
    await socket.disconnect()


async def clean_redis_worker_announcement():
    """A worker that announced itself and then died without taking anything: its announcement
    lapses after its heartbeat TTL, and then the waiting turn times out."""
    from chat.live_state import announce_worker

    await announce_worker("ghost", {"id": "ghost", "model": "x"}, ttl=2)


async def test_deleting_a_conversation_mid_reply_stops_its_reply_first(worker, engine, settings):
    # Send a long turn, delete its conversation, four times over on one socket: each delete stops its
    # reply before the rows go, so the worker never generates more than the one in-flight reply allowed.
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1
    engine.model.delay = 0.05
    socket = await connect(await new_guest())
    for _ in range(4):
        await socket.send_json_to({"type": "send", "conversation": None, "content": "Count to a thousand",
                                   "params": {"max_new_tokens": 400, "temperature": 0}})
        ack = (await receive_until(socket, "ack"))[-1]
        await receive_until(socket, "token")
        assert len(worker.replies) == 1
        await socket.send_json_to({"type": "delete", "conversation": ack["conversation"]})
        changed = await receive_until(socket, "changed")
        assert changed[-1].get("deleted") == ack["conversation"]
        assert not await sync_to_async(Message.objects.filter(pk=ack["reply"]).exists)()
        for _ in range(100):  # the worker lets go of the stopped reply as soon as it ends
            if not worker.replies:
                break
            await asyncio.sleep(0.05)
        assert not worker.replies
    assert [s.finish_reason for s in engine.streams] == ["cancelled"] * 4
    assert all(s.completion_tokens < 100 for s in engine.streams)
    await socket.disconnect()
