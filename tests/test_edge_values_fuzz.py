"""Integers and floats at the edges of their types, in every numeric field of every frame and HTTP
body, get clear answers (never `internal`, never a 500) and leave the worker serving."""
import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from chat.models import ApiKey
from tests.chat_support import connect, http, new_guest, send_turn, start_worker

pytestmark = pytest.mark.django_db(transaction=True)

EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**40]
edge_numbers = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.integers(),
    st.floats(),  # NaN, ±inf, subnormals, ±0.0
    st.sampled_from([5e-324, 1e-300, 1e-5, 1e308, -0.0, float("inf"), float("nan")]),
)
SOCKET_FIELDS = {
    "send": ["conversation", "params.temperature", "params.top_p", "params.max_new_tokens", "params.seed"],
    "regenerate": ["conversation", "params.temperature", "params.seed"],
    "edit": ["conversation", "message", "params.max_new_tokens", "params.top_p"],
    "stop": ["conversation"], "history": ["conversation"], "delete": ["conversation"],
    "rename": ["conversation"], "rate": ["message", "rating"],
}
HTTP_FIELDS = ["temperature", "top_p", "max_tokens", "max_completion_tokens", "seed"]


def frame_with(kind, field, value):
    frame = {"type": kind, "conversation": None, "content": "hi", "title": "t", "message": 1, "rating": 1}
    if field.startswith("params."):
        frame["params"] = {field.split(".", 1)[1]: value}
    else:
        frame[field] = value
    return json.dumps(frame)  # Python writes NaN and Infinity, which a sloppy client might send too


socket_cases = st.sampled_from([(k, f) for k, fields in SOCKET_FIELDS.items() for f in fields])


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases=st.lists(st.tuples(socket_cases, edge_numbers), min_size=1, max_size=6),
       http_cases=st.lists(st.tuples(st.sampled_from(HTTP_FIELDS), edge_numbers), min_size=1, max_size=3))
def test_edge_values_anywhere_get_clear_answers_and_a_normal_turn_completes_after(engine, clean_redis, settings,
                                                                                   cases, http_cases):
    settings.CHAT_MESSAGES_PER_MINUTE = 10_000
    settings.CHAT_MAX_NEW_TOKENS_LIMIT = 8  # an accepted edge value generates briefly
    # asyncio.run, not async_to_sync: under async_to_sync every thread-sensitive call (the worker's
    # ORM calls too) would queue for this thread, which a request's sync middleware holds while
    # its view waits for that very worker. daphne gives each request a thread of its own.
    asyncio.run(_exchange(engine, cases, http_cases))


async def _exchange(engine, cases, http_cases):
    _, stop, task = await start_worker(engine)  # in this example's event loop
    socket = await connect(await new_guest())
    try:
        for (kind, field), value in cases:
            await socket.send_to(text_data=frame_with(kind, field, value))
            assert not await socket.receive_nothing(timeout=5), f"no answer to {kind}.{field}={value!r}"
            while not await socket.receive_nothing(timeout=0.1):
                answer = await socket.receive_json_from()
                assert answer.get("code") != "internal", (kind, field, value, answer)
    finally:
        await socket.disconnect()
    key = await _api_key()
    for field, value in http_cases:
        for path, body in (("/generate", {"prompt": "hi"}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
            response = await http("POST", path, {**body, field: value}, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code in (200, 400, 429), (path, field, value, response.content)
            assert "error" not in response.json() or response.json()["error"]["message"]
    # Whatever came before, a normal turn of a new user completes.
    fresh = await connect(await new_guest())
    assert (await send_turn(fresh, "Say hi."))[-1]["finish_reason"] in ("stop", "length")
    await fresh.disconnect()
    stop.set()
    await asyncio.wait_for(task, 10)


@sync_to_async
def _api_key():
    user, _ = User.objects.get_or_create(username="fuzz")
    key = ApiKey(name="fuzz", user=user)
    raw = key.issue()
    key.save()
    return raw
