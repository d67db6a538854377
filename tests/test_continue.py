"""`continue`: a reply cut by its length limit goes on from its text, as the same message."""
import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message
from tests.chat_support import connect, new_guest, owner_key_of, receive_until, send_turn, text_of

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_reply_cut_by_its_limit_continues_from_its_text(worker, engine):
    socket = await connect(await new_guest())
    first = await send_turn(socket, "Count from one to fifty", max_new_tokens=4)
    conversation, reply, cut = first[0]["conversation"], first[-1]["message"], text_of(first)
    assert first[-1]["finish_reason"] == "length" and cut
    await socket.send_json_to({"type": "continue", "conversation": conversation,
                               "params": {"max_new_tokens": 6, "temperature": 0}})
    frames = await receive_until(socket, "done")
    assert frames[0] == {"type": "ack", "conversation": conversation, "message": first[0]["message"],
                         "reply": reply, "continues": reply}
    turn = next(f for f in frames if f["type"] == "turn")
    assert turn["continues"] == reply
    tokens = [f for f in frames if f["type"] == "token"]
    assert tokens and tokens[0]["message"] == reply and tokens[0]["offset"] == len(cut)
    # the model read the reply so far as the open end of its prompt
    assert engine.conversations[-1][-1] == {"role": "assistant", "content": cut}
    stored = await sync_to_async(Message.objects.get)(pk=reply)
    assert stored.content == cut + text_of(frames) and stored.finish_reason == frames[-1]["finish_reason"]
    assert not stored.superseded
    await socket.send_json_to({"type": "history", "conversation": conversation})
    history = (await receive_until(socket, "history"))[-1]["messages"]
    assert [m["id"] for m in history] == [first[0]["message"], reply] and history[-1]["content"] == stored.content
    await socket.disconnect()


async def test_only_a_cut_or_stopped_last_reply_can_be_continued(worker):
    socket = await connect(await new_guest())
    frames = await send_turn(socket, "Say hi", max_new_tokens=64)
    conversation = frames[0]["conversation"]
    await sync_to_async(Message.objects.filter(pk=frames[-1]["message"]).update)(finish_reason="stop")
    await socket.send_json_to({"type": "continue", "conversation": conversation})
    refused = await receive_until(socket, "error")
    assert refused[-1]["code"] == "nothing_to_continue" and refused[-1]["conversation"] == conversation
    assert (await sync_to_async(Message.objects.get)(pk=frames[-1]["message"])).finish_reason == "stop"
    await socket.disconnect()


async def test_a_continue_with_no_worker_running_keeps_the_replys_text(clean_redis):
    session = await new_guest(identified=True)
    socket = await connect(session)
    guest = (await owner_key_of(session)).removeprefix("g")

    def stored_conversation():
        conversation = Conversation.objects.create(guest_key=guest, title="Count")
        question = Message.objects.create(conversation=conversation, role="user", content="Count")
        reply = Message.objects.create(conversation=conversation, role="assistant", content="One, two,",
                                       finish_reason="length", parent=question)
        return conversation.pk, reply.pk

    conversation, reply = await sync_to_async(stored_conversation)()
    await socket.send_json_to({"type": "continue", "conversation": conversation})
    frames = await receive_until(socket, "done")
    assert any(f["type"] == "error" and f["code"] == "no_worker" for f in frames)
    assert frames[-1]["finish_reason"] == "error"
    stored = await sync_to_async(Message.objects.get)(pk=reply)
    assert (stored.content, stored.finish_reason) == ("One, two,", "error")
    await socket.disconnect()


async def test_a_stopped_reply_continues_with_new_tokens(worker, engine, settings):
    # A stop belongs to the generation it stopped: the next generation of the same reply (Continue)
    # streams instead of being cancelled at once by the old stop.
    settings.CHAT_TOKEN_FLUSH_INTERVAL = 0
    engine.model.delay = 0.05
    socket = await connect(await new_guest())
    await socket.send_json_to({"type": "send", "conversation": None, "content": "Count to a thousand",
                               "params": {"max_new_tokens": 400, "temperature": 0}})
    ack = await socket.receive_json_from()
    conversation = ack["conversation"]
    first = await receive_until(socket, "token")
    await socket.send_json_to({"type": "stop", "conversation": conversation})
    first += await receive_until(socket, "done")
    assert first[-1]["finish_reason"] == "cancelled"
    stopped = await sync_to_async(Message.objects.get)(pk=first[-1]["message"])
    assert stopped.content
    engine.model.delay = 0
    await socket.send_json_to({"type": "continue", "conversation": conversation,
                               "params": {"max_new_tokens": 5, "temperature": 0}})
    frames = await receive_until(socket, "done")
    assert text_of(frames), frames
    assert frames[-1]["finish_reason"] == "length"
    stored = await sync_to_async(Message.objects.get)(pk=stopped.pk)
    assert stored.content == stopped.content + text_of(frames)
    # and a stop still stops the continued generation
    engine.model.delay = 0.05
    await socket.send_json_to({"type": "continue", "conversation": conversation,
                               "params": {"max_new_tokens": 400, "temperature": 0}})
    await receive_until(socket, "token")
    await socket.send_json_to({"type": "stop", "conversation": conversation})
    assert (await receive_until(socket, "done"))[-1]["finish_reason"] == "cancelled"
    await socket.disconnect()


async def test_a_reply_reopened_by_continue_is_not_taken_for_abandoned(clean_redis):
    # Between Continue's transaction and the reply's liveness key, a history read checks for abandoned
    # replies: the reopened reply (created long ago) must not be ended then, nor its text wiped later.
    from datetime import timedelta

    from django.utils import timezone

    from chat import admission, turns
    from chat.models import Owner

    owner = Owner(guest_key="g-continue-grace")

    def stored_conversation():
        conversation = Conversation.objects.create(guest_key=owner.guest_key, title="Count")
        question = Message.objects.create(conversation=conversation, role="user", content="Count")
        reply = Message.objects.create(conversation=conversation, role="assistant", content="One, two,",
                                       finish_reason="length", parent=question)
        Message.objects.filter(pk=reply.pk).update(created=timezone.now() - timedelta(hours=1))
        return conversation.pk, reply.pk

    conversation, reply = await sync_to_async(stored_conversation)()
    await sync_to_async(turns.start_continuation)(owner, conversation, None)
    await admission.fail_abandoned_replies(owner, conversation)
    stored = await sync_to_async(Message.objects.get)(pk=reply)
    assert (stored.content, stored.finish_reason) == ("One, two,", "")
    # Once the grace has passed with no worker reporting, it ends as an error with its text kept.
    await sync_to_async(Conversation.objects.filter(pk=conversation).update)(
        updated=timezone.now() - timedelta(minutes=1))
    await admission.fail_abandoned_replies(owner, conversation)
    stored = await sync_to_async(Message.objects.get)(pk=reply)
    assert (stored.content, stored.finish_reason) == ("One, two,", "error")
