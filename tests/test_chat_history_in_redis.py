"""The hot history lives in Redis, per user, and is rebuilt from the database when lost."""
import pytest
from asgiref.sync import sync_to_async

from chat.live_state import ConversationHistory
from tests.chat_support import connect, new_guest, owner_key_of, receive_until, send_turn, text_of

pytestmark = pytest.mark.django_db(transaction=True)


async def test_history_survives_a_redis_flush(worker, engine, clean_redis):
    guest = await new_guest()
    socket = await connect(guest)
    first = await send_turn(socket, "Remember the number 42.")
    conversation = first[0]["conversation"]
    second = await send_turn(socket, "And the colour blue.", conversation=conversation)
    history_keys = [k for k in clean_redis.keys("chat:*:history")]
    assert len(history_keys) == 1 and history_keys[0].decode().startswith(f"chat:{await owner_key_of(guest)}:")
    await socket.disconnect()

    clean_redis.flushdb()  # Redis restarted empty: hot history, groups and worker announcement gone
    from chat.live_state import announce_worker

    await announce_worker(worker.id, worker.info(), ttl=30)
    socket = await connect(guest)
    await socket.send_json_to({"type": "history", "conversation": conversation})
    history = await socket.receive_json_from()
    assert [m["content"] for m in history["messages"]] == [
        "Remember the number 42.", text_of(first), "And the colour blue.", text_of(second)]
    await send_turn(socket, "Which number?", conversation=conversation)
    assert [m["content"] for m in engine.conversations[-1]] == [
        "Remember the number 42.", text_of(first), "And the colour blue.", text_of(second), "Which number?"]
    await socket.disconnect()


async def test_history_is_trimmed_to_the_configured_length(worker, settings, clean_redis):
    settings.CHAT_HISTORY_MAX_MESSAGES = 4
    guest = await new_guest()
    socket = await connect(guest)
    conversation = None
    for n in range(3):
        frames = await send_turn(socket, f"turn {n}", conversation=conversation, max_new_tokens=2)
        conversation = frames[0]["conversation"]
    messages = await ConversationHistory(await owner_key_of(guest), conversation).messages()
    assert [m["content"] for m in messages if m["role"] == "user"] == ["turn 1", "turn 2"]
    assert len(messages) == 4
    await socket.disconnect()


async def test_every_key_a_turn_leaves_in_redis_expires(worker, clean_redis):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "Remember this.")
    await send_turn(socket, "And this.", conversation=first[0]["conversation"])
    await socket.send_json_to({"type": "history", "conversation": first[0]["conversation"]})
    await socket.receive_json_from()
    # Only the shared queues (one per model, and their index) and the worker index live on; they are
    # bounded by their own rules.
    lasting = {key.decode() for key in clean_redis.keys("*") if clean_redis.ttl(key) == -1}
    assert lasting <= {"chat:requests", "chat:requests:tiny-test-model", "chat:request-streams", "chat:workers"}, lasting
    history_keys = [key.decode() for key in clean_redis.keys("chat:*:history")]
    assert history_keys and all(0 < clean_redis.ttl(key) <= 24 * 3600 for key in history_keys)
    await socket.disconnect()


async def test_the_worker_clears_expired_sessions(worker):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from chat.worker import clear_expired_sessions

    @sync_to_async
    def sessions():
        return set(Session.objects.values_list("session_key", flat=True))

    old, current = await new_guest(), await new_guest()
    await sync_to_async(Session.objects.filter(session_key=old).update)(expire_date=timezone.now() - timedelta(days=1))
    await clear_expired_sessions()
    assert old not in await sessions() and current in await sessions()


async def test_redis_and_the_database_agree_on_a_failed_reply_after_a_flush(clean_redis):
    guest = await new_guest()
    socket = await connect(guest)
    frames = await send_turn(socket, "Anyone there?")  # no worker: the reply fails with nothing said
    assert frames[-1]["finish_reason"] == "error"
    history = ConversationHistory(await owner_key_of(guest), frames[0]["conversation"])
    hot = await history.messages()
    clean_redis.flushdb()
    assert await history.messages() == hot == [{"id": frames[0]["message"], "role": "user",
                                                "content": "Anyone there?"}]
    await socket.disconnect()


async def test_attached_files_stay_out_of_redis_and_the_prompt_is_unchanged(worker, engine, clean_redis):
    from chat.attachments import prompt_content

    files = [{"name": "big.txt", "content": "needle-in-the-file " * 5000}, {"name": "b.py", "content": "x = 1\n"}]
    guest = await new_guest()
    socket = await connect(guest)
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Summarise.", "attachments": files,
                               "params": {"max_new_tokens": 4, "temperature": 0}})
    frames = await receive_until(socket, "done")
    conversation = frames[0]["conversation"]
    assert engine.conversations[-1][-1]["content"] == prompt_content("Summarise.", files)

    def hot_bytes():
        [key] = clean_redis.keys("chat:*:history")
        raw = b"".join(clean_redis.lrange(key, 0, -1))
        assert b"needle-in-the-file" not in raw and b"x = 1" not in raw
        return len(raw)

    assert hot_bytes() < 1000  # the 95,000 characters of files are in the database only
    await ConversationHistory(await owner_key_of(guest), conversation).invalidate()  # rebuilt from the database
    await send_turn(socket, "Shorter?", conversation=conversation)
    assert engine.conversations[-1][0]["content"] == prompt_content("Summarise.", files)
    assert hot_bytes() < 1000
    await socket.disconnect()
