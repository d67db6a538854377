"""A page view makes no guest: crawlers, link previews and health checks of `/` spend nothing of
the per-address guest quota. The view keeps a session (its cookie is where the guest will be named);
the socket makes the guest at its visitor's first act (a `send`, a preset saved, an import), and the
browser's other tabs become that guest too. A visitor the quota refuses gets the page, as a 429."""
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.test import Client

from chat.models import GUEST_SESSION_KEY, Conversation
from tests.chat_support import connect, new_guest, owner_key_of, receive_until

pytestmark = pytest.mark.django_db(transaction=True)

EXPORT = {"format": "chatsite.conversation", "version": 1,
          "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def guests():
    return [s for s in Session.objects.all() if GUEST_SESSION_KEY in s.get_decoded()]


def import_one(client):
    """A visitor's first act over HTTP: an import makes its guest."""
    return client.post("/conversations/import", json.dumps(EXPORT), content_type="application/json")


def test_thirty_cookieless_page_views_create_no_guest_and_the_page_answers_200(clean_redis, settings):
    settings.CHAT_GUESTS_PER_ADDRESS = 5
    visitors = [Client() for _ in range(30)]
    for visitor in visitors:
        page = visitor.get("/")
        assert page.status_code == 200 and 'id="composer"' in page.content.decode()
        assert page.cookies["sessionid"].value  # the session its socket will name the guest in
    assert guests() == [] and not clean_redis.keys("chat:addr:*")
    assert import_one(visitors[0]).status_code == 201  # the quota is untouched: a visitor's first act works
    assert len(guests()) == 1


def test_a_guest_is_made_once_and_a_later_page_view_keeps_it(clean_redis):
    client = Client()
    client.get("/")
    assert [import_one(client).status_code for _ in range(2)] == [201, 201]
    page = client.get("/")
    assert page.status_code == 200
    [guest] = guests()
    assert set(Conversation.objects.values_list("guest_key", flat=True)) == {guest.get_decoded()[GUEST_SESSION_KEY]}


def test_a_refused_visitor_gets_the_page_as_a_429_with_the_sign_in_link(clean_redis, settings):
    settings.CHAT_GUESTS_PER_ADDRESS = 2
    assert [import_one(Client()).status_code for _ in range(2)] == [201, 201]
    refused = import_one(Client())
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert refused.json()["error"] == "too_many_guests"

    page = Client().get("/")
    html = page.content.decode()
    assert page.status_code == 429 and page["Content-Type"].startswith("text/html")
    assert 0 < int(page["Retry-After"]) <= 3600
    assert "Too many new guests from your address" in html and 'href="/accounts/login/"' in html
    assert 'id="composer"' in html  # the page itself, not a plain-text refusal
    assert len(guests()) == 2


def test_daphne_says_too_many_requests_not_unknown_status():
    from twisted.web import http
    from twisted.web.test.requesthelper import DummyChannel

    import chatsite.asgi  # noqa: F401  (daphne loads it; it fills in Twisted's missing phrases)

    request = http.Request(DummyChannel())  # what daphne's setResponseCode(status) writes on the status line
    request.setResponseCode(429)
    assert request.code_message == b"Too Many Requests"


async def test_a_socket_makes_no_guest_until_its_first_send(worker, clean_redis):
    session = await new_guest()  # a session cookie without a guest in it
    socket = await connect(session)
    for frame in ({"type": "list"}, {"type": "presets"}, {"type": "search", "query": "x"}):
        await socket.send_json_to(frame)
    answers = [await socket.receive_json_from(timeout=5) for _ in range(3)]
    assert answers[0] == {"type": "conversations", "items": []} and answers[2]["items"] == []
    assert all(item["builtin"] for item in answers[1]["items"])
    await socket.send_json_to({"type": "history", "conversation": 1})
    assert (await socket.receive_json_from(timeout=5))["code"] == "not_found"
    assert await sync_to_async(guests)() == [] and not clean_redis.keys("chat:addr:*")

    await socket.send_json_to({"type": "send", "conversation": None, "content": "hello",
                               "params": {"max_new_tokens": 3}})
    ack = (await receive_until(socket, "ack"))[-1]
    await receive_until(socket, "done")
    key = await owner_key_of(session)
    conversation = await sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
    assert conversation.owner.key == key  # the guest kept in the browser's session
    await socket.send_json_to({"type": "list"})
    assert [item["id"] for item in (await receive_until(socket, "conversations"))[-1]["items"]] == [conversation.pk]
    await socket.disconnect()


async def test_a_tab_open_before_another_tab_makes_the_guest_hears_that_tabs_turns(worker, clean_redis):
    session = await new_guest()
    first, second = await connect(session), await connect(session)  # two tabs, neither a guest yet
    await first.send_json_to({"type": "send", "conversation": None, "content": "hello",
                              "params": {"max_new_tokens": 12}})
    ack = (await receive_until(first, "ack"))[-1]
    heard = await receive_until(second, "done")
    assert heard[0] == {"type": "changed"}  # its page reads its list again: the new guest's conversation
    assert heard[-1]["message"] == ack["reply"]
    await second.send_json_to({"type": "list"})
    assert [item["id"] for item in (await receive_until(second, "conversations"))[-1]["items"]] == [ack["conversation"]]
    assert len(await sync_to_async(guests)()) == 1
    for socket in (first, second):
        await socket.disconnect()


async def test_a_visitor_socket_speaks_for_the_guest_an_import_made(clean_redis):
    browser = Client()
    await sync_to_async(browser.get)("/")
    socket = await connect(browser.cookies["sessionid"].value)  # opened before the import
    imported = await sync_to_async(import_one)(browser)
    assert imported.status_code == 201
    await socket.send_json_to({"type": "history", "conversation": imported.json()["conversation"]})
    history = (await receive_until(socket, "history"))[-1]
    assert [m["content"] for m in history["messages"]] == ["hi", "hello"]
    await socket.disconnect()


async def test_a_socket_over_the_guest_quota_is_told_at_its_first_send_and_stays_open(worker, clean_redis, settings):
    settings.CHAT_GUESTS_PER_ADDRESS = 1
    first, second = await connect(await new_guest()), await connect(await new_guest())
    await first.send_json_to({"type": "send", "conversation": None, "content": "hi", "params": {"max_new_tokens": 2}})
    await receive_until(first, "done")
    await second.send_json_to({"type": "send", "conversation": None, "content": "hi"})
    refused = await second.receive_json_from(timeout=5)
    assert refused["code"] == "too_many_guests" and refused["retry_after"] > 0 and "Sign in" in refused["detail"]
    await second.send_json_to({"type": "list"})
    assert await second.receive_json_from(timeout=5) == {"type": "conversations", "items": []}
    for socket in (first, second):
        await socket.disconnect()
