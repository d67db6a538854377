"""Search over one's own conversations, export/import, and read-only share links."""
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from chat import conversation_export, search
from chat.conversation_export import MAX_IMPORT_BYTES
from chat.models import Conversation, Message, Owner, ShareLink
from tests.chat_support import connect, new_guest, owner_key_of, receive_until


def conversation_of(owner, title, *contents, superseded=()):
    """A conversation of `owner` with alternating user/assistant messages."""
    conversation = Conversation.objects.create(title=title, **owner.fields())
    for index, content in enumerate(contents):
        role = "user" if index % 2 == 0 else "assistant"
        Message.objects.create(conversation=conversation, role=role, content=content,
                               finish_reason="stop" if role == "assistant" else "", superseded=index in superseded)
    return conversation


def signed_in(name):
    user = User.objects.create_user(name, password=f"{name}-secret-1")
    client = Client()
    client.force_login(user)
    return Owner(user_id=user.pk), client


def texts(items):
    return ["".join(segment["text"] for segment in item["snippet"]) for item in items]


def matches(item):
    return [segment["text"] for segment in item["snippet"] if segment["match"]]


# --- search ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_search_over_the_socket_finds_a_word_of_a_message_and_not_another_users(clean_redis):
    alice_session, bob_session = await new_guest(identified=True), await new_guest(identified=True)
    alice_socket, bob_socket = await connect(alice_session), await connect(bob_session)
    alice = Owner(guest_key=(await owner_key_of(alice_session))[1:])
    bob = Owner(guest_key=(await owner_key_of(bob_session))[1:])
    mine = await sync_to_async(conversation_of)(alice, "Animals", "Where do quokkas live?",
                                                "Quokkas live on Rottnest Island, near Perth.")
    await sync_to_async(conversation_of)(bob, "Bob's notes", "my quokka password is hunter2", "Noted.")

    await alice_socket.send_json_to({"type": "search", "query": "rottn"})
    frame = (await receive_until(alice_socket, "search_results"))[-1]
    assert frame["query"] == "rottn"
    assert [(item["conversation"], item["title"]) for item in frame["items"]] == [(mine.pk, "Animals")]
    assert matches(frame["items"][0]) == ["Rottnest"]
    assert "message" in frame["items"][0]

    await alice_socket.send_json_to({"type": "search", "query": "quokka"})
    frame = (await receive_until(alice_socket, "search_results"))[-1]
    assert [item["conversation"] for item in frame["items"]] == [mine.pk]
    assert "hunter2" not in json.dumps(frame)

    await bob_socket.send_json_to({"type": "search", "query": "rottnest"})
    assert (await receive_until(bob_socket, "search_results"))[-1]["items"] == []
    await bob_socket.send_json_to({"type": "search", "query": 5})
    assert (await receive_until(bob_socket, "error"))[-1]["code"] == "bad_field"
    await alice_socket.disconnect()
    await bob_socket.disconnect()


def test_every_word_must_match_and_titles_count_too(db):
    alice, _ = signed_in("alice")
    python = conversation_of(alice, "Python packaging", "How do I publish a wheel?", "Use twine upload.")
    rust = conversation_of(alice, "Rust", "How do I publish a crate?", "Run cargo publish.")
    assert [item["conversation"] for item in search.search(alice, "publish")] == [rust.pk, python.pk]
    assert [item["conversation"] for item in search.search(alice, "publish cargo")] == [rust.pk]
    title_only = search.search(alice, "packag")
    assert [item["conversation"] for item in title_only] == [python.pk]
    assert "message" not in title_only[0] and matches(title_only[0]) == ["packaging"]
    assert search.search(alice, "") == [] and search.search(alice, "  ,;  ") == []


def test_search_reads_only_the_active_branch(db):
    alice, _ = signed_in("alice")
    conversation_of(alice, "Edited", "first wording about zeppelins", "old reply", "second wording", "new reply",
                    superseded=(0, 1))
    assert search.search(alice, "zeppelins") == []
    assert len(search.search(alice, "second")) == 1


def test_query_syntax_of_the_index_is_only_text(db):
    alice, _ = signed_in("alice")
    conversation_of(alice, "Syntax", 'a "quoted" NEAR(thing) * with OR and AND', "ok")
    for query in ['"', "*", "NEAR(", "OR", "a AND", "-x", "col:thing", "'); DROP TABLE chat_message; --", "\x00"]:
        search.search(alice, query)  # no error
    assert len(search.search(alice, 'near(thing')) == 1
    assert Message.objects.count() == 2


def test_snippets_are_plain_text_around_the_match(db):
    alice, _ = signed_in("alice")
    long_text = "word " * 60 + "<b>Zebra</b> crossing <script>alert(1)</script> " + "tail " * 60
    conversation_of(alice, "Long", long_text, "ok")
    [item] = search.search(alice, "zebra")
    text = texts([item])[0]
    assert text.startswith("…") and text.endswith("…") and len(text) <= search.SNIPPET_CHARS + 2
    assert matches(item) == ["Zebra"]
    assert "<b>" in text  # text, for the client to show as text: the server never makes markup of it
    assert search.snippet("Café crème", ["cafe"]) == [{"text": "Café", "match": True},
                                                      {"text": " crème", "match": False}]


@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_the_index_comes_back_after_a_migration_rebuilds_the_table(db):
    alice, _ = signed_in("alice")
    with connection.cursor() as cursor:  # what Django's table rebuild on SQLite leaves behind
        for name in ("insert", "delete", "update"):
            cursor.execute(f"DROP TRIGGER chat_message_fts_{name}")
    search.ensure_index()
    conversation_of(alice, "After", "a message about narwhals", "ok")
    assert len(search.search(alice, "narwhal")) == 1


# --- export and import -------------------------------------------------------------------------


def test_export_then_import_then_export_gives_the_same_messages(db):
    alice, alice_client = signed_in("alice")
    bob, bob_client = signed_in("bob")
    original = conversation_of(alice, "Round trip", "Hello **there**", "Hi! `code`\n\n```py\nprint(1)\n```",
                               "Tell me more — ünïcödé ✓", "Sure.")
    Message.objects.filter(conversation=original, role="assistant").update(model_name="qwen")
    first = original.active_messages().first()
    first.attachments = [{"name": "notes.py", "content": "print('hi')\n"}]
    first.save(update_fields=["attachments"])

    exported = alice_client.get(f"/conversations/{original.pk}/export.json")
    assert exported.status_code == 200 and "attachment" in exported["Content-Disposition"] and exported.streaming
    body = b"".join(exported.streaming_content)
    data = json.loads(body)
    assert {k: v for k, v in data.items() if k != "exported"} == {  # streamed, the same document
        k: v for k, v in conversation_export.as_json(original).items() if k != "exported"}
    assert [m["content"] for m in data["messages"]] == [m.content for m in original.active_messages()]

    imported = bob_client.post("/conversations/import", body, content_type="application/json")
    assert imported.status_code == 201, imported.content
    copy = Conversation.objects.get(pk=imported.json()["conversation"])
    assert copy.owner.key == bob.key and copy.pk != original.pk and copy.title == "Round trip"
    again = json.loads(b"".join(bob_client.get(f"/conversations/{copy.pk}/export.json").streaming_content))
    assert again["messages"] == data["messages"] and again["title"] == data["title"]
    assert again["messages"][0]["attachments"] == [{"name": "notes.py", "content": "print('hi')\n"}]

    markdown = alice_client.get(f"/conversations/{original.pk}/export.md")
    assert markdown["Content-Type"].startswith("text/markdown")
    assert b"".join(markdown.streaming_content).decode().startswith("# Round trip\n\n## User\n\nFile: notes.py\n```\nprint('hi')\n```\n\n"
                                                "Hello **there**")


def test_another_users_conversation_cannot_be_exported(db):
    alice, _ = signed_in("alice")
    _, bob_client = signed_in("bob")
    conversation = conversation_of(alice, "Private", "secret", "ok")
    for path in (f"/conversations/{conversation.pk}/export.json", f"/conversations/{conversation.pk}/export.md",
                 "/conversations/999999/export.json", f"/conversations/{2**70}/export.json"):
        assert bob_client.get(path).status_code == 404
    assert Client().get(f"/conversations/{conversation.pk}/export.json").status_code == 404


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "not a conversation export"),
    (json.dumps({"format": "chatsite.conversation", "version": 1, "messages": []}).encode(), 400, "non-empty"),
    (json.dumps({"format": "chatsite.conversation", "version": 1,
                 "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}).encode(),
     400, "message 2"),
    (json.dumps({"format": "chatsite.conversation", "version": 1,
                 "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}).encode(),
     400, "message 2"),
    (json.dumps({"format": "chatsite.conversation", "version": 2, "messages": []}).encode(), 400, "version"),
    (json.dumps({"format": "chatsite.conversation", "version": 1,
                 "messages": [{"role": "user", "content": "hi", "attachments": [{"name": "x", "content": "\x00"}]}]}
                ).encode(), 400, "not a text file"),
    (b"{" + b" " * MAX_IMPORT_BYTES + b"}", 413, "limit"),
])
def test_a_bad_import_is_refused_and_creates_nothing(db, body, status, words):
    _, client = signed_in("alice")
    response = client.post("/conversations/import", body, content_type="application/json")
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0


def test_import_needs_the_csrf_token(db):
    user = User.objects.create_user("alice", password="alice-secret-1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    body = json.dumps({"format": "chatsite.conversation", "version": 1, "messages": [{"role": "user", "content": "x"}]})
    assert client.post("/conversations/import", body, content_type="application/json").status_code == 403
    assert Conversation.objects.count() == 0


# --- share links -------------------------------------------------------------------------------


def test_a_shared_link_shows_the_active_branch_read_only_until_revoked(db):
    alice, alice_client = signed_in("alice")
    conversation = conversation_of(alice, "Shared chat", "old question", "old answer",
                                   "What is **2+2**? <script>alert(1)</script>", "It is **4**.\n\n<img src=x onerror=alert(2)>",
                                   superseded=(0, 1))
    assert alice_client.get(f"/conversations/{conversation.pk}/share").json() == {"shared": False}
    created = alice_client.post(f"/conversations/{conversation.pk}/share")
    assert created.status_code == 201
    link = created.json()
    assert link["shared"] and link["url"].endswith(f"/shared/{link['token']}") and len(link["token"]) >= 32
    assert alice_client.post(f"/conversations/{conversation.pk}/share").json()["token"] == link["token"]

    page = Client().get(f"/shared/{link['token']}")  # no sign-in
    html = page.content.decode()
    assert page.status_code == 200 and page["Referrer-Policy"] == "no-referrer"
    assert "<strong>4</strong>" in html and "Shared chat" in html
    assert "old answer" not in html and "old question" not in html
    assert "&lt;script&gt;" in html and "<img" not in html  # the message's markup shown as text
    assert "<form" not in html and "<textarea" not in html and "<script" not in html

    revoked = alice_client.delete(f"/conversations/{conversation.pk}/share")
    assert revoked.json() == {"shared": False, "revoked": 1}
    assert Client().get(f"/shared/{link['token']}").status_code == 404
    assert ShareLink.objects.get(token=link["token"]).revoked_at is not None
    new_link = alice_client.post(f"/conversations/{conversation.pk}/share").json()
    assert new_link["token"] != link["token"]


def test_a_share_is_a_snapshot_until_it_is_shared_again(db):
    alice, alice_client = signed_in("alice")
    conversation = conversation_of(alice, "Snap", "first question", "first answer")
    link = alice_client.post(f"/conversations/{conversation.pk}/share").json()
    answer = conversation.messages.get(content="first answer")
    answer.content += " and more, continued later"  # a reply continued after sharing
    answer.save()
    Message.objects.create(conversation=conversation, role="user", content="a later private question")
    Message.objects.create(conversation=conversation, role="assistant", content="a later answer", finish_reason="stop")
    html = Client().get(f"/shared/{link['token']}").content.decode()
    assert "first question" in html and "first answer" in html
    assert "continued later" not in html and "later private question" not in html and "a later answer" not in html

    again = alice_client.post(f"/conversations/{conversation.pk}/share").json()
    assert again["token"] == link["token"]  # the same link, showing the conversation as it is now
    html = Client().get(f"/shared/{link['token']}").content.decode()
    assert "continued later" in html and "later private question" in html and "a later answer" in html


def test_unknown_tokens_and_other_users_get_404(db):
    alice, _ = signed_in("alice")
    _, bob_client = signed_in("bob")
    conversation = conversation_of(alice, "Mine", "q", "a")
    assert Client().get("/shared/not-a-real-token").status_code == 404
    assert bob_client.post(f"/conversations/{conversation.pk}/share").status_code == 404
    assert bob_client.delete(f"/conversations/{conversation.pk}/share").status_code == 404
    assert ShareLink.objects.count() == 0


def test_a_shared_page_has_no_way_to_write(db):
    alice, alice_client = signed_in("alice")
    conversation = conversation_of(alice, "Mine", "q", "a")
    token = alice_client.post(f"/conversations/{conversation.pk}/share").json()["token"]
    visitor = Client()
    assert visitor.post(f"/shared/{token}").status_code == 405
    assert visitor.post(f"/conversations/{conversation.pk}/share").status_code == 404
    assert visitor.delete(f"/conversations/{conversation.pk}/share").status_code == 404
