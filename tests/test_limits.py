"""Each limit is a setting, and a refusal names it in an error frame; nothing refused is stored."""
import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message
from tests.chat_support import connect, new_guest, receive_until, send_turn

pytestmark = pytest.mark.django_db(transaction=True)


async def test_messages_per_minute_are_limited_with_a_time_to_retry(worker, settings):
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    socket = await connect(await new_guest())
    first = await send_turn(socket, "one")
    await send_turn(socket, "two", conversation=first[0]["conversation"])
    await socket.send_json_to({"type": "send", "conversation": first[0]["conversation"], "content": "three"})
    error = await socket.receive_json_from()
    assert error["code"] == "rate_limited"
    assert "at most 2 messages per minute" in error["detail"]
    assert 1 <= error["retry_after"] <= 60
    assert not await sync_to_async(Message.objects.filter(content="three").exists)()
    await socket.disconnect()


async def test_a_frame_over_the_size_limit_is_refused(clean_redis, settings):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "é" * 600})
    error = await socket.receive_json_from()
    assert error["code"] == "frame_too_large" and "1000 byte" in error["detail"]
    await socket.send_json_to({"type": "list"})
    assert (await socket.receive_json_from())["type"] == "conversations"
    await socket.disconnect()


async def test_conversations_per_user_are_limited(worker, settings):
    settings.CHAT_MAX_CONVERSATIONS = 1
    socket = await connect(await new_guest())
    first = await send_turn(socket, "the only one")
    await socket.send_json_to({"type": "send", "conversation": None, "content": "a second one"})
    error = await socket.receive_json_from()
    assert error["code"] == "too_many_conversations" and "CHAT_MAX_CONVERSATIONS" in error["detail"]
    assert await sync_to_async(Conversation.objects.count)() == 1
    # the existing conversation still takes turns
    assert (await send_turn(socket, "more", conversation=first[0]["conversation"]))[-1]["type"] == "done"
    await socket.disconnect()


async def test_turns_in_flight_per_user_is_a_setting(worker, engine, settings):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 2
    engine.model.delay = 0.03
    socket = await connect(await new_guest())
    for content in ("first", "second"):
        await socket.send_json_to({"type": "send", "conversation": None, "content": content,
                                   "params": {"max_new_tokens": 30}})
        await receive_until(socket, "ack")
    await socket.send_json_to({"type": "send", "conversation": None, "content": "third"})
    frames = await receive_until(socket, "error")
    assert frames[-1]["code"] == "busy" and "at most 2 at a time" in frames[-1]["detail"]
    done = 0
    while done < 2:
        done += (await socket.receive_json_from(timeout=20))["type"] == "done"
    await socket.disconnect()
