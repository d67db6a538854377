"""A conversation over the WebSocket, through Redis and an in-process worker running a real tiny model."""
import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message
from tests.chat_support import connect, new_guest, receive_until, send_turn, text_of

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_turn_is_acked_streamed_in_several_frames_and_stored(worker, settings):
    settings.CHAT_TOKEN_FLUSH_INTERVAL = 0
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Hello there", max_new_tokens=10)
    types = [f["type"] for f in frames]
    assert types[0] == "ack" and types[-1] == "done"
    assert types.count("token") >= 3
    ack, done = frames[0], frames[-1]
    assert done["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 10 and done["usage"]["prompt_tokens"] > 0
    offsets = [f["offset"] for f in frames if f["type"] == "token"]
    assert offsets == sorted(offsets) and offsets[0] == 0
    reply = await sync_to_async(Message.objects.get)(pk=done["message"])
    user = await sync_to_async(Message.objects.get)(pk=ack["message"])
    assert (user.role, user.content) == ("user", "Hello there")
    assert reply.content == text_of(frames)
    assert reply.finish_reason == "length" and reply.completion_tokens == 10
    assert reply.model_name == "tiny-test-model" and reply.generation_ms > 0
    assert reply.time_to_first_token_ms is not None
    assert reply.params["max_new_tokens"] == 10
    await socket.disconnect()


async def test_the_second_turn_reaches_the_model_with_the_first(worker, engine):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "My name is Ada.")
    conversation = first[0]["conversation"]
    await send_turn(socket, "What is my name?", conversation=conversation)
    second_prompt = engine.conversations[-1]
    assert [m["role"] for m in second_prompt] == ["user", "assistant", "user"]
    assert second_prompt[0]["content"] == "My name is Ada."
    assert second_prompt[1]["content"] == text_of(first)
    assert second_prompt[2]["content"] == "What is my name?"
    await socket.disconnect()


async def test_the_second_turn_reuses_the_first_turns_cache_and_done_says_how_much(worker, engine):
    from chat.metrics import exposition

    socket = await connect(await new_guest())
    first = await send_turn(socket, "My name is Ada.", max_new_tokens=8)
    assert first[-1]["usage"]["cached_tokens"] == 0
    second = await send_turn(socket, "What is my name?", conversation=first[0]["conversation"], max_new_tokens=8)
    usage = second[-1]["usage"]
    # its prompt begins with the first turn's prompt and reply, which the engine kept
    assert usage["cached_tokens"] >= first[-1]["usage"]["prompt_tokens"] + 7 and usage["cached_tokens"] < usage["prompt_tokens"]
    assert engine.streams[-1].cached_tokens == usage["cached_tokens"]
    info = worker.info()
    assert info["prefix_cache"]["hits"] >= 1 and info["prefix_cache"]["reused_tokens"] >= usage["cached_tokens"]
    text = exposition((0, 0), [info]).decode()
    assert f'chat_worker_prefix_cache_lookups_total{{result="hit",worker="{worker.id}"}}' in text
    assert f'chat_worker_prefix_cache_reused_tokens_total{{worker="{worker.id}"}}' in text
    await socket.disconnect()


async def test_tokens_are_coalesced_into_fewer_frames_on_a_fast_model(worker, settings):
    settings.CHAT_TOKEN_FLUSH_INTERVAL = 0.5
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Hello", max_new_tokens=40)
    tokens = [f for f in frames if f["type"] == "token"]
    assert 1 <= len(tokens) < 10
    assert frames[-1]["usage"]["completion_tokens"] == 40
    await socket.disconnect()


async def test_every_socket_of_a_user_receives_the_stream(worker):
    guest = await new_guest(identified=True)
    first_tab, second_tab = await connect(guest), await connect(guest)
    frames = await send_turn(first_tab, "Hello both")
    seen = await receive_until(second_tab, "done")
    assert [f["type"] for f in seen][0] == "turn"
    assert seen[0]["user"]["content"] == "Hello both"
    assert text_of(seen) == text_of(frames) != ""
    await first_tab.disconnect()
    await second_tab.disconnect()


async def test_history_and_list_return_the_stored_conversation(worker):
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Tell me something")
    conversation = frames[0]["conversation"]
    await socket.send_json_to({"type": "history", "conversation": conversation})
    history = await socket.receive_json_from()
    assert history["type"] == "history" and history["title"] == "Tell me something"
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "Tell me something"), ("assistant", text_of(frames))]
    assert history["messages"][1]["finish_reason"] == "length"
    await socket.send_json_to({"type": "list"})
    listing = await socket.receive_json_from()
    assert [item["id"] for item in listing["items"]] == [conversation]
    await socket.disconnect()


async def test_regenerate_supersedes_the_last_reply_and_keeps_it(worker, engine):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "Pick a word", temperature=1.0, seed=1)
    conversation = first[0]["conversation"]
    await socket.send_json_to({"type": "regenerate", "conversation": conversation,
                               "params": {"temperature": 1.0, "seed": 2, "max_new_tokens": 8}})
    second = await receive_until(socket, "done")
    ack = second[0]
    assert ack == {"type": "ack", "conversation": conversation, "message": first[0]["message"],
                   "reply": second[-1]["message"], "replaces": first[-1]["message"]}
    assert second[-1]["message"] != first[-1]["message"]
    assert [m["role"] for m in engine.conversations[-1]] == ["user"]
    old = await sync_to_async(Message.objects.get)(pk=first[-1]["message"])
    assert old.superseded and old.content == text_of(first)
    await socket.send_json_to({"type": "history", "conversation": conversation})
    history = await socket.receive_json_from()
    assert [m["id"] for m in history["messages"]] == [first[0]["message"], second[-1]["message"]]
    await socket.disconnect()


async def test_edit_replaces_a_message_and_continues_from_there(worker, engine):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "First question")
    conversation = first[0]["conversation"]
    await send_turn(socket, "Second question", conversation=conversation)
    await socket.send_json_to({"type": "edit", "conversation": conversation, "message": first[0]["message"],
                               "content": "Edited question", "params": {"max_new_tokens": 5}})
    frames = await receive_until(socket, "done")
    assert frames[0]["type"] == "ack" and frames[0]["replaces"] == first[0]["message"]
    assert engine.conversations[-1] == [{"role": "user", "content": "Edited question"}]
    count = await sync_to_async(Message.objects.filter(conversation_id=conversation, superseded=True).count)()
    assert count == 4  # both earlier turns are kept for reviewers
    await socket.disconnect()


async def test_rename_delete_and_rate(worker):
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Hello")
    conversation, reply = frames[0]["conversation"], frames[-1]["message"]
    await socket.send_json_to({"type": "rate", "message": reply, "rating": -1, "comment": "too vague"})
    rated = await socket.receive_json_from()
    assert rated == {"type": "rated", "conversation": conversation, "message": reply, "rating": -1,
                     "comment": "too vague"}
    stored = await sync_to_async(Message.objects.get)(pk=reply)
    assert (stored.rating, stored.feedback) == (-1, "too vague")
    # A rating sent without a comment keeps the comment already stored.
    await socket.send_json_to({"type": "rate", "message": reply, "rating": 1})
    assert (await socket.receive_json_from())["comment"] == "too vague"
    stored = await sync_to_async(Message.objects.get)(pk=reply)
    assert (stored.rating, stored.feedback) == (1, "too vague")
    await socket.send_json_to({"type": "history", "conversation": conversation})
    rated_reply = (await socket.receive_json_from())["messages"][-1]
    assert (rated_reply["rating"], rated_reply["comment"]) == (1, "too vague")  # a reload shows both
    await socket.send_json_to({"type": "rename", "conversation": conversation, "title": "Greetings"})
    assert (await socket.receive_json_from())["type"] == "changed"
    assert (await sync_to_async(Conversation.objects.get)(pk=conversation)).title == "Greetings"
    await socket.send_json_to({"type": "delete", "conversation": conversation})
    assert (await socket.receive_json_from()) == {"type": "changed", "deleted": conversation}
    assert not await sync_to_async(Conversation.objects.filter(pk=conversation).exists)()
    await socket.disconnect()


async def test_a_reply_stores_the_settings_it_was_generated_with(worker, engine, monkeypatch):
    # The turn sets two values; the model's own defaults fill the rest (here a generation config
    # recommending top-k 7), and the stored reply says what was used, the system prompt included.
    monkeypatch.setattr(engine, "sampling_defaults", {"top_k": 7, "temperature": 0.5})
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Hello there", max_new_tokens=6, temperature=0)
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["message"])
    assert engine.streams[-1].params.top_k == 7
    assert reply.params["top_k"] == 7 and reply.params["temperature"] == 0 and reply.params["max_new_tokens"] == 6
    assert reply.params["repetition_penalty"] == 1.0 and reply.params["stop"] == []
    assert reply.params["system"] == "You are a helpful assistant."
    await socket.disconnect()


def test_the_page_shows_the_default_models_own_sampling_as_its_defaults(client, clean_redis):
    from asgiref.sync import async_to_sync

    from chat.live_state import announce_worker

    page = client.get("/")
    assert 'data-default-top-p="0.95"' in page.content.decode()  # no worker: the engine's plain defaults
    async_to_sync(announce_worker)("w1", {"id": "w1", "model": "m", "started": 0, "ready": True,
                                          "sampling": {"temperature": 0.6, "top_p": 0.8, "top_k": 20}}, 30)
    page = client.get("/").content.decode()
    assert 'data-default-top-p="0.8"' in page and 'data-default-temperature="0.6"' in page
