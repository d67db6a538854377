"""Random and malformed frames never crash the consumer, never leak another user's data, and
every invalid frame gets an error frame."""
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from chat.models import Conversation, Message
from tests.chat_support import connect, new_guest

pytestmark = pytest.mark.django_db(transaction=True)

TYPES = ["send", "stop", "regenerate", "edit", "history", "list", "rename", "delete", "rate", "bogus", "", None]
SECRET = "the other user's secret"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
ids = st.one_of(st.integers(-5, 10_000), st.none(), st.text(max_size=5), st.booleans(), st.floats())
frames = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(TYPES)},
                          optional={"conversation": ids, "message": ids, "content": json_values, "title": json_values,
                                    "params": json_values, "rating": json_values, "comment": json_values}),
    json_values,
).map(json.dumps)
raw_text = st.text(min_size=1, max_size=200)  # the test client cannot send an empty frame


def valid_without_error(frame_text):
    """Frames that may legitimately be answered by something other than an error."""
    try:
        frame = json.loads(frame_text)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") in {"list", "history", "send", "rename", "rate",
                                                           "delete", "edit", "regenerate"}


@pytest.fixture
def victim(clean_redis):
    """Another user's conversation that nothing in the fuzzing may reveal."""
    conversation = Conversation.objects.create(guest_key="victim", title="private")
    Message.objects.create(conversation=conversation, role="user", content=SECRET)
    Message.objects.create(conversation=conversation, role="assistant", content=SECRET, finish_reason="stop")
    return conversation


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(st.one_of(frames, raw_text), min_size=1, max_size=8))
def test_random_frames_get_answers_and_never_leak_or_crash(victim, settings, batch):
    settings.CHAT_MESSAGES_PER_MINUTE = 10_000
    async_to_sync(_exchange)(batch, victim)


async def _exchange(batch, victim):
    socket = await connect(await new_guest())
    try:
        for text in batch:
            await socket.send_to(text_data=text)
            # Every frame gets at least one answer; collect what it triggers. (receive_nothing peeks
            # without cancelling the consumer, which a timed-out receive would do.)
            assert not await socket.receive_nothing(timeout=2), f"no answer to {text!r}"
            answers = []
            while not await socket.receive_nothing(timeout=0.2):
                answers.append(await socket.receive_json_from())
            assert SECRET not in json.dumps(answers)
            assert not any(a.get("code") == "internal" for a in answers), answers
            if not valid_without_error(text):
                assert answers[0]["type"] == "error", (text, answers)
        await socket.send_json_to({"type": "list"})  # still open and serving
        listing = await socket.receive_json_from(timeout=2)
        assert listing["type"] in ("conversations", "turn", "done", "error", "ack", "changed")
    finally:
        await socket.disconnect()
    assert await sync_to_async(Message.objects.filter(conversation=victim).count)() == 2
