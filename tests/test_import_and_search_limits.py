"""Import and search are admitted like turns: rates per user (imports of guests per address), the
conversation cap, a short write lock for an import, and a search that reads only its owner's rows."""
import json

import pytest
from django.db import connection
from django.test import Client

from chat import search
from chat.models import Conversation, Message, Owner
from tests.chat_support import connect, new_guest, receive_until
from tests.test_search_share import conversation_of, signed_in

EXPORT = {"format": "chatsite.conversation", "version": 1,
          "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def post(client, body=EXPORT):
    return client.post("/conversations/import", json.dumps(body) if isinstance(body, dict) else body,
                       content_type="application/json")


def test_imports_are_counted_per_user_and_a_refused_one_costs_nothing(db, clean_redis, settings):
    settings.CHAT_IMPORTS_PER_HOUR = 2
    _, alice = signed_in("alice")
    _, bob = signed_in("bob")
    assert post(alice, b"{not json").status_code == 400  # refused before it counts
    assert [post(alice).status_code for _ in range(2)] == [201, 201]
    refused = post(alice)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert refused.json()["error"] == "rate_limited" and "CHAT_IMPORTS_PER_HOUR" in refused.json()["detail"]
    assert post(bob).status_code == 201  # another user's own count
    assert Conversation.objects.count() == 3


@pytest.mark.django_db(transaction=True)  # admit_guest's database_sync_to_async closes the test's connection
def test_guests_imports_are_counted_per_address_and_a_visitor_becomes_a_guest(clean_redis, settings):
    settings.CHAT_IMPORTS_PER_HOUR = 3
    first, second, third = Client(), Client(), Client()
    first.get("/")
    assert post(first).status_code == 201  # a visitor's first import made its guest identity
    assert post(first).status_code == 201  # the same guest: its session keeps it
    assert Conversation.objects.values("guest_key").distinct().count() == 1
    assert post(second).status_code == 201
    refused = post(third)  # a new identity from the same address does not start a new count
    assert refused.status_code == 429 and "per address for guests" in refused.json()["detail"]


def test_the_conversation_cap_holds_for_imports(db, clean_redis, settings):
    settings.CHAT_MAX_CONVERSATIONS = 1
    _, alice = signed_in("alice")
    assert post(alice).status_code == 201
    refused = post(alice)
    assert refused.status_code == 409 and refused.json()["error"] == "too_many_conversations"


def test_deeply_nested_json_is_a_clear_400(db, clean_redis):
    _, alice = signed_in("alice")
    response = post(alice, b"[" * 100_000)
    assert response.status_code == 400 and "nests" in response.json()["detail"]
    assert Conversation.objects.count() == 0


def test_an_import_writes_its_rows_in_a_few_statements(db, clean_redis):
    _, alice = signed_in("alice")
    body = {**EXPORT, "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}
                                   for i in range(1000)]}
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert post(alice, body).status_code == 201
    writes = [q for q in queries.captured_queries if q["sql"].startswith(("INSERT", "UPDATE"))]
    assert len(writes) <= 40  # batches, as many as the database's bound-parameter limit needs (one per row before)
    conversation = Conversation.objects.get()
    messages = list(conversation.active_messages())
    assert [m.content for m in messages] == [f"m{i}" for i in range(1000)]
    assert messages[0].parent_id is None and all(b.parent_id == a.pk for a, b in zip(messages, messages[1:]))


# --- search -----------------------------------------------------------------------------------


def test_short_words_match_whole_words_and_longer_ones_word_starts(db):
    alice, _ = signed_in("alice")
    apple = conversation_of(alice, "Fruit", "an apple a day", "ok")
    conversation_of(alice, "Other", "apples only", "fine")
    assert [item["conversation"] for item in search.search(alice, "a")] == [apple.pk]
    assert len(search.search(alice, "ap")) == 0  # "ap" is no word of either
    assert len(search.search(alice, "app")) == 2
    [item] = search.search(alice, "a")
    assert [s["text"] for s in item["snippet"] if s["match"]] == ["a"]


@pytest.mark.django_db(transaction=True)
async def test_searches_per_minute_are_limited_per_user(clean_redis, settings):
    settings.CHAT_SEARCHES_PER_MINUTE = 2
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "x", "params": {"max_new_tokens": 1}})
    await receive_until(socket, "ack")  # an identity (no worker needed: the turn ends no_worker)
    for _ in range(2):
        await socket.send_json_to({"type": "search", "query": "hello"})
        await receive_until(socket, "search_results")
    await socket.send_json_to({"type": "search", "query": "hello"})
    refused = (await receive_until(socket, "error"))[-1]
    while refused["code"] == "no_worker":
        refused = (await receive_until(socket, "error"))[-1]
    assert refused["code"] == "rate_limited" and refused["retry_after"] > 0
    assert "CHAT_SEARCHES_PER_MINUTE" in refused["detail"]
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_slow_search_holds_up_no_other_sockets_frames(clean_redis, monkeypatch):
    import asyncio
    import threading

    release, searching = threading.Event(), threading.Event()
    real_search = search.search

    def slow_search(owner, query):  # stands in for a search over a large table
        searching.set()
        release.wait(30)
        return real_search(owner, query)

    monkeypatch.setattr(search, "search", slow_search)
    searcher, other = await connect(await new_guest(identified=True)), await connect(await new_guest(identified=True))
    try:
        await searcher.send_json_to({"type": "search", "query": "anything"})
        await asyncio.get_running_loop().run_in_executor(None, searching.wait, 10)
        await other.send_json_to({"type": "list"})  # its database call runs while the search still does
        assert (await other.receive_json_from(timeout=10))["type"] == "conversations"
        assert not release.is_set()
    finally:
        release.set()
    assert (await receive_until(searcher, "search_results"))[-1]["items"] == []
    for socket in (searcher, other):
        await socket.disconnect()
