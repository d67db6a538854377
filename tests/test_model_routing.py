"""Two workers serving two different models behind one web process: a conversation keeps the model
it was started with, every turn in it (send, regenerate, edit) goes to a worker serving that model,
and the reply records it; /status, /v1/models and /v1/chat/completions know both models."""
import asyncio
import json
import shutil
import signal
import time
import urllib.error
import urllib.request

import pytest
import websockets

from bench.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """Two names for the tiny model: the engine is named after its folder, so a copy is another model."""
    folder = tmp_path_factory.mktemp("models")
    first, second = folder / "tiny-a", folder / "tiny-b"
    shutil.copytree(tiny_model_dir, first)
    shutil.copytree(tiny_model_dir, second)
    return str(first), str(second)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, models):
    first, second = models
    stack = Stack(tmp_path_factory.mktemp("two-models"), redis_db=13, CHAT_MODEL=first, CHAT_WORKER_HEARTBEAT=0.5,
                  CHAT_MESSAGES_PER_MINUTE=1000, CHAT_REQUEST_TIMEOUT=10)
    stack.migrate()
    stack.start("web")
    stack.start("worker")
    stack.start("worker", as_name="worker2", CHAT_MODEL=second)
    stack.wait_healthy()
    wait_for(lambda: served(stack) == [first, second], "both workers to announce their models")
    yield stack
    stack.stop()


def status(stack):
    with urllib.request.urlopen(stack.base_url + "/status", timeout=5) as response:
        return json.loads(response.read())


def served(stack):
    return status(stack).get("models")


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def receive_until(socket, frame_type):
    frames = []
    while not frames or frames[-1]["type"] != frame_type:
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), 60)))
    return frames


def replies(stack, conversation):
    """[(reply id, model_name, worker, superseded)] of a conversation's replies, oldest first."""
    return stack.query("SELECT id, model_name, worker, superseded FROM chat_message WHERE conversation_id = %s "
                       "AND role = 'assistant' ORDER BY id", conversation)


def worker_ids(stack, model):
    return {w["id"] for w in status(stack)["workers"] if w["model"] == model}


PARAMS = {"max_new_tokens": 3, "temperature": 0}


def test_status_lists_both_models_and_the_first_is_the_default(two_models, models):
    body = status(two_models)
    assert body["models"] == sorted(models) and body["model"] == sorted(models)[0]
    assert sorted(w["model"] for w in body["workers"]) == sorted(models)


def test_every_turn_of_a_conversation_goes_to_its_model_and_the_replies_record_it(two_models, models):
    first, second = models

    async def scenario():
        async with websockets.connect(two_models.ws_url, origin=two_models.base_url) as socket:
            await socket.send(json.dumps({"type": "send", "conversation": None, "content": "Hello",
                                          "model": second, "params": PARAMS}))
            frames = await receive_until(socket, "done")
            conversation = frames[0]["conversation"]
            assert frames[-1]["finish_reason"] == "length", frames[-1]
            # a model named on a later send is ignored: the conversation keeps its own
            await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": "Again",
                                          "model": first, "params": PARAMS}))
            await receive_until(socket, "done")
            await socket.send(json.dumps({"type": "regenerate", "conversation": conversation, "params": PARAMS}))
            await receive_until(socket, "done")
            await socket.send(json.dumps({"type": "history", "conversation": conversation}))
            history = (await receive_until(socket, "history"))[-1]
            first_user = next(m["id"] for m in history["messages"] if m["role"] == "user")
            await socket.send(json.dumps({"type": "edit", "conversation": conversation, "message": first_user,
                                          "content": "Hello again", "params": PARAMS}))
            await receive_until(socket, "done")
            await socket.send(json.dumps({"type": "list"}))
            listed = (await receive_until(socket, "conversations"))[-1]["items"]
            # a new conversation that names no model gets the default one
            await socket.send(json.dumps({"type": "send", "conversation": None, "content": "Hi",
                                          "params": PARAMS}))
            default = await receive_until(socket, "done")
            return conversation, history, listed, default[0]["conversation"]

    conversation, history, listed, default_conversation = asyncio.run(scenario())
    assert history["model"] == second
    assert next(item["model"] for item in listed if item["id"] == conversation) == second
    stored = replies(two_models, conversation)
    assert len(stored) == 4  # send, send, regenerate (superseding the second), edit (superseding the rest)
    assert {model for _, model, _, _ in stored} == {second}
    assert {worker for _, _, worker, _ in stored} <= worker_ids(two_models, second)
    assert two_models.query("SELECT model_name FROM chat_conversation WHERE id = %s", conversation) == [(second,)]
    taken_by_first = two_models.log("worker")
    assert not any(f"turn taken reply={reply} " in taken_by_first for reply, *_ in stored)
    default = sorted(models)[0]
    assert [model for _, model, _, _ in replies(two_models, default_conversation)] == [default]


@pytest.fixture(scope="module")
def api_key(two_models):
    return two_models.issue_api_key("api-user")


def api(stack, key, path, body=None):
    request = urllib.request.Request(stack.base_url + path, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_api_lists_both_models_and_routes_by_the_model_field(two_models, models, api_key):
    first, second = models
    code, listed = api(two_models, api_key, "/v1/models")
    assert code == 200 and [m["id"] for m in listed["data"]] == sorted(models)
    for model in (first, second):
        code, body = api(two_models, api_key, "/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0})
        assert code == 200 and body["model"] == model, body
        [(stored,)] = two_models.query("SELECT model_name FROM chat_message WHERE id = %s",
                                       int(body["id"].removeprefix("chatcmpl-")))
        assert stored == model
    code, body = api(two_models, api_key, "/v1/chat/completions", {
        "model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert code == 200 and body["model"] == sorted(models)[0]
    code, body = api(two_models, api_key, "/v1/chat/completions", {
        "model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert code == 404 and body["error"]["code"] == "model_not_found" and "no-such-model" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "model"


def test_a_conversation_whose_model_nobody_serves_any_more_ends_with_an_error_naming_it(two_models, models):
    """It stops the second model's worker, and starts it again at the end (the module's stack is shared,
    also across the rounds of `make test-repeat`)."""
    first, second = models

    async def scenario():
        async with websockets.connect(two_models.ws_url, origin=two_models.base_url) as socket:
            await socket.send(json.dumps({"type": "send", "conversation": None, "content": "Hi", "model": second,
                                          "params": PARAMS}))
            conversation = (await receive_until(socket, "done"))[0]["conversation"]
            two_models.kill("worker2", signal.SIGKILL)
            wait_for(lambda: served(two_models) == [first], "the killed worker's announcement to lapse", timeout=30)
            started = time.monotonic()
            await socket.send(json.dumps({"type": "send", "conversation": conversation, "content": "Still there?",
                                          "params": PARAMS}))
            return await receive_until(socket, "done"), time.monotonic() - started

    try:
        frames, waited = asyncio.run(scenario())
    finally:
        if "worker2" not in two_models.processes:
            two_models.start("worker", as_name="worker2", CHAT_MODEL=second)
        wait_for(lambda: served(two_models) == [first, second], "the second model's worker to be back")
    assert waited < 10  # at once, not after a timeout
    error = next(f for f in frames if f["type"] == "error")
    assert error["code"] == "no_worker" and repr(second) in error["detail"]
    assert frames[-1]["finish_reason"] == "error" and repr(second) in frames[-1]["detail"]
