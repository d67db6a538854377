"""The OpenAI-compatible API (with the official openai client), /generate, and /metrics, on the stack."""
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from bench.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_stack(tmp_path_factory, tiny_model_dir):
    # Every piece the engine makes goes out as its own event (no 30 ms coalescing), so what the
    # client receives does not depend on how fast this machine generates. A person may keep 3
    # conversations: a key's calls, each stored as one, are not counted against that.
    stack = Stack(tmp_path_factory.mktemp("api"), redis_db=15, CHAT_MODEL=str(tiny_model_dir),
                  CHAT_TOKEN_FLUSH_INTERVAL=0, CHAT_MAX_CONVERSATIONS=3)
    stack.start_all()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def api_key(api_stack):
    return api_stack.issue_api_key("api-user")


def client(stack, key):
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_the_openai_client_streams_a_reply(api_stack, api_key):
    # Sampled with a seed, the tiny random model says something varied (greedy, it repeats newlines).
    request = dict(model="default", max_tokens=12, temperature=1.0, seed=11,
                   messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    chunks = list(client(api_stack, api_key).chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    whole = client(api_stack, api_key).chat.completions.create(**request)
    # The stream is the same reply as the whole answer, cut into pieces in order, one per engine piece.
    assert "".join(pieces) == whole.choices[0].message.content
    assert len(pieces) >= 2 and len(set(pieces)) >= 2
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_the_openai_client_gets_a_whole_reply_and_it_is_stored_as_a_conversation(api_stack, api_key):
    reply = client(api_stack, api_key).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Say something"}], max_tokens=6, temperature=0)
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 6 and reply.usage.prompt_tokens > 0
    message_id = int(reply.id.removeprefix("chatcmpl-"))
    import sqlite3

    with sqlite3.connect(api_stack.db_path) as db:
        owner, content = db.execute(
            "SELECT u.username, m.content FROM chat_message m JOIN chat_conversation c ON c.id = m.conversation_id "
            "JOIN auth_user u ON u.id = c.user_id WHERE m.id = ?", (message_id,)).fetchone()
    assert owner == "api-user" and content == reply.choices[0].message.content


def test_models_are_listed_and_a_bad_key_is_refused(api_stack, api_key, tiny_model_dir):
    models = client(api_stack, api_key).models.list()
    assert [m.id for m in models.data] == [str(tiny_model_dir)]  # what the one live worker serves
    with pytest.raises(openai.AuthenticationError):
        client(api_stack, "sk-chat-wrong").models.list()


def test_generate_takes_a_prompt_and_returns_text(api_stack):
    request = urllib.request.Request(api_stack.base_url + "/generate", data=b'{"prompt": "Hi", "max_tokens": 5}',
                                     headers={"Content-Type": "application/json"})
    import json

    body = json.loads(urllib.request.urlopen(request, timeout=60).read())
    assert isinstance(body["text"], str) and body["usage"]["completion_tokens"] == 5


def test_metrics_show_turns_streams_queue_and_workers(api_stack, api_key):
    client(api_stack, api_key).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "count"}], max_tokens=4)
    text = urllib.request.urlopen(api_stack.base_url + "/metrics", timeout=10).read().decode()
    assert re.search(r'^chat_turns_total\{kind="api"\} [1-9]', text, re.M)
    assert re.search(r"^chat_time_to_first_token_seconds_count [1-9]", text, re.M)
    assert re.search(r"^chat_active_streams ", text, re.M)
    assert re.search(r'^chat_queue_depth\{state="waiting"\} \d', text, re.M)
    assert re.search(r'^chat_worker_generated_tokens_total\{worker="[^"]+"\} [1-9]', text, re.M)
    assert re.search(r'^chat_worker_replies_total\{finish_reason="length",worker="[^"]+"\} [1-9]', text, re.M)


def test_eight_concurrent_calls_with_one_key_are_all_answered(api_stack):
    key = api_stack.issue_api_key("parallel-program")

    def call(n):
        return client(api_stack, key).chat.completions.create(
            model="default", messages=[{"role": "user", "content": f"Call {n}"}], max_tokens=4)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(call, range(8)))
    assert all(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4 for r in replies)
    assert len({r.id for r in replies}) == 8
    # ... and beyond CHAT_MAX_CONVERSATIONS (3): each call is a conversation of the key's, kept for
    # CHAT_API_RETENTION_DAYS, and the person's own conversations are not used up by them.
    (rows,) = api_stack.query("SELECT COUNT(*), COUNT(c.api_key_id) FROM chat_conversation c JOIN auth_user u "
                              "ON u.id = c.user_id WHERE u.username = %s", "parallel-program")
    assert rows == (8, 8)


def test_a_key_over_its_requests_per_minute_gets_openais_429(api_stack):
    key = api_stack.issue_api_key("paced-program", requests_per_minute=2)
    request = dict(model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    answered = client(api_stack, key).chat.completions.with_raw_response.create(**request)
    assert answered.headers["x-ratelimit-limit-requests"] == "2"
    assert answered.headers["x-ratelimit-remaining-requests"] == "1"
    assert {"x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens"} <= set(answered.headers)
    client(api_stack, key).chat.completions.create(**request)
    with pytest.raises(openai.RateLimitError) as refused:
        client(api_stack, key).chat.completions.create(**request)
    error = refused.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert "Limit 2" in error.message
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_the_openai_client_gets_its_stop_strings_penalties_and_json_schema(api_stack, api_key):
    import json

    import jsonschema

    api = client(api_stack, api_key)
    request = dict(model="default", max_tokens=24, temperature=1.0, seed=5,
                   messages=[{"role": "user", "content": "Tell me a story"}])
    pieces = [c.choices[0].delta.content for c in api.chat.completions.create(**request, stream=True)
              if c.choices and c.choices[0].delta.content]
    text = "".join(pieces)
    # a stop string across the boundary of two streamed pieces: the answer ends before it
    at = next(i for i in range(1, len(pieces)) if len(pieces[i - 1]) >= 2 and len(pieces[i]) >= 2
              and text.index(pieces[i - 1][-2:] + pieces[i][:2]) == len("".join(pieces[:i])) - 2)
    stop = pieces[at - 1][-2:] + pieces[at][:2]
    stopped = api.chat.completions.create(**request, stop=[stop])
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    # the vLLM extras and OpenAI's penalties are taken (and stored as used)
    api.chat.completions.create(**request, presence_penalty=0.5, extra_body={"top_k": 5, "repetition_penalty": 1.2})
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                               "confidence": {"type": "integer", "minimum": 0, "maximum": 10}},
              "required": ["answer", "confidence"], "additionalProperties": False}
    structured = api.chat.completions.create(
        model="default", max_tokens=60, temperature=0.8, seed=2, messages=[{"role": "user", "content": "Yes?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": schema}})
    jsonschema.validate(json.loads(structured.choices[0].message.content), schema)


def test_a_field_the_server_does_not_support_is_refused_by_name(api_stack, api_key):
    api = client(api_stack, api_key)
    for extra in ({"tools": [{"type": "function", "function": {"name": "f"}}]}, {"extra_body": {"made_up": 1}},
                  {"n": 5}):
        with pytest.raises(openai.BadRequestError) as refused:
            api.chat.completions.create(model="default", max_tokens=4,
                                        messages=[{"role": "user", "content": "Hi"}], **extra)
        name = next(iter(extra.get("extra_body", extra)))
        assert refused.value.body["param"] == name and name in refused.value.body["message"]


def test_n_choices_are_answered_and_stored_as_versions_of_one_reply(api_stack, api_key):
    api = client(api_stack, api_key)
    asked = dict(model="default", max_tokens=8, temperature=1.0, seed=5, n=2,
                 messages=[{"role": "user", "content": "Name a colour."}])
    answer = api.chat.completions.create(**asked)
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.choices[0].message.content != answer.choices[1].message.content  # seeds 5 and 6
    assert answer.usage.completion_tokens == 16  # both choices' tokens; the prompt once
    first_reply = int(answer.id.removeprefix("chatcmpl-"))
    stored = api_stack.query(
        "SELECT content, superseded, parent_id FROM chat_message WHERE role = 'assistant' AND conversation_id = "
        "(SELECT conversation_id FROM chat_message WHERE id = %s) ORDER BY id", first_reply)
    assert [(content, bool(superseded)) for content, superseded, _ in stored] == [
        (answer.choices[0].message.content, False), (answer.choices[1].message.content, True)]
    assert stored[0][2] == stored[1][2]  # versions: one parent, the user's message
    again = api.chat.completions.create(**asked, stream=True)
    streamed = {}
    for chunk in again:
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
    assert streamed == {0: answer.choices[0].message.content, 1: answer.choices[1].message.content}


def test_logprobs_come_with_each_token_of_the_answer_streamed_or_not(api_stack, api_key):
    api = client(api_stack, api_key)
    asked = dict(model="default", max_tokens=12, temperature=0, logprobs=True, top_logprobs=3,
                 messages=[{"role": "user", "content": "Name three colours."}])
    answer = api.chat.completions.create(**asked)
    content, tokens = answer.choices[0].message.content, answer.choices[0].logprobs.content
    assert content and bytes(b for t in tokens for b in t.bytes).decode() == content  # every token, in order
    for token in tokens:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token == token.token  # greedy: the chosen token was the likeliest
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob, abs=1e-4)
    chunks = list(api.chat.completions.create(**asked, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert [t.token for t in streamed] == [t.token for t in tokens]
    plain = api.chat.completions.create(**{**asked, "logprobs": False, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_a_follow_up_call_reports_the_prompt_tokens_read_from_the_cache(api_stack, api_key):
    api = client(api_stack, api_key)
    messages = [{"role": "system", "content": "You answer questions about a long text. " * 20},
                {"role": "user", "content": "First question?"}]
    first = api.chat.completions.create(model="default", messages=messages, max_tokens=4, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Second question?"}]
    second = api.chat.completions.create(model="default", messages=messages, max_tokens=4, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens < cached < second.usage.prompt_tokens
