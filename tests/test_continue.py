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
    session = await new_guest()
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
