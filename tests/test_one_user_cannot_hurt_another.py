"""No frame from one user stops another's reply: values at the edges of their types, and a dead engine thread."""
import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from tests.chat_support import connect, http, new_guest, receive_until, send_turn
from tests.engine_support import KilledThread, fail_sampling

pytestmark = pytest.mark.django_db(transaction=True)


async def wait_for_health(status, timeout=15):
    deadline = time.monotonic() + timeout
    while (response := await http("GET", "/healthz")).status_code != status:
        assert time.monotonic() < deadline, f"/healthz stayed {response.status_code}: {response.json()}"
        await asyncio.sleep(0.05)
    return response.json()


async def test_edge_of_type_frames_leave_another_users_reply_streaming_and_the_worker_serving(worker, engine):
    engine.model.delay = 0.02
    alice, mallory = await connect(await new_guest()), await connect(await new_guest())
    await alice.send_json_to({"type": "send", "conversation": None, "content": "Tell me a long story",
                              "params": {"max_new_tokens": 60, "temperature": 0}})
    await receive_until(alice, "token")  # alice's reply is streaming

    await mallory.send_json_to({"type": "send", "conversation": None, "content": "Say hi.",
                                "params": {"seed": 18446744073709551616}})
    refused = await receive_until(mallory, "error")
    assert refused[-1]["code"] == "bad_params" and "seed" in refused[-1]["detail"]
    vanishing = await send_turn(mallory, "Say hi.", temperature=1e-300, max_new_tokens=6)
    assert vanishing[-1]["finish_reason"] in ("stop", "length")
    huge_id = await send_turn_raw(mallory, {"type": "history", "conversation": 2**64})
    assert huge_id["code"] == "bad_field"

    alice_done = (await receive_until(alice, "done"))[-1]
    assert alice_done["finish_reason"] == "length" and alice_done["usage"]["completion_tokens"] == 60
    fresh = await send_turn(alice, "And another?", conversation=alice_done["conversation"])
    assert fresh[-1]["finish_reason"] == "length"
    assert worker.engine.loop.healthy()
    await alice.disconnect()
    await mallory.disconnect()


async def send_turn_raw(socket, frame):
    await socket.send_json_to(frame)
    return await socket.receive_json_from(timeout=10)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_killed_engine_thread_turns_healthz_503_and_the_worker_restarts_it(worker, engine, monkeypatch):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "Hello")
    assert first[-1]["finish_reason"] == "length"
    assert (await wait_for_health(200))["status"] == "ok"

    def killed(*_):
        raise KilledThread()

    monkeypatch.setattr(engine.loop, "_step", killed)
    victim = await send_turn(socket, "This one dies with the thread", conversation=first[-1]["conversation"])
    assert victim[-1]["finish_reason"] == "error" and "engine failed" in victim[-1]["detail"]
    body = await wait_for_health(503)  # alive but unable to generate: not healthy
    assert body["status"] == "unhealthy" and body["workers"][0]["ready"] is False
    monkeypatch.undo()

    assert (await wait_for_health(200, timeout=30))["workers"][0]["ready"] is True  # restarted after its backoff
    after = await send_turn(socket, "And now?", conversation=first[-1]["conversation"])
    assert after[-1]["finish_reason"] == "length"
    await socket.disconnect()


async def test_a_reply_that_fails_mid_stream_keeps_its_text_and_the_others_finish(worker, engine, monkeypatch,
                                                                                  settings):
    from chat.models import Message

    settings.CHAT_TOKEN_FLUSH_INTERVAL = 0
    engine.model.delay = 0.02
    fail_sampling(monkeypatch, seed=99, after=4, message="forced failure")
    bob, carol = await connect(await new_guest()), await connect(await new_guest())
    await carol.send_json_to({"type": "send", "conversation": None, "content": "Long one",
                              "params": {"max_new_tokens": 30, "temperature": 0}})
    await receive_until(carol, "token")
    failed = await send_turn(bob, "Doomed", temperature=1.0, seed=99, max_new_tokens=30)
    done = failed[-1]
    assert done["finish_reason"] == "error" and "forced failure" in done["detail"]
    streamed = "".join(f["text"] for f in failed if f["type"] == "token")
    stored = await sync_to_async(Message.objects.get)(pk=done["message"])
    assert stored.content == streamed != "" and stored.finish_reason == "error"
    assert (await receive_until(carol, "done"))[-1]["finish_reason"] == "length"
    await bob.disconnect()
    await carol.disconnect()
