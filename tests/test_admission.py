"""Every door admits turns the same way (chat.admission): the busy race, rate slots, guest limits
per address, the global queue cap, /v1 history kept final, and HTTP clients that go away."""
import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from chat import request_queue
from chat.models import ApiKey, Message
from tests.chat_support import connect, http, new_guest, receive_until, send_turn

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def issue_key(username="api-user"):
    key = ApiKey(name="test", user=User.objects.create_user(username))
    raw = key.issue()
    key.save()
    return raw


async def test_two_tabs_sending_at_the_same_moment_start_one_reply_and_the_refusal_costs_no_rate_slot(
        worker, engine, settings):
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    engine.model.delay = 0.02
    session = await new_guest()
    tabs = [await connect(session), await connect(session)]
    for tab in tabs:  # both frames are in before either is answered
        await tab.send_json_to({"type": "send", "conversation": None, "content": "race",
                                "params": {"max_new_tokens": 20}})
    answers = []
    for tab in tabs:
        frame = await tab.receive_json_from(timeout=10)
        while frame["type"] not in ("ack", "error"):  # the other tab's `turn` may come first
            frame = await tab.receive_json_from(timeout=10)
        answers.append(frame)
    assert sorted(f["type"] if f["type"] == "ack" else f["code"] for f in answers) == ["ack", "busy"]
    assert await sync_to_async(Message.objects.filter(content="race").count)() == 1
    if answers[0]["type"] != "ack":  # the accepted tab first
        tabs.reverse()
    await receive_until(tabs[0], "done")
    # The refused send spent no slot of the two per minute: one more turn is allowed, then none.
    second = await send_turn(tabs[0], "second")
    assert second[-1]["type"] == "done"
    await tabs[0].send_json_to({"type": "send", "conversation": None, "content": "third"})
    assert (await receive_until(tabs[0], "error"))[-1]["code"] == "rate_limited"
    for tab in tabs:
        await tab.disconnect()


async def test_forty_cookieless_generate_calls_meet_the_guest_limit_at_once(worker, settings):
    settings.CHAT_GUESTS_PER_ADDRESS = 5

    async def call():
        started = time.monotonic()
        response = await http("POST", "/generate", {"prompt": "Hi", "max_tokens": 2})
        return response, time.monotonic() - started

    results = await asyncio.gather(*(call() for _ in range(40)))
    statuses = sorted(response.status_code for response, _ in results)
    assert statuses == [200] * 5 + [429] * 35
    refused = [(response, took) for response, took in results if response.status_code == 429]
    assert all(r.json()["error"]["code"] == "too_many_guests" and int(r.headers["retry-after"]) > 0
               for r, _ in refused)
    assert max(took for _, took in refused) < 10
    page = await http("GET", "/")  # the page tells a visitor from that address too, saying when to retry
    assert page.status_code == 429 and int(page.headers["retry-after"]) > 0
    assert b"Too many new guests" in page.content and b'href="/accounts/login/"' in page.content
    assert (await http("GET", "/", client=("10.0.0.2", 40000))).status_code == 200  # another address is welcome


async def test_guest_turns_per_address_are_limited_across_guests(worker, settings):
    settings.CHAT_GUEST_TURNS_PER_ADDRESS = 2
    sockets = [await connect(await new_guest()) for _ in range(3)]
    for socket in sockets[:2]:
        assert (await send_turn(socket, "hi"))[-1]["type"] == "done"
    await sockets[2].send_json_to({"type": "send", "conversation": None, "content": "one too many"})
    error = (await receive_until(sockets[2], "error"))[-1]
    assert error["code"] == "rate_limited" and "guest messages per minute from one address" in error["detail"]
    for socket in sockets:
        await socket.disconnect()


async def test_a_full_queue_is_refused_as_overloaded_at_every_door(clean_redis, settings):
    settings.CHAT_MAX_QUEUED_TURNS = 1
    await request_queue.ensure_group()
    await request_queue.enqueue({"type": "chat.generate", "message": 0})  # no worker takes it: it waits
    assert await request_queue.depth() == (1, 0)
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "hello?"})
    error = (await receive_until(socket, "error"))[-1]
    assert error["code"] == "overloaded" and error["retry_after"] > 0
    response = await http("POST", "/generate", {"prompt": "Hi"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "overloaded"
    assert int(response.headers["retry-after"]) > 0
    api = await http("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]},
                     headers={"Authorization": f"Bearer {await issue_key()}"})
    assert api.status_code == 503
    assert not await sync_to_async(Message.objects.filter(content="hello?").exists)()
    await socket.disconnect()


async def test_v1_history_messages_are_stored_as_final_replies(worker):
    auth = {"Authorization": f"Bearer {await issue_key()}"}
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
                {"role": "user", "content": "And 3+3?"}]
    response = await http("POST", "/v1/chat/completions", {"messages": messages, "max_tokens": 3, "temperature": 0},
                          headers=auth)
    assert response.status_code == 200
    stored = await sync_to_async(lambda: list(Message.objects.order_by("id").values_list(
        "role", "content", "finish_reason")))()
    assert stored[:3] == [("user", "What is 2+2?", ""), ("assistant", "4.", "stop"), ("user", "And 3+3?", "")]
    assert stored[3][0] == "assistant" and stored[3][2] == "length"
    again = await http("POST", "/v1/chat/completions", {"messages": messages, "max_tokens": 3}, headers=auth)
    assert again.status_code == 200  # the history's reply did not leave the user "busy"
    assert await sync_to_async(Message.objects.filter(content="4.", finish_reason="stop").count)() == 2


async def test_a_non_streaming_call_stops_generating_when_its_client_goes_away(worker, engine):
    engine.model.delay = 0.05
    gone = asyncio.Event()
    task = asyncio.create_task(http("POST", "/generate", {"prompt": "Count to a thousand", "max_tokens": 400},
                                    gone=gone))
    deadline = time.monotonic() + 20
    while not engine.streams or engine.streams[-1].completion_tokens < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    gone.set()  # the client hangs up mid-reply
    await asyncio.wait_for(task, 20)
    stream = engine.streams[-1]
    while stream.finish_reason is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert stream.finish_reason == "cancelled" and stream.completion_tokens < 400
    reply = await sync_to_async(Message.objects.filter(role="assistant").get)()
    while reply.finish_reason == "":
        await asyncio.sleep(0.05)
        reply = await sync_to_async(Message.objects.get)(pk=reply.pk)
    assert reply.finish_reason == "cancelled"


async def test_v1_continues_a_final_assistant_message_with_continue_final_message(worker, engine):
    """vLLM's and SGLang's field, which an upstream worker sends to go on from a reply."""
    auth = {"Authorization": f"Bearer {await issue_key()}"}
    messages = [{"role": "user", "content": "Count to ten"}, {"role": "assistant", "content": "One, two,"}]
    refused = await http("POST", "/v1/chat/completions", {"messages": messages}, headers=auth)
    assert refused.status_code == 400 and "continue_final_message" in refused.json()["error"]["message"]
    response = await http("POST", "/v1/chat/completions", {"messages": messages, "continue_final_message": True,
                                                           "max_tokens": 4, "temperature": 0}, headers=auth)
    assert response.status_code == 200
    continuation = response.json()["choices"][0]["message"]["content"]
    assert continuation and engine.conversations[-1][-1] == {"role": "assistant", "content": "One, two,"}
    stored = await sync_to_async(lambda: list(Message.objects.order_by("id").values_list("role", "content")))()
    assert stored == [("user", "Count to ten"), ("assistant", "One, two," + continuation)]
    empty = await http("POST", "/v1/chat/completions", {"messages": messages[:1] + [{"role": "assistant", "content": ""}],
                                                        "continue_final_message": True}, headers=auth)
    assert empty.status_code == 400
