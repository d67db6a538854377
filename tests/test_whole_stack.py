"""The service as `make run` starts it (Procfile processes, real model, Redis, a database: SQLite,
and PostgreSQL where one answers)."""
import asyncio
import http.cookiejar
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import torch
import websockets
from django.utils.html import escape

from bench.stack import ROOT, Stack

pytestmark = pytest.mark.slow


def test_healthz_is_503_until_a_worker_has_loaded_the_model_then_200(tmp_path, default_model_dir, database):
    stack = Stack(tmp_path, redis_db=11, database=database)
    try:
        stack.migrate()
        stack.start("web")
        deadline = time.monotonic() + 60
        while stack.health() is None:  # until the web process answers at all
            assert time.monotonic() < deadline, stack.log("web")[-2000:]
            time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(stack.base_url + "/healthz")
        assert answer.value.code == 503
        assert json.loads(answer.value.read())["status"] == "starting"
        stack.start("worker")
        stack.wait_healthy(timeout=120)
        body = json.loads(urllib.request.urlopen(stack.base_url + "/healthz").read())
        assert body["status"] == "ok" and body["model"] == "qwen2.5-coder-0.5b-instruct"
        assert body["workers"][0]["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
        # The model was converted once before; this start loaded the cache without converting.
        assert "Converting default model" not in stack.log("worker")
    finally:
        stack.stop()


async def turn(socket, conversation, content, stop_after=None, max_new_tokens=24):
    await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": content,
                                  "params": {"temperature": 0, "max_new_tokens": max_new_tokens}}))
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 120))
        frames.append(frame)
        if frame["type"] == "ack":
            conversation = frame["conversation"]
        if frame["type"] == "token" and sum(f["type"] == "token" for f in frames) == stop_after:
            await socket.send(json.dumps({"type": "stop", "conversation": conversation}))
        if frame["type"] in ("done", "error"):
            return conversation, frames


def test_a_plain_websocket_client_holds_a_conversation_and_the_admin_shows_it(whole_stack):
    async def talk():
        async with websockets.connect(whole_stack.ws_url, origin=whole_stack.base_url) as socket:
            conversation, first = await turn(socket, None, "My name is Ada. Greet me in one short sentence.")
            _, second = await turn(socket, conversation, "Write a Python function that adds two numbers.",
                                   stop_after=3, max_new_tokens=200)
            _, third = await turn(socket, conversation, "What is my name?")
            return conversation, [first, second, third]

    conversation, turns = asyncio.run(talk())
    replies = []
    for frames in turns:
        assert sum(f["type"] == "token" for f in frames) >= 3, frames
        replies.append("".join(f["text"] for f in frames if f["type"] == "token"))
    assert [t[-1]["finish_reason"] for t in turns][1] == "cancelled"
    assert turns[1][-1]["usage"]["completion_tokens"] < 200
    assert "Ada" in replies[2]  # the third turn saw the first

    admin = admin_session(whole_stack)
    page = admin.open(f"{whole_stack.base_url}/admin/chat/conversation/{conversation}/change/").read().decode()
    for text in ["My name is Ada.", "What is my name?", "Cancelled"] + [r[:20] for r in replies]:
        assert escape(text) in page  # as the admin's templates escape it
    listing = admin.open(f"{whole_stack.base_url}/admin/chat/conversation/?q=Ada").read().decode()
    assert f"/admin/chat/conversation/{conversation}/change/" in listing


def test_the_terminal_chat_command_streams_a_reply(whole_stack):
    result = subprocess.run(
        [sys.executable, "manage.py", "chat", "--max-new-tokens", "12", "--temperature", "0"],
        input="Say hello.\n/quit\n", cwd=ROOT, env={**whole_stack.env}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"bot> .+\n\[(stop|length), \d+ tokens\]", result.stdout), result.stdout


def test_the_terminal_chat_command_explains_an_unreachable_server():
    result = subprocess.run([sys.executable, "manage.py", "chat", "--url", "ws://127.0.0.1:9/ws/chat/"],
                            input="", cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "cannot reach the chat server" in result.stderr and "Traceback" not in result.stderr


def admin_session(stack):
    env = {**stack.env, "DJANGO_SUPERUSER_USERNAME": "reviewer", "DJANGO_SUPERUSER_PASSWORD": "review-pass-123",
           "DJANGO_SUPERUSER_EMAIL": "r@example.com"}
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, env=env,
                   capture_output=True)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_url = f"{stack.base_url}/admin/login/?next=/admin/"
    opener.open(login_url).read()
    token = next(c.value for c in jar if c.name == "csrftoken")
    data = urllib.parse.urlencode({"username": "reviewer", "password": "review-pass-123",
                                   "csrfmiddlewaretoken": token, "next": "/admin/"}).encode()
    request = urllib.request.Request(login_url, data=data, headers={"Referer": login_url})
    assert "Site administration" in opener.open(request).read().decode()
    return opener
