"""Files attached to a message (checked, stored, in the prompt with their names) and presets (built-in
for everyone, one's own scoped to their owner), with each conversation's settings."""
import pytest
from asgiref.sync import sync_to_async

from chat.attachments import prompt_content
from chat.models import Conversation, Message, Preset
from chat.live_state import ConversationHistory
from tests.chat_support import connect, new_guest, owner_key_of, receive_until, text_of

pytestmark = pytest.mark.django_db(transaction=True)

SOURCE = "def add(a, b):\n    return a + b\n"


async def send(socket, content, conversation=None, **fields):
    await socket.send_json_to({"type": "send", "conversation": conversation, "content": content,
                               "params": {"max_new_tokens": 4, "temperature": 0}, **fields})
    return await receive_until(socket, "done")


async def refused(socket, frame):
    await socket.send_json_to(frame)
    answer = await socket.receive_json_from(timeout=30)
    assert answer["type"] == "error", answer
    return answer


async def message_count():
    return await sync_to_async(Message.objects.count)()


# --- attachments -----------------------------------------------------------------------------------

async def test_an_attached_file_is_stored_and_reaches_the_prompt_under_its_name(worker, engine):
    guest = await new_guest()
    socket = await connect(guest)
    frames = await send(socket, "Review this.", attachments=[{"name": "add.py", "content": SOURCE}])
    ack = frames[0]
    assert ack["type"] == "ack"
    user = await sync_to_async(Message.objects.get)(pk=ack["message"])
    assert user.content == "Review this." and user.attachments == [{"name": "add.py", "content": SOURCE}]
    prompt = engine.conversations[-1]
    assert prompt[-1]["content"] == f"File: add.py\n```\n{SOURCE}```\n\nReview this."

    # The next turn rebuilds the history from Redis and the database: the file is still in it.
    await socket.send_json_to({"type": "history", "conversation": ack["conversation"]})
    history = await socket.receive_json_from()
    assert history["messages"][0]["attachments"] == [{"name": "add.py", "size": len(SOURCE)}]
    assert "content" not in history["messages"][0]["attachments"][0]  # the page shows chips, not the text
    await ConversationHistory(await owner_key_of(guest), ack["conversation"]).invalidate()  # read from the database
    await send(socket, "And now?", conversation=ack["conversation"])
    assert engine.conversations[-1][0]["content"].startswith("File: add.py\n```\n")
    await socket.disconnect()


async def test_other_tabs_are_told_the_files_names(worker):
    guest = await new_guest(identified=True)
    first, second = await connect(guest), await connect(guest)
    await send(first, "Look", attachments=[{"name": "notes.txt", "content": "hello"}])
    turn = (await receive_until(second, "turn"))[-1]
    assert turn["user"]["attachments"] == [{"name": "notes.txt", "size": 5}]
    await first.disconnect()
    await second.disconnect()


@pytest.mark.parametrize("attachments, code, words", [
    ([{"name": "blob.bin", "content": "PK\x03\x04\x00\x00"}], "bad_field", "not a text file"),
    ([{"name": "bad.txt", "content": "half a pair \ud800"}], "bad_field", "not a text file"),
    ([{"name": "", "content": "x"}], "bad_field", "name"),
    ([{"name": "x" * 201, "content": "x"}], "bad_field", "name"),
    ([{"name": "a.txt"}], "bad_field", "content"),
    ([{"name": "a.txt", "content": "x", "mode": "rw"}], "bad_field", "attachment"),
    ("a.txt", "bad_field", "list"),
    ([{"name": f"{i}.txt", "content": "x"} for i in range(11)], "too_large", "at most 10"),
    ([{"name": "big.txt", "content": "x" * 60_000}, {"name": "more.txt", "content": "y" * 40_001}],
     "too_large", "more.txt"),
])
async def test_a_bad_attachment_is_refused_and_nothing_is_stored(worker, attachments, code, words):
    socket = await connect(await new_guest())
    before = await message_count()
    error = await refused(socket, {"type": "send", "conversation": None, "content": "Look at this",
                                   "attachments": attachments})
    assert error["code"] == code and words in error["detail"], error
    assert await message_count() == before
    assert await sync_to_async(Conversation.objects.count)() == 0
    await socket.disconnect()


async def test_the_attachment_limit_is_a_setting(worker, settings):
    settings.CHAT_MAX_ATTACHMENT_CHARS = 10
    socket = await connect(await new_guest())
    error = await refused(socket, {"type": "send", "conversation": None, "content": "Hi",
                                   "attachments": [{"name": "a.txt", "content": "x" * 11}]})
    assert error["code"] == "too_large" and "CHAT_MAX_ATTACHMENT_CHARS" in error["detail"]
    await socket.disconnect()


async def test_an_edit_keeps_the_files_unless_it_sends_others(worker, engine):
    socket = await connect(await new_guest())
    frames = await send(socket, "Check", attachments=[{"name": "a.py", "content": "x = 1\n"}])
    conversation, message = frames[0]["conversation"], frames[0]["message"]
    await socket.send_json_to({"type": "edit", "conversation": conversation, "message": message,
                               "content": "Check again", "params": {"max_new_tokens": 3}})
    edited = (await receive_until(socket, "done"))[0]
    stored = await sync_to_async(Message.objects.get)(pk=edited["message"])
    assert stored.attachments == [{"name": "a.py", "content": "x = 1\n"}]
    assert engine.conversations[-1][-1]["content"].startswith("File: a.py\n")
    await socket.disconnect()


def test_a_file_with_backticks_gets_a_longer_fence():
    text = prompt_content("Explain", [{"name": "README.md", "content": "```sh\nmake\n```"}])
    assert text == "File: README.md\n````\n```sh\nmake\n```\n````\n\nExplain"
    assert prompt_content("Plain", []) == "Plain"


async def test_the_admin_transcript_shows_the_file(worker, client, django_user_model):
    socket = await connect(await new_guest())
    frames = await send(socket, "What does it do?", attachments=[{"name": "add.py", "content": SOURCE}])
    await socket.disconnect()
    staff = await sync_to_async(django_user_model.objects.create_superuser)("reviewer", "r@example.com", "pw")
    await sync_to_async(client.force_login)(staff)
    page = await sync_to_async(client.get)(f"/admin/chat/conversation/{frames[0]['conversation']}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "add.py" in html and "return a + b" in html


# --- presets and conversation settings --------------------------------------------------------------

async def presets_of(socket):
    await socket.send_json_to({"type": "presets"})
    answer = await socket.receive_json_from(timeout=30)
    assert answer["type"] == "presets"
    return answer["items"]


async def test_everyone_sees_the_built_in_presets(worker):
    socket = await connect(await new_guest())
    items = await presets_of(socket)
    names = [item["name"] for item in items if item["builtin"]]
    assert "Concise" in names and "Code reviewer" in names
    assert all(item["system"] for item in items if item["id"] in ("concise", "code-reviewer"))
    await socket.disconnect()


async def test_presets_are_saved_edited_and_deleted_by_their_owner_only(worker):
    alice, bob = await new_guest(identified=True), await new_guest()
    alice_tab, alice_other_tab, bob_tab = await connect(alice), await connect(alice), await connect(bob)
    await alice_tab.send_json_to({"type": "preset_save", "preset": {
        "name": "Pirate", "system": "Talk like a pirate.", "temperature": 0.2, "max_new_tokens": 6}})
    changed = await alice_tab.receive_json_from(timeout=30)
    assert changed["type"] == "presets"
    mine = [item for item in changed["items"] if not item["builtin"]]
    assert mine == [{"id": changed["saved"], "name": "Pirate", "system": "Talk like a pirate.", "builtin": False,
                     "temperature": 0.2, "max_new_tokens": 6}]
    assert (await alice_other_tab.receive_json_from(timeout=30))["type"] == "presets"  # every tab hears of it
    preset_id = changed["saved"]

    # Bob sees only the built-in ones, and cannot change or delete Alice's.
    assert all(item["builtin"] for item in await presets_of(bob_tab))
    error = await refused(bob_tab, {"type": "preset_save", "preset": {"id": preset_id, "name": "Mine now"}})
    assert error["code"] == "not_found"
    error = await refused(bob_tab, {"type": "preset_delete", "preset": preset_id})
    assert error["code"] == "not_found"
    assert (await sync_to_async(Preset.objects.get)(pk=preset_id)).name == "Pirate"

    # Alice edits it (values left out go back to the server's defaults), then deletes it.
    await alice_tab.send_json_to({"type": "preset_save", "preset": {"id": preset_id, "name": "Pirate 2",
                                                                    "system": "Arr."}})
    edited = await alice_tab.receive_json_from(timeout=30)
    assert [i for i in edited["items"] if i["id"] == preset_id] == [
        {"id": preset_id, "name": "Pirate 2", "system": "Arr.", "builtin": False}]
    await alice_tab.send_json_to({"type": "preset_delete", "preset": preset_id})
    deleted = await alice_tab.receive_json_from(timeout=30)
    assert all(item["builtin"] for item in deleted["items"])
    for socket in (alice_tab, alice_other_tab, bob_tab):
        await socket.disconnect()


@pytest.mark.parametrize("preset, code", [
    ({"name": ""}, "bad_field"),
    ({"name": "x" * 81}, "bad_field"),
    ({"name": "Hot", "temperature": 3}, "bad_params"),
    ({"name": "Long", "max_new_tokens": 10**9}, "bad_params"),
    ({"name": "Odd", "colour": "red"}, "bad_field"),
    ({"name": "Wide", "top_k": -1}, "bad_params"),
    ({"name": "Talky", "stop": ["a", "b", "c", "d", "e"]}, "bad_params"),
    ({"id": "concise", "name": "Mine"}, "bad_field"),  # built-in ones are read-only
    ("Concise", "bad_field"),
])
async def test_a_bad_preset_is_refused(worker, preset, code):
    socket = await connect(await new_guest())
    error = await refused(socket, {"type": "preset_save", "preset": preset})
    assert error["code"] == code, error
    assert await sync_to_async(Preset.objects.count)() == 0
    await socket.disconnect()


async def test_a_preset_keeps_top_k_min_p_repetition_penalty_and_stop(worker):
    socket = await connect(await new_guest(identified=True))
    controls = {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.2, "stop": ["END"]}
    await socket.send_json_to({"type": "preset_save", "preset": {"name": "Careful", **controls}})
    saved = await socket.receive_json_from(timeout=30)
    [mine] = [item for item in saved["items"] if not item["builtin"]]
    assert mine == {"id": saved["saved"], "name": "Careful", "system": "", "builtin": False, **controls}
    await socket.disconnect()


async def test_a_conversation_remembers_its_settings(worker):
    guest = await new_guest(identified=True)
    socket, other_tab = await connect(guest), await connect(guest)
    chosen = {"preset": "concise", "system": "Be brief.", "max_new_tokens": 6}
    frames = await send(socket, "Hi", settings=chosen)
    conversation = frames[0]["conversation"]
    await socket.send_json_to({"type": "history", "conversation": conversation})
    assert (await socket.receive_json_from())["settings"] == chosen

    changed = {"temperature": 0.1}
    await socket.send_json_to({"type": "configure", "conversation": conversation, "settings": changed})
    configured = await receive_until(other_tab, "configured")
    assert (await receive_until(socket, "configured"))[-1] == configured[-1]  # every tab, this one too
    assert configured[-1] == {"type": "configured", "conversation": conversation, "settings": changed}
    stored = await sync_to_async(Conversation.objects.get)(pk=conversation)
    assert stored.settings == changed

    # Someone else's conversation cannot be configured, and bad settings are refused.
    stranger = await connect(await new_guest())
    error = await refused(stranger, {"type": "configure", "conversation": conversation, "settings": {}})
    assert error["code"] == "not_found"
    error = await refused(socket, {"type": "configure", "conversation": conversation,
                                   "settings": {"top_p": 0}})
    assert error["code"] == "bad_params"
    error = await refused(socket, {"type": "configure", "conversation": conversation,
                                   "settings": {"preset": "no-such-builtin"}})
    assert error["code"] == "bad_field"
    for s in (socket, other_tab, stranger):
        await s.disconnect()


async def test_a_conversation_without_settings_says_none(worker):
    socket = await connect(await new_guest())
    frames = await send(socket, "Hi")
    await socket.send_json_to({"type": "history", "conversation": frames[0]["conversation"]})
    assert "settings" not in await socket.receive_json_from()
    assert text_of(frames) is not None
    await socket.disconnect()


async def test_the_system_prompt_sent_is_the_one_the_reply_uses(worker, engine):
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Hi",
                               "params": {"system": "You review code.", "max_new_tokens": 3},
                               "settings": {"preset": "code-reviewer", "system": "You review code."}})
    frames = await receive_until(socket, "done")
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["message"])
    assert reply.params["system"] == "You review code."
    await socket.disconnect()
