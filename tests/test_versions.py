"""Versions of messages (regenerate and edit keep the replaced ones; `switch` brings them back),
titles, a rename that keeps the list's order, and stored reply statistics in `history`."""
import importlib

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps

from chat.models import Conversation, Message
from chat.turns import title_from

from tests.chat_support import connect, new_guest, receive_until, send_turn, text_of

pytestmark = pytest.mark.django_db(transaction=True)


async def history(socket, conversation):
    await socket.send_json_to({"type": "history", "conversation": conversation})
    return await receive_until(socket, "history")


async def switch(socket, conversation, message):
    await socket.send_json_to({"type": "switch", "conversation": conversation, "message": message})
    switched = await socket.receive_json_from()
    assert switched == {"type": "switched", "conversation": conversation, "message": message}
    return (await history(socket, conversation))[-1]["messages"]


async def test_regenerated_replies_are_versions_and_switching_brings_one_back_for_the_model_too(worker, engine):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "Pick a word", temperature=1.0, seed=1)
    conversation, old_reply = first[0]["conversation"], first[-1]["message"]
    await socket.send_json_to({"type": "regenerate", "conversation": conversation,
                               "params": {"temperature": 1.0, "seed": 2, "max_new_tokens": 8}})
    new_reply = (await receive_until(socket, "done"))[-1]["message"]
    messages = (await history(socket, conversation))[-1]["messages"]
    assert [m["id"] for m in messages] == [first[0]["message"], new_reply]
    assert "versions" not in messages[0] and messages[1]["versions"] == [old_reply, new_reply]

    messages = await switch(socket, conversation, old_reply)
    assert [m["id"] for m in messages] == [first[0]["message"], old_reply]
    assert messages[1]["content"] == text_of(first) and messages[1]["versions"] == [old_reply, new_reply]
    # the next turn continues the branch now shown
    await send_turn(socket, "And another", conversation=conversation)
    assert engine.conversations[-1][:2] == [{"role": "user", "content": "Pick a word"},
                                            {"role": "assistant", "content": text_of(first)}]
    await socket.disconnect()


async def test_switching_back_from_an_edit_restores_the_later_turns(worker):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "First question")
    conversation = first[0]["conversation"]
    second = await send_turn(socket, "Second question", conversation=conversation)
    await socket.send_json_to({"type": "edit", "conversation": conversation, "message": first[0]["message"],
                               "content": "Edited question", "params": {"max_new_tokens": 5}})
    edited = await receive_until(socket, "done")
    messages = (await history(socket, conversation))[-1]["messages"]
    assert [m["id"] for m in messages] == [edited[0]["message"], edited[-1]["message"]]
    assert messages[0]["versions"] == [first[0]["message"], edited[0]["message"]]

    messages = await switch(socket, conversation, first[0]["message"])
    assert [m["id"] for m in messages] == [first[0]["message"], first[-1]["message"],
                                           second[0]["message"], second[-1]["message"]]
    stored = await sync_to_async(list)(Message.objects.filter(conversation_id=conversation, superseded=True)
                                       .values_list("id", flat=True))
    assert stored == [edited[0]["message"], edited[-1]["message"]]
    await socket.disconnect()


async def test_switch_is_refused_for_a_message_of_another_conversation_or_user(worker):
    mine, theirs = await connect(await new_guest()), await connect(await new_guest())
    frames = await send_turn(mine, "Hello")
    other = await send_turn(theirs, "Hi")
    await theirs.send_json_to({"type": "switch", "conversation": frames[0]["conversation"],
                               "message": frames[-1]["message"]})
    assert (await theirs.receive_json_from())["code"] == "not_found"
    await mine.send_json_to({"type": "switch", "conversation": frames[0]["conversation"],
                             "message": other[-1]["message"]})
    refused = await mine.receive_json_from()
    assert refused["code"] == "not_found" and "no such message" in refused["detail"]
    await mine.disconnect()
    await theirs.disconnect()


async def test_history_and_done_carry_the_stored_statistics(worker):
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Count to ten", max_new_tokens=8)
    done = frames[-1]
    reply = await sync_to_async(Message.objects.get)(pk=done["message"])
    assert done["usage"]["completion_tokens"] == reply.completion_tokens > 1
    assert done["tokens_per_second"] == round(reply.tokens_per_second, 2) > 0
    stored = (await history(socket, done["conversation"]))[-1]["messages"][-1]
    live_usage = {k: v for k, v in done["usage"].items() if k != "cached_tokens"}  # done's only: not stored
    assert stored["usage"] == live_usage and stored["tokens_per_second"] == done["tokens_per_second"]
    await socket.disconnect()


async def test_rename_keeps_the_order_and_the_users_title_survives_an_edit(worker):
    socket = await connect(await new_guest())
    older = (await send_turn(socket, "## How do I *sort* a list in Python?"))[0]
    newer = (await send_turn(socket, "Second chat"))[0]
    assert (await sync_to_async(Conversation.objects.get)(pk=older["conversation"])).title == \
        "How do I sort a list in Python?"
    await socket.send_json_to({"type": "rename", "conversation": older["conversation"], "title": "Sorting"})
    await receive_until(socket, "changed")
    await socket.send_json_to({"type": "list"})
    items = (await receive_until(socket, "conversations"))[-1]["items"]
    assert [(i["id"], i["title"]) for i in items[:2]] == [(newer["conversation"], "Second chat"),
                                                          (older["conversation"], "Sorting")]
    # editing the first message retitles a conversation the user has not renamed, and only that
    for frame, content in ((older, "Sorting by key"), (newer, "Edited second chat")):
        await socket.send_json_to({"type": "edit", "conversation": frame["conversation"],
                                   "message": frame["message"], "content": content})
        await receive_until(socket, "done")
    titles = dict(await sync_to_async(list)(Conversation.objects.values_list("id", "title")))
    assert titles[older["conversation"]] == "Sorting" and titles[newer["conversation"]] == "Edited second chat"
    await socket.disconnect()


def test_titles_come_from_the_first_line_of_prose_cut_at_a_word():
    assert title_from("```python\nprint(1)\n```\nWhy does this print 1?") == "Why does this print 1?"
    long = title_from("Explain the difference between processes and threads in operating systems please")
    assert long == "Explain the difference between processes and threads in…" and len(long) <= 60
    assert title_from("snake_case_names stay") == "snake_case_names stay"
    assert title_from("```\nonly code\n```") == "```\nonly code\n```".replace("\n", " ")


def test_messages_stored_before_versions_get_their_branches(db):
    """The migration's backfill: an active message follows the previous active one; a superseded one
    the message stored just before it."""
    link_branches = importlib.import_module("chat.migrations.0007_message_versions").link_branches
    conversation = Conversation.objects.create(guest_key="g")
    ids = [Message.objects.create(conversation=conversation, role=role, content=role, superseded=superseded).pk
           for role, superseded in (("user", False), ("assistant", True), ("assistant", False),
                                    ("user", True), ("assistant", True), ("user", False), ("assistant", False))]
    Message.objects.update(parent=None)
    link_branches(apps, None)
    parents = dict(Message.objects.values_list("id", "parent_id"))
    u1, r1_old, r1, u2_old, r2_old, u2, r2 = ids
    assert parents == {u1: None, r1_old: u1, r1: u1, u2_old: r1, r2_old: u2_old, u2: r1, r2: u2}


def test_a_switch_takes_the_owners_lock_before_it_checks_what_is_generating(db, monkeypatch):
    """On PostgreSQL the lock is an advisory lock (chat.turns.take_owner_lock, the one a turn takes), so a
    turn starting in another tab waits for the switch; here it is seen taken, first, inside the switch's
    transaction."""
    from django.db import connection

    from chat import turns, versions
    from chat.models import Owner

    conversation = Conversation.objects.create(guest_key="g1")
    message = Message.objects.create(conversation=conversation, role="user", content="hi")
    seen = []
    real_lock, real_generating = turns.take_owner_lock, versions.generating_replies
    monkeypatch.setattr(versions, "take_owner_lock",
                        lambda owner: (seen.append(("lock", owner.key, connection.in_atomic_block)), real_lock(owner)))
    monkeypatch.setattr(versions, "generating_replies",
                        lambda *args: (seen.append(("check",)), real_generating(*args))[1])
    versions.switch_to(Owner(guest_key="g1"), conversation.pk, message.pk)
    assert seen == [("lock", "gg1", True), ("check",)]
