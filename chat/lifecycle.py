"""A reply's life, in one place: every change of its state goes through a function here.

    generating (stored with finish_reason GENERATING by chat.turns, in the turn's transaction)
      -> queued: dispatch() puts its request in its model's queue (chat.request_queue)
      -> taken by a worker, which streams tokens (chat.worker)
      -> ended by finish_reply(): stop / length (the worker), cancelled (a stop request),
         or error (the worker failed, or nobody reported on it: the reaper)

finish_reply() is the only writer of a reply's final state: its database update applies only
while the reply is still generating, so whoever comes first wins and a reply is never ended
twice. One Reaper per event loop (each web process) watches the replies its sockets and API
calls dispatched: it tells waiting ones their place in line and ends those whose worker went
quiet. The WebSocket consumer and the HTTP API both go this way.
"""
import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from . import api_limits, metrics, request_queue
from .live_state import ConversationHistory, LiveReply, live_workers, ready_workers, retrying, served_models
from .models import Conversation, Message

log = logging.getLogger(__name__)
GENERATING = Message.FinishReason.GENERATING  # the finish_reason of a reply that has not ended
WORKERS_GROUP = "chat.workers"  # every worker's control channel: stop requests go here
NO_WORKER = "no inference worker is running; start one, then regenerate this reply"
REAP_INTERVAL = 1.0
STOP_WAIT = 5.0  # seconds a deletion waits for its replies' workers to stop them


def user_group(owner_key):
    """The channel-layer group of every open socket of one user."""
    return f"chat.user.{owner_key}"


def visitor_group(session_key):
    """The group of a browser's sockets that speak for no one yet: told when one of its tabs (or an
    import) made the session's guest, they become that guest too (chat.consumers)."""
    return f"chat.visitor.{session_key}"


def no_worker_for(model):
    """The error of a turn whose conversation's model no live worker serves."""
    return f"no inference worker serves the model {model!r}; start one for it, then regenerate this reply"


# --- queued ------------------------------------------------------------------------------
async def dispatch(owner_key, conversation_id, reply, model=None):
    """Queue `reply` (a generating assistant Message) for the workers serving its conversation's model
    and watch it until it ends; returns the queue entry id, or None after ending the reply with an
    error when no worker serves that model. A conversation without a model yet (a new one) gets
    `model` (the one its first turn chose) or else the default one (chat.live_state.served_models),
    and keeps it. The request carries ids, not the conversation: the worker reads the history."""
    workers = await live_workers()
    model = await conversation_model(conversation_id, default=model or next(iter(served_models(workers)), ""))
    if not any(worker.get("model") == model for worker in workers):
        metrics.ERRORS.labels("no_worker").inc()
        await finish_reply(reply.pk, content=reply.content, finish_reason=Message.FinishReason.ERROR,  # a continued
                           error_detail=no_worker_for(model) if workers and model else NO_WORKER)  # one keeps its text
        return None
    params = dict(reply.params)
    system = params.pop("system", None)
    turn = uuid.uuid4().hex[:12]
    live = LiveReply(reply.pk)
    await live.clear_cancel()  # a stop that came after the reply's previous generation ended is not for this one
    await live.keep_alive(settings.CHAT_REQUEST_TIMEOUT)
    entry_id = await request_queue.enqueue({
        "type": "chat.generate", "turn": turn, "conversation": conversation_id, "message": reply.pk,
        "owner": owner_key, "params": params, "system": system, "model": model,
        "parent": reply.parent_id,  # the prompt ends there (other versions of this reply are not in it)
        # a reply reopened by `continue` goes on from its stored text (a new one has none)
        **({"prefix": reply.content} if reply.content else {}),
    })
    log.info("turn queued reply=%s conversation=%s model=%s", reply.pk, conversation_id, model,
             extra={"turn": turn, "reply": reply.pk, "conversation": conversation_id})
    Reaper.of_this_loop().watch(owner_key, conversation_id, reply.pk, entry_id, model)
    return entry_id


@database_sync_to_async
def conversation_model(conversation_id, default):
    """The model a conversation's turns go to; one without a model yet is given `default`."""
    model = Conversation.objects.filter(pk=conversation_id).values_list("model_name", flat=True).first()
    if not model and default:
        Conversation.objects.filter(pk=conversation_id, model_name="").update(model_name=default)
        model = default
    return model or ""


async def request_stop(reply_id):
    """Ask whichever worker has the reply to stop it (it ends as `cancelled`, its text kept)."""
    await LiveReply(reply_id).request_cancel()
    await get_channel_layer().group_send(WORKERS_GROUP, {"type": "chat.stop", "message": reply_id})


async def stop_before_removal(reply_ids, wait=STOP_WAIT):
    """Stop replies whose rows are about to be deleted (their conversation is), and wait until each
    has ended: a worker must not go on generating for a conversation that no longer exists, outside
    every in-flight limit. One that no worker ends within `wait` (queued, or its worker is gone) is
    ended here as cancelled; a worker that takes it later finds it ended and skips it."""
    for reply_id in reply_ids:
        await request_stop(reply_id)
    deadline = asyncio.get_running_loop().time() + wait
    pending = list(reply_ids)
    while pending and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        pending = [reply_id for reply_id in pending if await still_generating(reply_id)]
    for reply_id in pending:
        await finish_reply(reply_id, content=await LiveReply(reply_id).text() or None,
                           finish_reason=Message.FinishReason.CANCELLED)


# --- ended -------------------------------------------------------------------------------
async def finish_reply(message_id, *, content, finish_reason, error_detail="", created_before=None,
                       cached_tokens=None, logprobs=None, **stats):
    """Store the final state of a generating reply and tell the user's sockets. False if already ended
    (or, with `created_before`, if the reply is newer than that). `cached_tokens` (prompt tokens the
    engine reused from its cache) and `logprobs` (OpenAI's, where the reply asked for them) go out in
    `done` only: the Message has no column for them."""
    message = await _store_final(message_id, content, finish_reason, error_detail, created_before, stats)
    if message is None:
        return False
    conversation = message.conversation
    owner_key = conversation.owner.key
    if conversation.api_key_id:  # before `done` goes out: the key's next call already sees these tokens
        await api_limits.record_tokens(conversation.api_key_id, (message.prompt_tokens or 0)
                                       + (message.completion_tokens or 0))
    if (finish_reason != Message.FinishReason.ERROR or message.content) and not message.superseded:
        await ConversationHistory(owner_key, conversation.pk).append(message.pk, message.role, message.content)
    await LiveReply(message_id).end()
    done = done_event(message, cached_tokens, logprobs)
    await retrying(lambda: get_channel_layer().group_send(user_group(owner_key), done))
    return True


def done_event(message, cached_tokens=None, logprobs=None):
    """The `done` event of an ended reply, as stored (and the cached prompt tokens, where known)."""
    done = {"type": "chat.done", "conversation": message.conversation_id, "message": message.pk,
            "finish_reason": message.finish_reason, **message.usage_fields()}
    if cached_tokens is not None:
        done["usage"]["cached_tokens"] = cached_tokens
    if logprobs is not None:
        done["logprobs"] = logprobs
    if message.error_detail:
        done["detail"] = message.error_detail
    return done


async def fail_if_abandoned(message_id, detail):
    """End a generating reply as an error when its worker stopped reporting (liveness key expired)."""
    live = LiveReply(message_id)
    if await live.is_alive():
        return False
    # A reply is stored (or reopened by Continue) a moment before dispatch() sets its liveness key: one
    # that young is not abandoned. With nothing streamed, a continued reply keeps its stored text.
    return await finish_reply(
        message_id, content=await live.text() or None, finish_reason=Message.FinishReason.ERROR,
        error_detail=detail,
        created_before=timezone.now() - timedelta(seconds=min(5.0, settings.CHAT_REQUEST_TIMEOUT)),
    )


def abandoned_detail(reported):
    if reported:
        return "the inference worker stopped responding; the text so far is kept"
    return f"no inference worker took this turn within {settings.CHAT_REQUEST_TIMEOUT:g} s"


@database_sync_to_async
def still_generating(message_id):
    return Message.objects.generating().filter(pk=message_id).exists()


@database_sync_to_async
def stored_reply(message_id):
    return Message.objects.get(pk=message_id)


@database_sync_to_async
def _store_final(message_id, content, finish_reason, error_detail, created_before, stats):
    fields = {"finish_reason": finish_reason, "error_detail": error_detail[:500]}
    if content is not None:  # None: keep the stored text
        fields["content"] = content
    fields.update({k: v for k, v in stats.items() if v is not None})
    query = Message.objects.generating().filter(pk=message_id)
    if created_before is not None:  # not if stored, or reopened (its conversation's last turn), since then
        query = query.filter(created__lt=created_before, conversation__updated__lt=created_before)
    if not query.update(**fields):
        return None
    message = Message.objects.select_related("conversation").get(pk=message_id)
    conversation = {"updated": timezone.now()}
    if stats.get("model_name"):  # the conversation's model is the one that answered it last
        conversation["model_name"] = message.conversation.model_name = stats["model_name"]
    Conversation.objects.filter(pk=message.conversation_id).update(**conversation)
    return message


# --- watched until it ends ---------------------------------------------------------------
@dataclass
class _Watch:
    owner_key: str
    conversation_id: int
    entry_id: str | None  # its queue entry, until a worker has taken it
    model: str = ""  # the model whose queue it waits in
    position: int = 0


class Reaper:
    """Every REAP_INTERVAL, for each reply this process dispatched and that has not ended: while it
    waits in the queue (and a worker is ready), keep it alive and tell its user its place in line
    when that changes; once its liveness key has expired, end it as an error (its text kept)."""

    _by_loop = weakref.WeakKeyDictionary()

    @classmethod
    def of_this_loop(cls):
        loop = asyncio.get_running_loop()
        if loop not in cls._by_loop:
            cls._by_loop[loop] = cls()
        return cls._by_loop[loop]

    def __init__(self):
        self.watched = {}  # reply id -> _Watch
        self._task = None

    def watch(self, owner_key, conversation_id, reply_id, entry_id, model=""):
        self.watched[reply_id] = _Watch(owner_key, conversation_id, entry_id, model)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        while self.watched:
            await asyncio.sleep(REAP_INTERVAL)
            for reply_id, watch in list(self.watched.items()):
                try:
                    if await self._ended(reply_id, watch):
                        self.watched.pop(reply_id, None)
                except Exception:  # Redis or the database is away: try again next round
                    log.warning("reaper could not check reply %s", reply_id, exc_info=True)

    async def _ended(self, reply_id, watch):
        if watch.entry_id is not None:
            position = await request_queue.queue_position(watch.entry_id, watch.model)
            if not position:
                watch.entry_id = None  # a worker has it: from now on its own reports keep it alive
            elif await ready_workers(watch.model):  # while none can generate it, the request timeout runs out
                await LiveReply(reply_id).keep_alive(settings.CHAT_REQUEST_TIMEOUT)
                if position != watch.position:
                    watch.position = position
                    await get_channel_layer().group_send(user_group(watch.owner_key), {
                        "type": "chat.queued", "conversation": watch.conversation_id, "message": reply_id,
                        "position": position})
        if await LiveReply(reply_id).is_alive():
            return False
        await fail_if_abandoned(reply_id, abandoned_detail(watch.entry_id is None))
        return not await still_generating(reply_id)


class ReplyFollower:
    """The channel-layer events (token, queued, done) of one reply, for callers without a socket (the
    HTTP API). It listens from subscribe() on, so a caller subscribes before dispatch(): tokens sent
    before it would otherwise be lost (a group delivers only to those in it at the time). The Reaper
    ends the reply if its worker goes quiet; a `done` lost on the way (Redis failing at that moment)
    is rebuilt from the stored reply."""

    def __init__(self, owner_key):
        self.group, self.layer, self.channel = user_group(owner_key), get_channel_layer(), None

    async def subscribe(self):
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def close(self):
        if self.channel is not None:
            channel, self.channel = self.channel, None
            await self.layer.group_discard(self.group, channel)

    async def events(self, *reply_ids):
        """Yield the replies' events until each one's `done`, then unsubscribe."""
        timings = {reply_id: metrics.TurnTiming() for reply_id in reply_ids}
        try:
            while timings:
                try:
                    events = [await asyncio.wait_for(self.layer.receive(self.channel), REAP_INTERVAL)]
                except TimeoutError:
                    events = [done_event(await stored_reply(reply_id)) for reply_id in list(timings)
                              if not await still_generating(reply_id)]
                for event in events:
                    timing = timings.get(event.get("message"))
                    if timing is None:
                        continue
                    if event["type"] == "chat.token":
                        timing.token()
                    elif event["type"] == "chat.done":
                        timing.done(event)
                        timings.pop(event["message"]).close()
                    yield event
        finally:
            for timing in timings.values():
                timing.close()
            await self.close()
