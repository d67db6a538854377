"""The frame-amplification limits hold under a flood from one socket: a per-socket frame rate
(token bucket), a cap on one user's open sockets, small presets, and `history` in pages."""
import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async

from chat import presets
from chat.frame_bucket import FrameBucket
from chat.live_state import redis_client
from chat.models import Conversation, Message, Owner, Preset
from tests.chat_support import connect, new_guest, owner_key_of, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


async def guest_socket():
    """A socket of a guest that has acted once (its identity exists), and the guest's Owner."""
    session = await new_guest()
    socket = await connect(session)
    await socket.send_json_to({"type": "preset_save", "preset": {"name": "Mine", "system": "s" * 4000}})
    await receive_until(socket, "presets")
    return socket, session, Owner(guest_key=(await owner_key_of(session))[1:])


async def drain(socket, timeout=10):
    """Every frame the socket sends until it closes: (bytes sent back, frames, close code)."""
    sent, frames = 0, []
    deadline = time.monotonic() + timeout
    while True:
        message = await socket.receive_output(timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "websocket.close":
            return sent, frames, message.get("code")
        sent += len(message["text"].encode())
        frames.append(json.loads(message["text"]))


async def test_the_frame_amplification_limits_hold_under_a_flood_from_one_socket(clean_redis, settings):
    settings.CHAT_SOCKET_FRAMES_PER_SECOND, settings.CHAT_SOCKET_FRAME_BURST = 10, 40
    settings.CHAT_SOCKET_FLOOD_FRAMES = 100
    socket, _, owner = await guest_socket()
    for _ in range(presets.MAX_PRESETS - 1):  # the most presets a user may keep, each the longest allowed
        await sync_to_async(Preset.objects.create)(name="p", system="s" * presets.MAX_PRESET_SYSTEM_CHARS,
                                                   **owner.fields())
    started = time.monotonic()
    for _ in range(500):
        await socket.send_json_to({"type": "presets"})
    sent, frames, code = await drain(socket)
    took = time.monotonic() - started

    answered = [f for f in frames if f["type"] == "presets"]
    refused = [f for f in frames if f.get("code") == "rate_limited"]
    assert code == 4429  # a sustained flood ends the socket
    assert len(answered) <= 40 + 10 * took + 1  # the burst, then the sustained rate
    assert len(refused) == 100 and all(f["retry_after"] >= 1 for f in refused)
    assert "closed" in refused[-1]["detail"]
    largest = max(len(json.dumps(f).encode()) for f in answered)
    assert largest < 100_000  # 20 presets x 4,000 characters, and the built-ins
    assert sent <= len(answered) * largest + 100 * 400  # bounded, whatever the 420 other frames asked for
    assert len(answered) + len(refused) < 500  # frames after the close were never read
    await socket.disconnect()


async def test_frames_over_the_rate_are_refused_and_the_socket_recovers(clean_redis, settings):
    settings.CHAT_SOCKET_FRAMES_PER_SECOND, settings.CHAT_SOCKET_FRAME_BURST = 5, 4
    socket, _, _ = await guest_socket()  # its preset_save took one of the 4
    for _ in range(6):
        await socket.send_json_to({"type": "list"})
    frames = [await socket.receive_json_from(timeout=5) for _ in range(6)]
    assert [f["type"] for f in frames].count("conversations") >= 3
    assert any(f.get("code") == "rate_limited" and f["retry_after"] == 1 for f in frames)
    retry_after = next(f["retry_after"] for f in frames if f.get("code") == "rate_limited")
    await asyncio.sleep(retry_after)  # as told: by then a token is back
    await socket.send_json_to({"type": "list"})
    assert (await socket.receive_json_from(timeout=5))["type"] == "conversations"
    await socket.disconnect()


def test_the_bucket_refills_at_its_rate_up_to_its_burst():
    now = [0.0]
    bucket = FrameBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 1]
    assert bucket.refused == 1
    now[0] = 0.5  # one token back: a frame goes through, but the refusal still counts
    assert bucket.take() == 0 and bucket.take() == 1 and bucket.refused == 2
    now[0] = 100  # full again: the count starts over
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 1] and bucket.refused == 1


async def test_a_user_may_open_so_many_sockets_and_a_crashed_process_leaks_none(clean_redis, settings):
    settings.CHAT_MAX_SOCKETS_PER_USER = 2
    first, session, owner = await guest_socket()
    second = await connect(session)
    third = await connect(session)
    refused = await third.receive_json_from(timeout=5)
    assert refused["code"] == "too_many_sockets" and "CHAT_MAX_SOCKETS_PER_USER" in refused["detail"]
    assert (await third.receive_output(timeout=5))["code"] == 4409
    await third.disconnect()
    await second.disconnect()
    again = await connect(session)  # a closed socket gives its place back
    await again.send_json_to({"type": "list"})
    assert (await again.receive_json_from(timeout=5))["type"] == "conversations"
    await again.disconnect()
    # A web process that crashed never released its sockets' places; their claims lapse.
    await redis_client().zadd(f"chat:{owner.key}:sockets", {"crashed-socket": time.time() - 1})
    fourth = await connect(session)
    await fourth.send_json_to({"type": "list"})
    assert (await fourth.receive_json_from(timeout=5))["type"] == "conversations"
    for socket in (first, fourth):
        await socket.disconnect()


async def test_presets_are_few_and_small(clean_redis):
    socket, _, owner = await guest_socket()
    await socket.send_json_to({"type": "preset_save", "preset": {"name": "Long", "system": "s" * 4001}})
    refused = (await receive_until(socket, "error"))[-1]
    assert refused["code"] == "too_large" and "4000" in refused["detail"]
    for _ in range(presets.MAX_PRESETS - 1):
        await sync_to_async(Preset.objects.create)(name="p", **owner.fields())
    await socket.send_json_to({"type": "preset_save", "preset": {"name": "One more"}})
    refused = (await receive_until(socket, "error"))[-1]
    assert refused["code"] == "too_large" and f"{presets.MAX_PRESETS} presets" in refused["detail"]
    await socket.disconnect()


async def test_history_comes_in_pages_when_asked_and_whole_by_default(clean_redis, settings):
    settings.CHAT_HISTORY_PAGE_MESSAGES = 4
    socket, _, owner = await guest_socket()

    @sync_to_async
    def conversation_of(count):
        conversation = Conversation.objects.create(title="Long", **owner.fields())
        return conversation, [Message.objects.create(conversation=conversation, role="user" if i % 2 == 0 else "assistant",
                                                     content=f"m{i}", finish_reason="" if i % 2 == 0 else "stop").pk
                              for i in range(count)]

    conversation, ids = await conversation_of(7)

    async def history(**fields):
        await socket.send_json_to({"type": "history", "conversation": conversation.pk, **fields})
        return (await receive_until(socket, "history"))[-1]

    newest = await history()  # the default: the last CHAT_HISTORY_PAGE_MESSAGES, and `more`
    assert [m["id"] for m in newest["messages"]] == ids[3:] and newest["more"] is True and "before" not in newest
    page = await history(before=ids[3], limit=2)
    assert [m["id"] for m in page["messages"]] == ids[1:3] and page["more"] is True and page["before"] == ids[3]
    last = await history(before=ids[1], limit=2)
    assert [m["id"] for m in last["messages"]] == ids[:1] and "more" not in last
    short, short_ids = await conversation_of(3)
    await socket.send_json_to({"type": "history", "conversation": short.pk})
    whole = (await receive_until(socket, "history"))[-1]
    assert [m["id"] for m in whole["messages"]] == short_ids and "more" not in whole  # as before for most
    for bad in ({"limit": 0}, {"limit": 5}, {"limit": "2"}, {"before": -1}):
        await socket.send_json_to({"type": "history", "conversation": conversation.pk, **bad})
        assert (await receive_until(socket, "error"))[-1]["code"] == "bad_field"
    await socket.disconnect()
