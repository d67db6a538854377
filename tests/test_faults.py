"""Faults caused for real against the running stack: a killed worker, a restarted Redis, a locked database."""
import asyncio
import json
import shutil
import signal
import sqlite3
import time

import pytest
import websockets

from bench.stack import Stack, free_port, start_redis_server

pytestmark = pytest.mark.slow


async def open_socket(stack, cookie=None):
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else None
    return await websockets.connect(stack.ws_url, origin=stack.base_url, additional_headers=headers)


async def next_frame(socket, timeout=60):
    return json.loads(await asyncio.wait_for(socket.recv(), timeout))


async def until(socket, kind, timeout=60):
    frames = []
    while True:
        frames.append(await next_frame(socket, timeout))
        if frames[-1]["type"] == kind:
            return frames


def guest_cookie(stack):
    import urllib.request

    with urllib.request.urlopen(stack.base_url + "/") as response:
        cookies = response.headers.get_all("Set-Cookie")
    return next(c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith("sessionid="))


@pytest.fixture
def stack(tmp_path, default_model_dir):
    stack = Stack(tmp_path, redis_db=13, CHAT_STALL_TIMEOUT=4, CHAT_REQUEST_TIMEOUT=6, CHAT_WORKER_HEARTBEAT=1)
    yield stack.start_all()
    stack.stop()


def test_a_worker_killed_mid_reply_ends_it_as_an_error_keeps_the_text_and_the_next_turn_works(stack):
    async def scenario():
        socket = await open_socket(stack, guest_cookie(stack))
        await socket.send(json.dumps({"type": "send", "conversation": None, "content": "Write a long story.",
                                      "params": {"max_new_tokens": 300}}))
        frames = await until(socket, "token")
        while sum(f["type"] == "token" for f in frames) < 3:
            frames.append(await next_frame(socket))
        stack.kill("worker", signal.SIGKILL)
        killed_at = time.monotonic()
        frames += await until(socket, "done", timeout=30)
        waited = time.monotonic() - killed_at
        stack.start("worker")
        stack.wait_healthy(120)
        conversation = frames[0]["conversation"]
        await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": "Say hi.",
                                      "params": {"max_new_tokens": 8}}))
        after = await until(socket, "done", timeout=120)
        await socket.close()
        return frames, waited, after

    frames, waited, after = asyncio.run(scenario())
    done = frames[-1]
    assert done["finish_reason"] == "error" and "stopped responding" in done["detail"]
    assert waited < 4 + 5  # the stall timeout plus the reaper's rounds
    streamed = "".join(f["text"] for f in frames if f["type"] == "token")
    assert stack.query("SELECT content, finish_reason FROM chat_message WHERE id = %s", done["message"]) == [
        (streamed, "error")]
    assert after[-1]["finish_reason"] in ("stop", "length")


def test_with_no_worker_a_turn_gets_no_worker_and_healthz_says_503(stack):
    stack.kill("worker", signal.SIGKILL)
    deadline = time.monotonic() + 15
    while stack.health() != 503:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    async def scenario():
        async with await open_socket(stack) as socket:
            await socket.send(json.dumps({"type": "send", "conversation": None, "content": "Hello?"}))
            return await until(socket, "done", timeout=10)

    frames = asyncio.run(scenario())
    assert any(f["type"] == "error" and f["code"] == "no_worker" for f in frames)
    assert frames[-1]["finish_reason"] == "error"
    assert stack.query("SELECT count(*) FROM chat_message WHERE content = 'Hello?'") == [(1,)]


def turn_while_the_database_is_away(stack, take_away, bring_back):
    """A turn sent while the database is away, then one once it is back: (error frame, frames of the
    second turn). Then checks that nothing of the first turn was stored, and all of the second."""
    async def scenario():
        socket = await open_socket(stack, guest_cookie(stack))
        take_away()
        try:
            await socket.send(json.dumps({"type": "send", "conversation": None, "content": "while away"}))
            error = await next_frame(socket, timeout=15)
        finally:
            bring_back()
        await socket.send(json.dumps({"type": "send", "conversation": None, "content": "once it is back",
                                      "params": {"max_new_tokens": 4}}))
        after = await until(socket, "done", timeout=120)
        await socket.close()
        return error, after

    error, after = asyncio.run(scenario())
    assert error["code"] == "database_unavailable" and "nothing was changed" in error["detail"]
    assert stack.query("SELECT count(*) FROM chat_message WHERE content = %s", "while away") == [(0,)]
    assert stack.query("SELECT count(*) FROM chat_conversation WHERE title = %s", "while away") == [(0,)]
    assert after[-1]["type"] == "done" and after[-1]["finish_reason"] in ("stop", "length")
    assert stack.query("SELECT count(*) FROM chat_message WHERE content = %s", "once it is back") == [(1,)]


def test_a_locked_database_gives_an_error_and_leaves_nothing_half_written(tmp_path, default_model_dir):
    stack = Stack(tmp_path, redis_db=13, CHAT_DB_TIMEOUT=1).start_all()
    lock = sqlite3.connect(stack.db_path, isolation_level=None)
    try:
        turn_while_the_database_is_away(stack, lambda: lock.execute("BEGIN EXCLUSIVE"),
                                        lambda: lock.execute("ROLLBACK"))
    finally:
        lock.close()
        stack.stop()


def test_postgresql_going_away_gives_an_error_leaves_nothing_half_written_and_comes_back(tmp_path, default_model_dir,
                                                                                       postgres_server_url):
    """The database of a PostgreSQL stack refuses connections and its open ones are cut: a turn gets
    database_unavailable at once (not a hang), nothing of it is stored, and once the database is
    back the pool replaces its dead connections and the next turn completes."""
    stack = Stack(tmp_path, redis_db=13, database=postgres_server_url, CHAT_DB_TIMEOUT=2).start_all()
    try:
        turn_while_the_database_is_away(stack, lambda: stack.postgres.set_reachable(False),
                                        lambda: stack.postgres.set_reachable(True))
    finally:
        stack.stop()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server to start a Redis of its own")
def test_a_redis_restart_mid_session_loses_nothing(tmp_path, default_model_dir):
    port = free_port()

    redis_server = start_redis_server(port)
    stack = Stack(tmp_path, CHAT_WORKER_HEARTBEAT=1, CHAT_FRAME_TIMEOUT=8)
    stack.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    try:
        stack.start_all()

        async def scenario():
            nonlocal redis_server
            cookie = guest_cookie(stack)
            socket = await open_socket(stack, cookie)
            await socket.send(json.dumps({"type": "send", "conversation": None, "content": "My name is Ada.",
                                          "params": {"max_new_tokens": 12, "temperature": 0}}))
            first = await until(socket, "done")
            conversation = first[0]["conversation"]
            redis_server.kill()
            redis_server.wait()
            redis_server = start_redis_server(port)  # back, and empty
            # The old socket either keeps working or is closed so that the page reconnects.
            try:
                await socket.send(json.dumps({"type": "list"}))
                reply = await next_frame(socket, timeout=20)
                assert reply["type"] in ("conversations", "error")
            except websockets.ConnectionClosed:
                pass
            await socket.close()
            deadline = time.monotonic() + 30
            while stack.health() != 200:  # the worker re-announces itself in the new Redis
                assert time.monotonic() < deadline, stack.log("worker")[-2000:]
                await asyncio.sleep(0.5)
            # Reconnect as the page does: a socket opened while stale pooled Redis connections are
            # being replaced may be closed once; the next attempt works.
            for attempt in range(5):
                try:
                    socket = await open_socket(stack, cookie)
                    await socket.send(json.dumps({"type": "history", "conversation": conversation}))
                    answer = await next_frame(socket, timeout=20)  # bounded by CHAT_FRAME_TIMEOUT
                    if answer["type"] == "history":
                        history = [answer]
                        break
                    assert answer["type"] == "error", answer
                    await socket.close()
                except websockets.ConnectionClosed:
                    await asyncio.sleep(0.5 * 2 ** attempt)
            else:
                raise AssertionError("no socket worked after the Redis restart")
            await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": "What is my name?",
                                          "params": {"max_new_tokens": 12, "temperature": 0}}))
            try:
                second = await until(socket, "done", timeout=40)
            except TimeoutError:
                import redis as redis_lib
                r = redis_lib.Redis(port=port)
                raise AssertionError(f"len={r.xlen('chat:requests')} groups={r.xinfo_groups('chat:requests')} "
                                     f"pending={r.xpending('chat:requests', 'inference-workers')} keys={r.keys('*')}")
            await socket.close()
            return first, history[-1], second

        first, history, second = asyncio.run(scenario())
        first_reply = "".join(f["text"] for f in first if f["type"] == "token")
        assert [(m["role"], m["content"]) for m in history["messages"]] == [
            ("user", "My name is Ada."), ("assistant", first_reply)]
        assert second[-1]["finish_reason"] in ("stop", "length"), second[-1]
        assert stack.query("SELECT count(*) FROM chat_message") == [(4,)]
    finally:
        stack.stop()
        redis_server.kill()
