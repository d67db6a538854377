"""A worker that streams replies from an upstream OpenAI-compatible server, tested against a real
one: this project's own /v1 on a second stack (built-in worker, tiny model)."""
import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import websockets

from bench.stack import ROOT, Stack, free_port

pytestmark = pytest.mark.slow

@pytest.fixture
def upstream(tmp_path, tiny_model_dir):
    stack = Stack(tmp_path / "upstream", redis_db=14, CHAT_MODEL=str(tiny_model_dir), CHAT_MESSAGES_PER_MINUTE=1000)
    (tmp_path / "upstream").mkdir()
    stack.start_all()
    stack.api_key = stack.issue_api_key("front")
    yield stack
    stack.stop()


def front_stack(path, url, **env):
    path.mkdir()
    return Stack(path, redis_db=12, CHAT_UPSTREAM_URL=url, CHAT_STALL_TIMEOUT=5, CHAT_REQUEST_TIMEOUT=4,
                 CHAT_WORKER_HEARTBEAT=0.5, **env)


@pytest.fixture
def front(tmp_path, upstream):
    stack = front_stack(tmp_path / "front", upstream.base_url + "/v1", CHAT_UPSTREAM_API_KEY=upstream.api_key)
    yield stack.start_all()
    stack.stop()


async def turn(stack, content, max_new_tokens, stop_after=None, on_token=None):
    async with websockets.connect(stack.ws_url, origin=stack.base_url) as socket:
        await socket.send(json.dumps({"type": "send", "conversation": None, "content": content,
                                      "params": {"max_new_tokens": max_new_tokens, "temperature": 0}}))
        frames = []
        while True:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 60))
            frames.append(frame)
            tokens = sum(f["type"] == "token" for f in frames)
            if frame["type"] == "token" and tokens == stop_after:
                await socket.send(json.dumps({"type": "stop", "conversation": frame["conversation"]}))
            if frame["type"] == "token" and on_token:
                on_token(tokens)
            if frame["type"] == "done" or (frame["type"] == "error" and frame["code"] != "busy"):
                return frames


def last_reply(stack):
    return stack.query("SELECT id, content, finish_reason, model_name, error_detail FROM chat_message "
                       "WHERE role = 'assistant' ORDER BY id DESC LIMIT 1")[0]


def test_replies_stream_from_the_upstream_and_are_stored_with_its_model(front, upstream):
    frames = asyncio.run(turn(front, "Hello there", max_new_tokens=12))
    tokens = [f for f in frames if f["type"] == "token"]
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] in ("stop", "length")
    assert done["usage"]["completion_tokens"] > 0
    _, content, finish_reason, model_name, _ = last_reply(front)
    assert content == "".join(f["text"] for f in tokens) and finish_reason == done["finish_reason"]
    upstream_model = json.loads(urllib.request.urlopen(upstream.base_url + "/healthz").read())["model"]
    assert model_name == upstream_model
    health = json.loads(urllib.request.urlopen(front.base_url + "/healthz").read())
    assert health["status"] == "ok" and health["workers"][0]["device"] == "upstream"  # not its URL
    assert last_reply(upstream)[1] == content  # the upstream generated (and stored) the same text


def test_a_stop_closes_the_upstream_request_within_a_second(front, upstream):
    frames = asyncio.run(turn(front, "Tell me a long story", max_new_tokens=400, stop_after=3))
    stopped_at = time.monotonic()
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled", (frames[-1], front.log("worker")[-3000:])
    while last_reply(upstream)[2] == "":  # the upstream's own reply is still generating
        assert time.monotonic() - stopped_at < 1.0, "the upstream request outlived the stop by a second"
        time.sleep(0.05)
    assert last_reply(upstream)[2] == "cancelled"


def test_a_reply_cut_by_its_limit_continues_through_the_upstream(front, upstream):
    async def cut_then_continue():
        async with websockets.connect(front.ws_url, origin=front.base_url) as socket:
            async def until_done(frame):
                await socket.send(json.dumps(frame))
                frames = []
                while not frames or frames[-1]["type"] not in ("done", "error"):
                    frames.append(json.loads(await asyncio.wait_for(socket.recv(), 60)))
                return frames

            first = await until_done({"type": "send", "conversation": None, "content": "Count from one to fifty",
                                      "params": {"max_new_tokens": 3, "temperature": 0}})
            more = await until_done({"type": "continue", "conversation": first[-1]["conversation"],
                                     "params": {"max_new_tokens": 4, "temperature": 0}})
            return first, more

    first, more = asyncio.run(cut_then_continue())
    assert first[-1]["finish_reason"] == "length"
    assert more[-1]["type"] == "done" and more[-1]["finish_reason"] in ("stop", "length"), more[-1]
    cut = "".join(f["text"] for f in first if f["type"] == "token")
    _, content, _, _, _ = last_reply(front)
    assert content.startswith(cut) and len(content) > len(cut)
    # the upstream went on from the reply: its own stored reply is the whole text
    assert last_reply(upstream)[1] == content


def test_an_upstream_killed_mid_reply_ends_the_reply_as_an_error_with_its_text_kept(front, upstream):
    def kill_upstream(tokens):
        if tokens == 3:
            upstream.kill("web")

    frames = asyncio.run(turn(front, "Tell me a long story", max_new_tokens=400, on_token=kill_upstream))
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "error"
    assert "upstream" in done["detail"] and "text so far is kept" in done["detail"]
    _, content, finish_reason, _, _ = last_reply(front)
    assert finish_reason == "error" and content == "".join(f["text"] for f in frames if f["type"] == "token")
    assert content


def test_an_unreachable_upstream_keeps_healthz_503_and_a_turn_gets_a_clear_error(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    stack = front_stack(tmp_path / "front", closed, CHAT_UPSTREAM_MODEL="some-model")
    stack.migrate()
    for name in stack.commands:
        stack.start(name)
    try:
        deadline = time.monotonic() + 60
        while True:  # the worker starts, announces itself, and is not ready
            try:
                urllib.request.urlopen(stack.base_url + "/healthz")
                raise AssertionError("healthz said 200 with the upstream down")
            except urllib.error.HTTPError as exc:
                body = json.loads(exc.read())
                if body["workers"]:
                    assert exc.code == 503 and body["status"] == "unhealthy"
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, stack.log("worker")[-2000:]
            time.sleep(0.5)
        frames = asyncio.run(turn(stack, "Hello?", max_new_tokens=8))
        assert frames[-1]["finish_reason"] == "error" and "no inference worker took this turn" in frames[-1]["detail"]
        assert "not answering" in stack.log("worker")
    finally:
        stack.stop()


def test_without_a_model_name_an_unreachable_upstream_stops_the_worker_with_a_clear_message(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    result = subprocess.run([sys.executable, "manage.py", "inference_worker", "--upstream", closed], cwd=ROOT,
                            env={**front_stack(tmp_path / "front", closed).env}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert f"the upstream server at {closed} does not answer GET /models" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refused_key_keeps_the_worker_unready_and_says_why(tmp_path, upstream):
    stack = front_stack(tmp_path / "front", upstream.base_url + "/v1", CHAT_UPSTREAM_API_KEY="sk-chat-wrong",
                        CHAT_UPSTREAM_MODEL="tiny")
    stack.migrate()
    for name in stack.commands:
        stack.start(name)
    try:
        deadline = time.monotonic() + 60
        while "not answering" not in stack.log("worker"):
            assert time.monotonic() < deadline, stack.log("worker")[-2000:]
            time.sleep(0.5)
        assert "401" in stack.log("worker")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(stack.base_url + "/healthz")
        assert answer.value.code == 503
    finally:
        stack.stop()
