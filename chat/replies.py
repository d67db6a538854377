"""Ending a reply: the one place that stores an assistant reply's final state.

Called by the worker when generation ends, and by web processes when a worker has gone
quiet. The database update only applies while the message is still generating, so whoever
comes first wins and a reply is never stored twice.
"""
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from .live_state import ConversationHistory, LiveReply, retrying
from .models import Conversation, Message


WORKERS_GROUP = "chat.workers"  # every worker's control channel: stop requests go here


def user_group(owner_key):
    """The channel-layer group of every open socket of one user."""
    return f"chat.user.{owner_key}"


async def finish_reply(message_id, *, content, finish_reason, error_detail="", created_before=None, **stats):
    """Store the final state of a generating reply and tell the user's sockets. False if already ended
    (or, with `created_before`, if the reply is newer than that)."""
    message = await _store_final(message_id, content, finish_reason, error_detail, created_before, stats)
    if message is None:
        return False
    conversation = message.conversation
    owner_key = conversation.owner.key
    if finish_reason != Message.FinishReason.ERROR or content:
        await ConversationHistory(owner_key, conversation.pk).append(message.pk, message.role, content)
    await LiveReply(message_id).end()
    done = {
        "type": "chat.done",
        "conversation": conversation.pk,
        "message": message.pk,
        "finish_reason": finish_reason,
        "usage": {
            "prompt_tokens": message.prompt_tokens or 0,
            "completion_tokens": message.completion_tokens or 0,
        },
    }
    if error_detail:
        done["detail"] = error_detail
    await retrying(lambda: get_channel_layer().group_send(user_group(owner_key), done))
    return True


async def fail_if_abandoned(message_id, detail):
    """End a generating reply as an error when its worker stopped reporting (liveness key expired)."""
    live = LiveReply(message_id)
    if await live.is_alive():
        return False
    # A reply is stored a moment before chat.dispatch sets its liveness key: one that young is not abandoned.
    return await finish_reply(
        message_id, content=await live.text(), finish_reason=Message.FinishReason.ERROR, error_detail=detail,
        created_before=timezone.now() - timedelta(seconds=min(5.0, settings.CHAT_REQUEST_TIMEOUT)),
    )


@database_sync_to_async
def _store_final(message_id, content, finish_reason, error_detail, created_before, stats):
    fields = {"content": content, "finish_reason": finish_reason, "error_detail": error_detail[:500]}
    fields.update({k: v for k, v in stats.items() if v is not None})
    query = Message.objects.filter(pk=message_id, finish_reason="")
    if created_before is not None:
        query = query.filter(created__lt=created_before)
    updated = query.update(**fields)
    if not updated:
        return None
    message = Message.objects.select_related("conversation").get(pk=message_id)
    Conversation.objects.filter(pk=message.conversation_id).update(updated=timezone.now())
    return message
