"""The inference worker: takes turns off the shared request queue, streams replies back to users.

Run it with `python manage.py inference_worker`. It loads the model once, then serves that model's
request stream (chat.request_queue; it announces the model's name) until SIGTERM/SIGINT. Concurrent
replies are decoded together in one batch (inference.engine_loop); those beyond the batch's budget
wait and are told their place.

Cache-aware routing: a worker whose engine keeps prompts cached (inference.prefix_cache) notes, as
it ends a reply, that it holds the conversation (chat.live_state.remember_warm). A worker that takes
a turn of a conversation another worker holds hands the request over to that one (XCLAIM, then a
word on its control group) when its last heartbeat showed room in its batch; the warm worker starts
it, or hands it straight back when its batch filled meanwhile. So a follow-up reads only its new
tokens wherever it is possible without waiting for a busy worker, the queue stays first come, first
served (a request is handed over only by a worker that had room for it), and a handed-over request
is pending for one worker at a time: served once, and adopted like any other if that worker dies.
"""
import asyncio
import collections
import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from inference import EngineError
from inference.generation import Finished

from . import request_queue
from .lifecycle import WORKERS_GROUP, finish_reply, still_generating, user_group
from .live_state import (ConversationHistory, LiveReply, announce_worker, remember_warm, retrying, warm_worker,
                         withdraw_worker, worker_info)
from .models import Conversation, Message

log = logging.getLogger(__name__)
_END = object()
TAKE_BLOCK_MS = 100  # a worker waits this long for new requests before it looks at handovers again


def worker_group(worker_id):
    """The group of one worker's control channel (handovers of warm conversations)."""
    return f"chat.worker.{worker_id}"


class InferenceWorker:
    """Serves the request channel: every request becomes a reply in the engine's batch at once;
    the engine decides who waits (first come, first served) and the waiting are told their place."""

    def __init__(self, engine, worker_id=None):
        self.engine = engine
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.provenance = Message.provenance(self.id, engine)  # stored on every reply it ends
        self.layer = get_channel_layer()
        self.replies = {}  # message id -> (request, ReplyStream or None while the prompt is built)
        self.streaming = set()  # message ids whose first piece has gone out
        self.entries = {}  # message id -> the queue entry of the request being served
        self.lost = set()  # message ids another worker holds now (this one was thought dead): left alone
        self.absent_since = {}  # other workers seen without a heartbeat: id -> since when (monotonic)
        self.started = time.time()
        self.finished = collections.Counter()  # finish reason -> replies, for /metrics
        self.tokens = 0
        self.engine_deaths = []  # when its engine became unhealthy, for the restart backoff
        # cache-aware routing (the module's docstring): only an engine that keeps prompts cached takes part
        self.keeps_prefixes = getattr(engine.loop, "stats", None) is not None
        self.handovers = {}  # entry id -> the worker that handed it here (to hand it back to)
        self.look_at_pending = False  # a handover came, or one waits here for room
        self.routing = collections.Counter()  # handed_over, handed_back, received: for /metrics

    async def run(self, stop_event):
        """Serve until stop_event is set; replies in progress are cancelled and stored."""
        self.control_channel = await self.layer.new_channel()
        await self.layer.group_add(WORKERS_GROUP, self.control_channel)
        await self.layer.group_add(worker_group(self.id), self.control_channel)
        await request_queue.ensure_group(self.engine.name)
        self.tasks = set()
        self.room = asyncio.Event()
        loops = [asyncio.create_task(_forever(loop)) for loop in (self._heartbeat, self._take_requests,
                                                                   self._take_control, self._housekeeping)]
        log.info("worker %s ready: %r", self.id, self.engine)
        try:
            await stop_event.wait()
        finally:
            for task in loops:
                task.cancel()
            for _, stream in self.replies.values():
                if stream is not None:
                    stream.cancel()
            if self.tasks:  # let the cancelled replies store what they have
                await asyncio.wait(self.tasks, timeout=5)
            # channels_redis may sit out its blocking pop before a cancelled receive returns
            await asyncio.wait(loops, timeout=2)
            await withdraw_worker(self.id)
            await self.layer.group_discard(WORKERS_GROUP, self.control_channel)
            await self.layer.group_discard(worker_group(self.id), self.control_channel)
            log.info("worker %s stopped", self.id)

    def info(self):
        streams = [stream for _, stream in self.replies.values() if stream is not None]
        return {
            "id": self.id,
            "model": self.engine.name,
            "sampling": getattr(self.engine, "sampling_defaults", {}),  # the model's own, for the page
            # announced to /status and /healthz, which anyone may read: an upstream's URL stays out
            "device": getattr(self.engine, "public_device", None) or str(self.engine.device),
            "dtype": str(self.engine.dtype).removeprefix("torch."),
            "started": self.started,
            "active": sum(1 for s in streams if not s.queue_position),
            "waiting": sum(1 for s in streams if s.queue_position),
            "room": self._free(),  # for handovers
            "routing": dict(self.routing),
            "replies": dict(self.finished),
            "tokens": self.tokens,
            "ready": self.engine.loop.healthy(),  # /healthz counts only ready workers
            "prefix_cache": self._prefix_cache_stats(),
        }

    def _prefix_cache_stats(self):
        """The engine's prompt-cache counters (an upstream engine has none)."""
        stats = getattr(self.engine.loop, "stats", None)
        return stats().get("prefix_cache", {}) if stats else {}

    async def _heartbeat(self):
        interval = settings.CHAT_WORKER_HEARTBEAT
        while True:
            await self._restart_engine_if_dead()
            await announce_worker(self.id, self.info(), ttl=interval * 3)
            await self._keep_serving()
            # Re-joining is idempotent; it restores membership after a Redis restart or expiry.
            await self.layer.group_add(WORKERS_GROUP, self.control_channel)
            await self.layer.group_add(worker_group(self.id), self.control_channel)
            await self._adopt_orphans()
            # Waiting replies stay alive while they wait, and learn their place in line.
            for request, stream in list(self.replies.values()):
                if stream is not None and stream.queue_position:
                    await self._tell_queued(request, stream.queue_position)
            await asyncio.sleep(interval)

    async def _keep_serving(self):
        """Prolong this worker's hold on each of its replies. A hold found taken by another worker
        (this one was missing for longer than the grace period, so its replies were adopted) means
        the reply is the other's now: stop generating it and touch nothing of it."""
        for message_id, (_, stream) in list(self.replies.items()):
            entry_id = self.entries.get(message_id)
            if entry_id and message_id not in self.lost and not await self._take_serving(message_id, entry_id):
                log.warning("reply %s is served by another worker now; dropping it here", message_id)
                self.lost.add(message_id)
                if stream is not None:
                    stream.cancel()

    async def _take_serving(self, message_id, entry_id):
        return await LiveReply(message_id).take_serving(self.id, entry_id, settings.CHAT_WORKER_HEARTBEAT * 3)

    async def _restart_engine_if_dead(self):
        """An unhealthy engine (its loop thread died; an upstream server stopped answering) is
        announced at once (not ready: /healthz 503), then restarted (probed again) after a backoff
        that grows while it stays unhealthy (1 s, 2 s, ... at most 60 s)."""
        if self.engine.loop.healthy():
            return
        now = time.monotonic()
        self.engine_deaths = [t for t in self.engine_deaths if now - t < 600] + [now]
        delay = min(60, 2 ** (len(self.engine_deaths) - 1))
        log.error("the engine is unhealthy (%r); restarting it in %s s", self.engine, delay)
        await announce_worker(self.id, self.info(), ttl=delay + settings.CHAT_WORKER_HEARTBEAT * 3)
        await asyncio.sleep(delay)
        self.engine.loop.restart()
        self.room.set()

    async def _housekeeping(self):
        """Hourly: delete expired sessions (every guest's visit leaves one in the database) and the API
        calls' conversations past their retention."""
        while True:
            await clear_expired_sessions()
            await database_sync_to_async(delete_expired_api_conversations)()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    async def _take_requests(self):
        """Take requests while the batch has room; the rest wait in the shared queue, in order. A
        request of a conversation another worker holds warm goes to that worker where it has room."""
        while True:
            self.room.clear()  # before looking: a reply that ends or a handover from now on wakes the wait
            if self.look_at_pending:
                await self._take_handovers()
            free = self._free()
            if free <= 0:
                await self.room.wait()
                continue
            for entry_id, request in await request_queue.take(self.id, free, block_ms=TAKE_BLOCK_MS,
                                                              model=self.engine.name):
                if not await self._hand_to_warm_worker(entry_id, request):
                    self._start(entry_id, request)

    def _free(self):
        if not self.engine.loop.healthy():  # nothing is taken until the engine is back
            return 0
        return self.engine.config.max_batch_size - len(self.replies)

    async def _hand_to_warm_worker(self, entry_id, request):
        """Hand the request to the worker holding its conversation's prompt, when that worker's last
        heartbeat showed room for it; True when handed over."""
        if not self.keeps_prefixes:
            return False
        target = await warm_worker(request["conversation"])
        if not target or target == self.id:
            return False
        info = await worker_info(target)
        if not info or info.get("model") != self.engine.name or not info.get("ready") or info.get("room", 0) <= 0:
            return False
        if not await self._hand(entry_id, target, back_to=self.id):
            return False
        self.routing["handed_over"] += 1
        log.info("turn handed over reply=%s from=%s to=%s", request["message"], self.id, target,
                 extra={"turn": request.get("turn"), "reply": request["message"], "worker": self.id})
        return True

    async def _hand(self, entry_id, target, back_to=None):
        """Make the entry pending for `target` and tell it (`back_to`: where it may hand it back; None:
        it is handed back, to be served); False when the entry is gone."""
        if not await request_queue.hand_over(entry_id, target, self.engine.name):
            return False
        await self.layer.group_send(worker_group(target), {"type": "chat.handover", "entry": entry_id,
                                                           "back_to": back_to})
        return True

    async def _take_handovers(self):
        """Start the requests handed to this worker (and any other pending here that it is not
        serving); with no room left for one, hand it back to the worker it came from."""
        self.look_at_pending = False
        handovers, self.handovers = self.handovers, {}
        for entry_id, request in await request_queue.own_pending(self.id, self.engine.name):
            if request["message"] in self.replies:
                continue
            back_to = handovers.get(entry_id)
            if self._free() > 0:
                self.routing["received"] += 1
                self._start(entry_id, request)
            elif back_to and await self._hand(entry_id, back_to):
                self.routing["handed_back"] += 1
            else:  # it waits here for room (the loop looks again when a reply ends)
                self.look_at_pending = True

    def _start(self, entry_id, request):
        self.replies[request["message"]] = (request, None)  # counted against the batch at once
        self.entries[request["message"]] = entry_id
        task = asyncio.create_task(self._serve(entry_id, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _adopt_orphans(self):
        """Serve the requests of workers that died; end the ones they had started as errors.

        A worker is dead once it has been seen without a heartbeat for three more heartbeats (a Redis
        pause expires every heartbeat at once, and a live worker announces itself again within one),
        and a request is only served by the worker holding its reply: one the owner still holds is
        dropped here, untouched."""
        expiry = settings.CHAT_WORKER_HEARTBEAT * 3  # as announced: a heartbeat missed three times
        orphans = await request_queue.claim_from_dead_workers(self.id, expiry, model=self.engine.name,
                                                              grace_seconds=expiry, absent_since=self.absent_since)
        for entry_id, request in orphans:
            if not await self._take_serving(request["message"], entry_id):
                log.warning("reply %s is still served by its worker; not taking it over", request["message"])
                await request_queue.acknowledge(entry_id, self.engine.name)
                continue
            partial = await LiveReply(request["message"]).text()
            if partial:
                await finish_reply(request["message"], content=partial,
                                   finish_reason=Message.FinishReason.ERROR,
                                   error_detail="the worker generating this reply stopped; the text so far is kept")
                await request_queue.acknowledge(entry_id, self.engine.name)
                await LiveReply(request["message"]).release_serving(self.id, entry_id)
            else:
                log.info("taking over request for reply %s from a stopped worker", request["message"])
                self._start(entry_id, request)

    async def _take_control(self):
        while True:
            event = await self.layer.receive(self.control_channel)
            if event.get("type") == "chat.handover":
                self.handovers[event["entry"]] = event.get("back_to")  # None: handed back, serve it
                self.look_at_pending = True
                self.room.set()
            elif event.get("type") == "chat.stop" and event.get("message") in self.replies:
                _, stream = self.replies[event["message"]]
                if stream is not None:
                    stream.cancel()

    async def _serve(self, entry_id, request):
        message_id = request["message"]
        try:
            for attempt in range(3):
                try:
                    if not await self._take_serving(message_id, entry_id):  # another worker has it: its reply
                        log.warning("reply %s is served by another worker; dropping its request", message_id)
                        self.lost.add(message_id)
                    elif await still_generating(message_id):  # not already ended (stopped, or timed out)
                        await self.generate(request)
                    break
                except RedisError:
                    # Redis just restarted under us: start again if nothing was streamed yet
                    if attempt == 2 or message_id in self.streaming:
                        raise
                    log.warning("Redis unavailable starting reply %s; trying again in 1 s", message_id)
                    await asyncio.sleep(1)
        except Exception:  # a bug must not take the worker down with it; what was streamed is kept
            log.exception("reply %s failed", message_id)
            if message_id in self.lost:
                return
            await finish_reply(message_id, content=await _streamed_text(message_id),
                               finish_reason=Message.FinishReason.ERROR,
                               error_detail="the worker failed while generating this reply",
                               **self.provenance)
        finally:
            self.replies.pop(message_id, None)
            self.streaming.discard(message_id)
            self.room.set()
            await request_queue.acknowledge(entry_id, self.engine.name)
            if message_id not in self.lost:
                await LiveReply(message_id).release_serving(self.id, entry_id)
            self.lost.discard(message_id)
            self.entries.pop(message_id, None)

    async def _tell_queued(self, request, position):
        await LiveReply(request["message"]).keep_alive(settings.CHAT_STALL_TIMEOUT)
        await self.layer.group_send(
            user_group(request["owner"]),
            {"type": "chat.queued", "conversation": request["conversation"],
             "message": request["message"], "position": position},
        )

    async def generate(self, request):
        """Generate one reply, streaming coalesced pieces to the user's group, then store it."""
        message_id, live = request["message"], LiveReply(request["message"])
        prefix = request.get("prefix", "")  # a continued reply: the model goes on from its text, kept
        if await live.cancel_requested():
            await finish_reply(message_id, content=prefix, finish_reason=Message.FinishReason.CANCELLED,
                               **self.provenance)
            return
        await live.keep_alive(settings.CHAT_STALL_TIMEOUT)
        log.info("turn taken reply=%s worker=%s", message_id, self.id,
                 extra={"turn": request.get("turn"), "reply": message_id, "worker": self.id})
        started = time.monotonic()
        messages = await ConversationHistory(request["owner"], request["conversation"]).prompt_messages(
            until=request.get("parent"))
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
        try:
            stream = await asyncio.to_thread(
                self.engine.stream_reply, messages, request.get("params"), request.get("system"))
        except EngineError as exc:
            await finish_reply(message_id, content=prefix, finish_reason=Message.FinishReason.ERROR,
                               error_detail=str(exc), **self.provenance)
            return
        self.replies[message_id] = (request, stream)
        pieces = stream.events_on(asyncio.get_running_loop())  # fed by the engine's thread, none of ours
        if await live.cancel_requested():  # a stop that came while the prompt was built
            stream.cancel()
        if stream.queue_position:
            await self._tell_queued(request, stream.queue_position)

        text, pending, first_token_at, failure = [prefix] if prefix else [], [], None, None
        flush_at = 0.0
        while True:
            timeout = max(0.0, flush_at - time.monotonic()) if pending else stream.read_timeout
            try:
                item = await asyncio.wait_for(pieces.get(), timeout)
            except TimeoutError:
                item = None
                if not pending:  # nothing for read_timeout: the engine is stuck on this reply
                    stream.cancel()
                    item = EngineError(f"generation produced nothing for {stream.read_timeout:g} s")
            if isinstance(item, Finished):
                item = _END
            if isinstance(item, BaseException):  # the engine failed this reply: keep what it said
                failure, item = item, _END
            if isinstance(item, str):
                if first_token_at is None:
                    first_token_at = time.monotonic()
                if not pending:
                    flush_at = time.monotonic() + settings.CHAT_TOKEN_FLUSH_INTERVAL
                pending.append(item)
            if pending and (item is None or item is _END or time.monotonic() >= flush_at):
                await self._send_piece(request, "".join(pending), sum(map(len, text)))
                text.extend(pending)
                pending.clear()
            if item is _END:
                break
        ended = time.monotonic()
        if message_id in self.lost:  # another worker serves it now: its ending is that worker's to store
            return
        if failure is not None:
            log.error("reply %s failed: %s", message_id, failure, extra={"turn": request.get("turn"),
                                                                        "reply": message_id, "worker": self.id})
            self.finished[Message.FinishReason.ERROR] += 1
            await finish_reply(message_id, content="".join(text), finish_reason=Message.FinishReason.ERROR,
                               error_detail=f"{failure}; the text so far is kept" if text else str(failure),
                               prompt_tokens=stream.prompt_tokens, completion_tokens=stream.completion_tokens,
                               cached_tokens=stream.cached_tokens, params=_used_params(stream, request),
                               **self.provenance)
            return
        self.finished[stream.finish_reason] += 1
        self.tokens += stream.completion_tokens
        log.info("turn finished reply=%s worker=%s finish_reason=%s tokens=%s", message_id, self.id,
                 stream.finish_reason, stream.completion_tokens, extra={
            "turn": request.get("turn"), "reply": message_id, "worker": self.id, "finish_reason": stream.finish_reason,
            "prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
            "cached_tokens": stream.cached_tokens, "ttft_s": round(first_token_at - started, 3) if first_token_at else None})
        if self.keeps_prefixes:  # its prompt and reply stay in this engine's cache: later turns come here
            await remember_warm(request["conversation"], self.id)
        logprobs_of = getattr(self.engine, "logprobs_of", None)  # an upstream engine gives none
        await finish_reply(
            message_id,
            logprobs=logprobs_of(stream, "".join(text[1:] if prefix else text)) if logprobs_of else None,
            content="".join(text),
            finish_reason=stream.finish_reason,
            prompt_tokens=stream.prompt_tokens,
            completion_tokens=stream.completion_tokens,
            cached_tokens=stream.cached_tokens,  # prompt tokens the engine reused, not read
            time_to_first_token_ms=(first_token_at - started) * 1000 if first_token_at else None,
            generation_ms=(ended - started) * 1000,
            params=_used_params(stream, request),
            **self.provenance,
        )

    async def _send_piece(self, request, text, offset):
        if request["message"] in self.lost:
            return
        self.streaming.add(request["message"])
        # After a Redis restart each pooled connection fails once ("closed by server") before it is
        # replaced: such a failure must not end a reply that is streaming fine. Each call is retried
        # on its own, so a piece is never appended twice.
        await retrying(lambda: LiveReply(request["message"]).append(text, settings.CHAT_STALL_TIMEOUT))
        await retrying(lambda: self.layer.group_send(
            user_group(request["owner"]),
            {"type": "chat.token", "conversation": request["conversation"],
             "message": request["message"], "text": text, "offset": offset},
        ))


HOUSEKEEPING_INTERVAL = 3600


@database_sync_to_async
def clear_expired_sessions():
    from django.contrib.sessions.models import Session

    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    if deleted:
        log.info("deleted %s expired sessions", deleted)


def _used_params(stream, request):
    """The settings a reply was generated with: the turn's, the model's defaults for the rest."""
    return {**stream.params.as_dict(), "system": request.get("system")}


def delete_expired_api_conversations(now=None, batch=500):
    """Delete the conversations stored by API-key calls whose last turn is older than
    CHAT_API_RETENTION_DAYS (never one with a reply still generating; the page's are never deleted
    here), a batch per transaction so that the database's writers are not held up long. Returns how
    many were deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CHAT_API_RETENTION_DAYS)
    expired = (Conversation.objects.filter(api_key__isnull=False, updated__lt=cutoff)
               .exclude(pk__in=Message.objects.generating().values("conversation_id")))
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(expired.values_list("pk", flat=True)[:batch])
            if not ids:
                break
            deleted += Conversation.objects.filter(pk__in=ids).delete()[1].get(Conversation._meta.label, 0)
    if deleted:
        log.info("deleted %s API conversations older than %s days", deleted, settings.CHAT_API_RETENTION_DAYS)
    return deleted


async def _streamed_text(message_id):
    try:
        return await LiveReply(message_id).text()
    except RedisError:
        return ""


async def _forever(step):
    """Keep a worker loop alive through Redis outages (and any other surprise): log, wait, restart it.
    A loop that died silently would leave a worker that announces itself but takes nothing."""
    while True:
        try:
            await step()
        except (RedisError, OSError) as exc:
            log.warning("Redis unavailable in %s (%s); retrying in 1 s", step.__name__, type(exc).__name__)
        except Exception:
            log.exception("%s failed; restarting it in 1 s", step.__name__)
        await asyncio.sleep(1)
