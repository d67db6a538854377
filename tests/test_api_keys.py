"""API keys made for programs (chat.api_limits): each key's own limits in flight and per minute,
refused as OpenAI refuses; its conversations kept CHAT_API_RETENTION_DAYS; the API follows a reply
from before it is queued; and bad bodies are clear 400s at /v1 and /generate."""
import asyncio
import json
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone

from chat import request_queue
from chat.lifecycle import still_generating
from chat.models import ApiKey, Conversation, Message
from chat.worker import delete_expired_api_conversations
from tests.chat_support import http

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def issue_key(username="program", **limits):
    key = ApiKey(name="test", user=User.objects.get_or_create(username=username)[0], **limits)
    raw = key.issue()
    key.save()
    return {"Authorization": f"Bearer {raw}"}


def completion(content="Hello", **extra):
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 6, "temperature": 1.0, "seed": 3,
            **extra}


async def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@sync_to_async
def generating_count():
    return Message.objects.generating().count()


def sse_text(body):
    """The text of a streamed completion's chunks."""
    text = []
    for line in body.decode().splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line.removeprefix("data: "))
            text += [c["delta"].get("content") or "" for c in chunk.get("choices", [])]
    return "".join(text)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_answer_is_the_stored_reply_even_when_it_is_generated_before_the_call_follows_it(
        worker, monkeypatch, stream):
    # dispatch() returns only once the worker has generated and stored the whole reply: every token and
    # the `done` go out before the view gets to follow. Only a view subscribed before dispatch hears them.
    enqueue = request_queue.enqueue

    async def enqueue_then_let_the_reply_end(request):
        entry = await enqueue(request)

        async def ended():
            return not await still_generating(request["message"])

        await wait_for(ended)
        return entry

    monkeypatch.setattr(request_queue, "enqueue", enqueue_then_let_the_reply_end)
    response = await http("POST", "/v1/chat/completions", completion(stream=stream), headers=await issue_key())
    assert response.status_code == 200
    reply = await sync_to_async(Message.objects.get)(role="assistant")
    assert reply.content and reply.finish_reason == "length"
    answer = sse_text(response.content) if stream else response.json()["choices"][0]["message"]["content"]
    assert answer == reply.content


async def test_a_keys_calls_run_side_by_side_up_to_its_own_in_flight_limit(worker, engine, settings):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1  # a person's limit: it does not apply to the key's calls
    engine.model.delay = 0.05
    auth = await issue_key(max_in_flight=2)
    long = completion("Count", max_tokens=30)
    calls = [asyncio.create_task(http("POST", "/v1/chat/completions", long, headers=auth)) for _ in range(2)]
    await wait_for(lambda: _has_generating(2))
    refused = await http("POST", "/v1/chat/completions", long, headers=auth)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests" and "in flight" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200]
    # Two calls racing for the one slot left: the count is taken in the turn's transaction, one passes.
    blocker = asyncio.create_task(http("POST", "/v1/chat/completions", long, headers=auth))
    await wait_for(lambda: _has_generating(1))
    racing = await asyncio.gather(*(http("POST", "/v1/chat/completions", long, headers=auth) for _ in range(2)))
    assert sorted(r.status_code for r in racing) == [200, 429]
    assert (await blocker).status_code == 200
    assert next(r for r in racing if r.status_code == 429).json()["error"]["code"] == "rate_limit_exceeded"
    assert await sync_to_async(Conversation.objects.count)() == 4  # the refused calls stored nothing


async def _has_generating(count):
    return await generating_count() >= count


async def test_a_key_over_its_requests_per_minute_is_refused_with_openais_answer(worker, settings):
    settings.CHAT_MESSAGES_PER_MINUTE = 1  # a person's limit: not the key's
    auth = await issue_key(requests_per_minute=2)
    first = await http("POST", "/v1/chat/completions", completion(), headers=auth)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2" and first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert int(first.headers["x-ratelimit-limit-tokens"]) == settings.CHAT_API_KEY_TOKENS_PER_MINUTE
    assert (await http("POST", "/generate", {"prompt": "Hi", "max_tokens": 2}, headers=auth)).status_code == 200
    third = await http("POST", "/v1/chat/completions", completion(), headers=auth)
    assert third.status_code == 429
    assert third.json() == {"error": {
        "message": third.json()["error"]["message"], "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    assert "requests per min (RPM): Limit 2" in third.json()["error"]["message"]
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert await sync_to_async(Conversation.objects.count)() == 2  # the refused call stored nothing


async def test_a_key_over_its_tokens_per_minute_is_refused_and_told_when_to_try_again(worker):
    auth = await issue_key(tokens_per_minute=20)
    first = await http("POST", "/v1/chat/completions", completion(max_tokens=8), headers=auth)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert used >= 20  # the prompt (with the default system prompt) and the reply: over the limit
    refused = await http("POST", "/v1/chat/completions", completion(), headers=auth)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "tokens"
    assert f"Limit 20, Used {used}" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-remaining-requests"] == str(600 - 1)
    other = await issue_key("another-program", tokens_per_minute=20)  # limits are per key
    assert (await http("POST", "/v1/chat/completions", completion(), headers=other)).status_code == 200


async def test_a_keys_calls_do_not_count_against_the_persons_conversations(worker, settings):
    settings.CHAT_MAX_CONVERSATIONS = 2
    auth = await issue_key()
    for _ in range(4):
        assert (await http("POST", "/v1/chat/completions", completion(), headers=auth)).status_code == 200
    keys = await sync_to_async(lambda: set(Conversation.objects.values_list("api_key_id", flat=True)))()
    assert len(keys) == 1 and None not in keys  # each is marked as the key's


def test_retention_deletes_the_keys_old_conversations_only(settings):
    settings.CHAT_API_RETENTION_DAYS = 30
    user = User.objects.create_user("program")
    key = ApiKey(name="test", user=user)
    key.issue()
    key.save()

    def conversation(title, api_key, age_days, generating=False):
        c = Conversation.objects.create(title=title, user=user, api_key=api_key)
        Message.objects.create(conversation=c, role="user", content="hi")
        Message.objects.create(conversation=c, role="assistant", content="", finish_reason="" if generating else "stop")
        Conversation.objects.filter(pk=c.pk).update(updated=timezone.now() - timedelta(days=age_days))
        return c

    conversation("old call", key, 31)
    conversation("older call", key, 400)
    conversation("young call", key, 29)
    conversation("old call still generating", key, 31, generating=True)
    conversation("old page conversation", None, 400)
    assert delete_expired_api_conversations(batch=1) == 2  # in batches of one, so the loop goes round
    assert sorted(Conversation.objects.values_list("title", flat=True)) == [
        "old call still generating", "old page conversation", "young call"]
    assert delete_expired_api_conversations() == 0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/generate"])
async def test_deeply_nested_json_is_a_clear_400(path, clean_redis):
    response = await http("POST", path, headers=await issue_key(), raw_body=b"[" * 100_000)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "the body's JSON is nested too deeply"


async def test_a_system_prompt_over_the_message_limit_is_refused_at_both_doors(clean_redis, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    auth = await issue_key()
    messages = [{"role": "system", "content": "x" * 60}, {"role": "system", "content": "y" * 60},
                {"role": "user", "content": "Hi"}]
    api = await http("POST", "/v1/chat/completions", {"messages": messages}, headers=auth)
    generate = await http("POST", "/generate", {"prompt": "Hi", "system": "x" * 101}, headers=auth)
    for response in (api, generate):
        assert response.status_code == 400 and response.json()["error"]["code"] == "too_large"
        assert "system prompt" in response.json()["error"]["message"]
    assert not await sync_to_async(Conversation.objects.exists)()


async def test_a_model_name_is_bounded_even_with_no_worker_up(clean_redis):
    auth = await issue_key()
    for path, body in (("/v1/chat/completions", completion(model="m" * 201)),
                       ("/generate", {"prompt": "Hi", "model": "m" * 201})):
        response = await http("POST", path, body, headers=auth)
        assert response.status_code == 400 and response.json()["error"]["param"] == "model"
        assert "at most 200" in response.json()["error"]["message"]


def test_staff_set_a_keys_limits_in_the_admin_and_review_its_conversations_there():
    from tests.admin_support import staff

    admin, client = staff("root", superuser=True)
    owner = User.objects.create_user("program")
    page = client.post("/admin/chat/apikey/add/", {"name": "eval run", "user": owner.pk, "active": "on",
                                                   "max_in_flight": "4", "requests_per_minute": "",
                                                   "tokens_per_minute": "5000"})
    assert page.status_code == 302
    key = ApiKey.objects.get(name="eval run")
    assert (key.limit_in_flight, key.limit_requests, key.limit_tokens) == (4, 600, 5000)  # blank: the default
    refused = client.post(f"/admin/chat/apikey/{key.pk}/change/", {"name": "eval run", "active": "on",
                                                                   "max_in_flight": "0"})
    assert refused.status_code == 200 and b"greater than or equal to 1" in refused.content
    Conversation.objects.create(title="a call", user=owner, api_key=key)
    Conversation.objects.create(title="a chat", user=owner)
    listed = client.get("/admin/chat/conversation/", {"owner_kind": "api"}).content.decode()
    assert "a call" in listed and "a chat" not in listed


async def test_a_persons_page_is_not_busy_while_their_keys_calls_generate(worker, engine, settings):
    from django.test import Client

    from tests.chat_support import connect, send_turn

    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1
    engine.model.delay = 0.05
    auth = await issue_key("person")
    browser = Client()
    await sync_to_async(browser.force_login)(await sync_to_async(User.objects.get)(username="person"))
    call = asyncio.create_task(http("POST", "/v1/chat/completions", completion("Count", max_tokens=30), headers=auth))
    await wait_for(lambda: _has_generating(1))
    socket = await connect(browser.cookies["sessionid"].value)
    frames = await send_turn(socket, "Hello from the page")
    assert [f["type"] for f in frames if f["type"] in ("ack", "error", "done")] == ["ack", "done"]
    assert (await call).status_code == 200
    await socket.disconnect()


async def test_a_choice_generated_after_another_ended_reads_only_the_callers_messages(tiny_engine, clean_redis):
    import dataclasses

    from tests.chat_support import RecordingEngine, start_worker

    # one reply at a time: the second choice starts once the first is stored (and in the chat's history)
    engine = RecordingEngine(tiny_engine, config=dataclasses.replace(tiny_engine.config, max_batch_size=1))
    worker, stop, task = await start_worker(engine)
    try:
        answer = await http("POST", "/v1/chat/completions", completion("Pick a word", n=2), headers=await issue_key())
        assert answer.status_code == 200 and [c["index"] for c in answer.json()["choices"]] == [0, 1]
        assert [c[-1] for c in engine.conversations] == [{"role": "user", "content": "Pick a word"}] * 2
        assert [len(c) for c in engine.conversations] == [1, 1]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
