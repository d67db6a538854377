"""Handing a reply to the inference workers, and following it until it ends.

Used by the WebSocket consumer and by the HTTP API alike, so both go the same way: the
request joins the shared queue (chat.request_queue), a worker takes it, and its events come
back on the user's channel-layer group.
"""
import asyncio
import logging
import uuid

from channels.layers import get_channel_layer
from django.conf import settings

from . import metrics, request_queue
from .live_state import LiveReply, live_workers
from .models import Message
from .replies import fail_if_abandoned, finish_reply, user_group

log = logging.getLogger(__name__)
NO_WORKER = "no inference worker is running; start one, then regenerate this reply"


async def dispatch(owner_key, conversation_id, reply):
    """Queue `reply` (a generating assistant Message) for the workers; returns the queue entry id,
    or None after ending the reply with an error when no worker is running. The request carries
    ids, not the conversation: the worker reads the history (chat.live_state.ConversationHistory)."""
    if not await live_workers():
        metrics.ERRORS.labels("no_worker").inc()
        await finish_reply(reply.pk, content="", finish_reason=Message.FinishReason.ERROR, error_detail=NO_WORKER)
        return None
    params = dict(reply.params)
    system = params.pop("system", None)
    turn = uuid.uuid4().hex[:12]
    await LiveReply(reply.pk).keep_alive(settings.CHAT_REQUEST_TIMEOUT)
    entry_id = await request_queue.enqueue({
        "type": "chat.generate", "turn": turn, "conversation": conversation_id, "message": reply.pk,
        "owner": owner_key,
        "params": params, "system": system,
    })
    log.info("turn queued reply=%s conversation=%s", reply.pk, conversation_id,
             extra={"turn": turn, "reply": reply.pk, "conversation": conversation_id})
    return entry_id


async def keep_queued_alive(reply_id, entry_id):
    """While a request waits in the shared queue behind others and workers are up, keep it
    alive; returns its place in line (0 once a worker has taken it)."""
    position = await request_queue.queue_position(entry_id)
    if position and await live_workers():
        await LiveReply(reply_id).keep_alive(settings.CHAT_REQUEST_TIMEOUT)
    return position


def abandoned_detail(reported):
    if reported:
        return "the inference worker stopped responding; the text so far is kept"
    return f"no inference worker took this turn within {settings.CHAT_REQUEST_TIMEOUT:g} s"


async def follow(owner_key, reply_id, entry_id):
    """Yield the channel-layer events (token, queued, done) of one reply until its `done`,
    ending it as an error if its worker goes quiet. For callers without a socket (the HTTP API)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(user_group(owner_key), channel)
    timing, reported = metrics.TurnTiming(), False
    try:
        while True:
            try:
                event = await asyncio.wait_for(layer.receive(channel), 1.0)
            except TimeoutError:
                if not reported:
                    await keep_queued_alive(reply_id, entry_id)
                await fail_if_abandoned(reply_id, abandoned_detail(reported))
                continue
            if event.get("message") != reply_id:
                continue
            if event["type"] == "chat.token":
                reported = True
                timing.token()
            elif event["type"] == "chat.done":
                timing.done(event)
            yield event
            if event["type"] == "chat.done":
                return
    finally:
        timing.close()
        await layer.group_discard(user_group(owner_key), channel)


async def request_stop(reply_id):
    from .replies import WORKERS_GROUP

    await LiveReply(reply_id).request_cancel()
    await get_channel_layer().group_send(WORKERS_GROUP, {"type": "chat.stop", "message": reply_id})
