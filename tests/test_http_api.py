"""The OpenAI-compatible API (with the official openai client), /generate, and /metrics, on the stack."""
import re
import urllib.request

import openai
import pytest

from bench.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_stack(tmp_path_factory, tiny_model_dir):
    # Every piece the engine makes goes out as its own event (no 30 ms coalescing), so what the
    # client receives does not depend on how fast this machine generates.
    stack = Stack(tmp_path_factory.mktemp("api"), redis_db=15, CHAT_MODEL=str(tiny_model_dir),
                  CHAT_TOKEN_FLUSH_INTERVAL=0)
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
