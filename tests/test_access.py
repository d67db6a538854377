"""Who may see what: guests, signed-in users, staff; CSRF; production settings."""
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from bench.stack import ROOT
from chat.models import Conversation
from tests.chat_support import connect, send_turn

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(client):
    return client.cookies["sessionid"].value


def login(client, username, password):
    page = client.get("/accounts/login/")
    token = page.cookies["csrftoken"].value
    return client.post("/accounts/login/", {"username": username, "password": password,
                                            "csrfmiddlewaretoken": token}, HTTP_REFERER="http://127.0.0.1/")


async def test_a_guest_who_signs_in_keeps_their_conversations(worker):
    alice = await sync_to_async(User.objects.create_user)("alice", password="alice-secret-1")
    browser = Client(enforce_csrf_checks=True)
    await sync_to_async(browser.get)("/")
    socket = await connect(session_cookie(browser))  # its first send makes the guest (a page view makes none)
    frames = await send_turn(socket, "a question asked as a guest")
    await socket.disconnect()
    response = await sync_to_async(login)(browser, "alice", "alice-secret-1")
    assert response.status_code == 302
    conversation = await sync_to_async(Conversation.objects.get)(pk=frames[0]["conversation"])
    assert conversation.user_id == alice.pk
    socket = await connect(session_cookie(browser))  # the signed-in socket sees it
    await socket.send_json_to({"type": "list"})
    assert [c["id"] for c in (await socket.receive_json_from())["items"]] == [conversation.pk]
    await socket.disconnect()


async def test_signed_in_users_see_only_their_own_conversations(worker):
    await sync_to_async(User.objects.create_user)("alice", password="alice-secret-1")
    await sync_to_async(User.objects.create_user)("bob", password="bob-secret-1")
    alice_browser, bob_browser = Client(), Client()
    await sync_to_async(login)(alice_browser, "alice", "alice-secret-1")
    await sync_to_async(login)(bob_browser, "bob", "bob-secret-1")
    alice = await connect(session_cookie(alice_browser))
    frames = await send_turn(alice, "alice's private note")
    bob = await connect(session_cookie(bob_browser))
    await bob.send_json_to({"type": "history", "conversation": frames[0]["conversation"]})
    assert (await bob.receive_json_from())["code"] == "not_found"
    await bob.send_json_to({"type": "list"})
    assert (await bob.receive_json_from())["items"] == []
    await alice.disconnect()
    await bob.disconnect()


def test_the_admin_requires_staff(db):
    User.objects.create_user("mallory", password="mallory-secret-1")
    client = Client()
    client.login(username="mallory", password="mallory-secret-1")
    response = client.get("/admin/chat/conversation/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    User.objects.create_user("reviewer", password="reviewer-secret-1", is_staff=True, is_superuser=True)
    client.login(username="reviewer", password="reviewer-secret-1")
    assert client.get("/admin/chat/conversation/").status_code == 200


def test_forms_require_a_csrf_token(db):
    User.objects.create_user("alice", password="alice-secret-1")
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-secret-1"})
    assert response.status_code == 403
    assert login(client, "alice", "alice-secret-1").status_code == 302


def manage(*args, **env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **env}, timeout=60)


PRODUCTION = {"CHAT_PRODUCTION": "true", "ALLOWED_HOSTS": "chat.example.com",
              "SECRET_KEY": "k7#vQ9!pZr2@xW4$mN8^bT6&yH3*jL5(cF1)dS0_eG7+aR9-uK2=iO4~"}


def test_the_documented_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    shell = manage("shell", "-v", "0", "-c", "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, "
                   "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, s.SECURE_SSL_REDIRECT, s.DEBUG)", **PRODUCTION)
    assert shell.stdout.split() == ["True", "True", "True", "True", "False"]


def test_production_refuses_to_start_without_a_secret_key_from_the_environment():
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = manage("check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set in the environment" in result.stderr.strip().splitlines()[-1]


def staff_client():
    User.objects.create_user("reviewer", password="reviewer-secret-1", is_staff=True, is_superuser=True)
    client = Client()
    client.login(username="reviewer", password="reviewer-secret-1")
    return client


def test_the_csv_export_keeps_formulas_as_text(db):
    from chat.models import Conversation, Message

    conversation = Conversation.objects.create(guest_key="g1", title="=HYPERLINK(\"http://evil\")")
    Message.objects.create(conversation=conversation, role="user", content="@SUM(A1:A9)")
    Message.objects.create(conversation=conversation, role="assistant", content="-2+3", finish_reason="stop")
    response = staff_client().post("/admin/chat/conversation/", {"action": "export_csv",
                                                                 "_selected_action": [conversation.pk]})
    text = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK" in text and "'@SUM(A1:A9)" in text and "'-2+3" in text
    assert ",=" not in text and ",@" not in text and ",-2" not in text


def test_an_api_key_stops_working_when_its_user_is_deactivated_and_its_user_cannot_change(db):
    from chat.models import ApiKey

    alice = User.objects.create_user("alice")
    key = ApiKey(name="k", user=alice)
    raw = key.issue()
    key.save()
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    assert client.get("/v1/models").status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get("/v1/models").status_code == 401
    page = staff_client().get(f"/admin/chat/apikey/{key.pk}/change/").content.decode()
    assert 'name="user"' not in page  # shown, not editable


def test_pages_carry_a_content_security_policy_that_allows_no_inline_script(db):
    policy = Client().get("/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'"
    assert "connect-src" in directives and "'none'" in directives["object-src"]


def test_sign_in_attempts_are_throttled_per_address_and_a_success_does_not_count(db, clean_redis, settings):
    settings.CHAT_SIGNIN_ATTEMPTS = 3
    User.objects.create_user("alice", password="alice-secret-1")
    client = Client()
    assert login(client, "alice", "alice-secret-1").status_code == 302  # gives its slot back
    for _ in range(3):
        assert login(Client(), "alice", "wrong").status_code == 200  # the form again, with an error
    refused = login(Client(), "alice", "alice-secret-1")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    admin = Client().post("/admin/login/", {"username": "alice", "password": "x"})
    assert admin.status_code == 429  # the admin's form is the same door


async def test_an_open_socket_is_closed_soon_after_its_user_is_deactivated(clean_redis, monkeypatch):
    from chat import consumers

    monkeypatch.setattr(consumers, "REJOIN_INTERVAL", 0.1)
    alice = await sync_to_async(User.objects.create_user)("alice", password="alice-secret-1")
    browser = Client()
    await sync_to_async(browser.force_login)(alice)
    socket = await connect(session_cookie(browser))
    await socket.send_json_to({"type": "list"})
    assert (await socket.receive_json_from(timeout=10))["type"] == "conversations"
    assert await socket.receive_nothing(timeout=0.5)  # still active: the socket stays open and quiet
    await sync_to_async(User.objects.filter(pk=alice.pk).update)(is_active=False)
    frame = await socket.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["code"] == "auth_required" and "deactivated" in frame["detail"]
    assert (await socket.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}
