"""ChatConsumer: the WebSocket side of the protocol in docs/protocol.md (version 1).

It authorises and stores turns, hands generation to the inference workers through the shared
request queue (chat.lifecycle), and relays the workers' events, which arrive on the user's
channel-layer group, to every socket of the user. Nothing here blocks the
event loop: ORM work goes through database_sync_to_async, and torch is never imported.
"""
import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from inference.sampling import InvalidParameters

from . import admission, attachments, metrics, presets, search, turns
from .lifecycle import NO_WORKER, dispatch, request_stop, stop_before_removal, stored_reply, user_group, visitor_group
from .frame_bucket import FrameBucket
from .live_state import ConversationHistory, LiveReply, claim_socket, refresh_socket, release_socket, take_window_slot
from .models import MAX_ID, Owner, stored_guest
from .turns import ProtocolError
from .versions import switch_to, versions_of

log = logging.getLogger(__name__)
JOIN_TIMEOUT = 5.0
REJOIN_INTERVAL = 30.0  # seconds between re-joining the user's group (membership survives a Redis restart)
MAX_TITLE_CHARS = 200
MAX_MODEL_CHARS = 200  # Conversation.model_name
TOO_MANY_SOCKETS_CODE = 4409  # close code: over CHAT_MAX_SOCKETS_PER_USER (the page retries with backoff)
FLOOD_CODE = 4429  # close code: CHAT_SOCKET_FLOOD_FRAMES frames in a row over the frame rate


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        # A visitor without a guest identity yet (a page view makes none) is `owner` None until its
        # first act that needs one (VISITOR_MINTS): reads are answered empty, without an identity.
        # Until then it listens on its session's visitor group, where another tab's first act (or an
        # import) says which guest the session became.
        self.owner = self.group = self.rejoin = self.visitors = None
        self.closed = False
        self.timings = {}  # reply id -> metrics.TurnTiming, for the turns this socket started
        self.bucket = FrameBucket(settings.CHAT_SOCKET_FRAMES_PER_SECOND, settings.CHAT_SOCKET_FRAME_BURST)
        await self.accept()
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            await self._become(Owner(user_id=user.pk))
        elif not settings.CHAT_ALLOW_GUESTS:
            await self._refuse({"type": "error", "code": "auth_required", "detail": "sign in to chat"}, 4401)
        else:
            key = await _db(admission.existing_guest)(self.scope["session"])
            if key is not None:
                await self._become(Owner(guest_key=key))
            elif self.scope["session"].session_key:
                await self._listen_as_visitor(visitor_group(self.scope["session"].session_key))

    async def _listen_as_visitor(self, group):
        try:
            await asyncio.wait_for(self.channel_layer.group_add(group, self.channel_name), JOIN_TIMEOUT)
            self.visitors = group
        except (TimeoutError, RedisError):  # the first act will say what is wrong with Redis
            log.warning("could not join the visitor group %s", group)

    async def _leave_visitors(self):
        group, self.visitors = self.visitors, None
        if group:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except RedisError:
                log.warning("could not leave the visitor group %s", group)

    async def _become(self, owner):
        """Take the socket's place among the owner's (CHAT_MAX_SOCKETS_PER_USER) and join their group;
        False when the socket was refused and closed."""
        try:
            claimed = await asyncio.wait_for(
                claim_socket(owner.key, self.channel_name, settings.CHAT_MAX_SOCKETS_PER_USER), JOIN_TIMEOUT)
            if claimed:
                await asyncio.wait_for(self.channel_layer.group_add(user_group(owner.key), self.channel_name),
                                       JOIN_TIMEOUT)
        except (TimeoutError, RedisError):  # Redis just restarted, or is down: the page reconnects with backoff
            await self._refuse({"type": "error", "code": "unavailable",
                                "detail": "the service's Redis is unavailable; reconnecting"}, 4503)
            return False
        if not claimed:
            await self._refuse({"type": "error", "code": "too_many_sockets", "detail": (
                f"you have {settings.CHAT_MAX_SOCKETS_PER_USER} chat tabs or connections open, the most allowed "
                "(CHAT_MAX_SOCKETS_PER_USER); close some, and this one connects again by itself")}, TOO_MANY_SOCKETS_CODE)
            return False
        self.owner, self.group = owner, user_group(owner.key)
        self.rejoin = asyncio.create_task(self._rejoin_group())
        await self._leave_visitors()
        return True

    async def _refuse(self, frame, code):
        self.closed = True
        await self.send_json(frame)
        await self.close(code=code)

    async def disconnect(self, code):
        for timing in self.timings.values():
            timing.close()
        if self.rejoin:
            self.rejoin.cancel()
        await self._leave_visitors()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            try:
                await release_socket(self.owner.key, self.channel_name)
            except RedisError:  # its claim lapses by itself (live_state.SOCKET_CLAIM_TTL)
                log.warning("could not release the socket slot of %s", self.owner.key)

    # --- frames from the client --------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if self.closed:  # refused and closed (connect, the socket cap, a flood)
            return
        if await self._over_frame_rate():
            return
        try:
            if text_data is None:
                raise ProtocolError("bad_frame", "binary frames are not supported; send JSON text")
            if len(text_data.encode()) > settings.CHAT_MAX_FRAME_BYTES:
                raise ProtocolError("frame_too_large", f"the frame is over the {settings.CHAT_MAX_FRAME_BYTES} byte "
                                    "limit (CHAT_MAX_FRAME_BYTES)")
            try:
                frame = json.loads(text_data)
            except (ValueError, RecursionError):
                raise ProtocolError("bad_json", "the frame is not valid JSON (or nests too deeply)") from None
            if not isinstance(frame, dict):
                raise ProtocolError("bad_frame", "a frame must be a JSON object with a 'type'")
            handler = self.HANDLERS.get(frame.get("type"))
            if handler is None:
                raise ProtocolError("unknown_type", f"unknown frame type {frame.get('type')!r:.60}")
            if self.owner is None and not await self._become_stored_guest():
                return
            if self.owner is None:
                if frame["type"] in VISITOR_ANSWERS:
                    handler = VISITOR_ANSWERS[frame["type"]]
                elif frame["type"] in ("edit", "regenerate", "continue"):  # turns: they would take rate slots
                    _conversation_field(frame)
                    if frame["type"] == "edit":
                        _id_field(frame, "message", _conversation_or_none(frame))
                    raise ProtocolError("not_found", "no such conversation", _conversation_or_none(frame))
                elif frame["type"] not in VISITOR_MINTS:  # checked as for anyone, for an owner of nothing
                    handler = _as_nobody(handler)
                elif not await self._become_guest():
                    return
            try:  # whatever a dependency does, the client gets an answer in bounded time
                await asyncio.wait_for(handler(self, frame), settings.CHAT_FRAME_TIMEOUT)
            except TimeoutError:
                raise ProtocolError("timeout", f"the server could not answer within {settings.CHAT_FRAME_TIMEOUT:g} s "
                                    "(CHAT_FRAME_TIMEOUT); try again", frame.get("conversation")) from None
        except ProtocolError as exc:
            metrics.ERRORS.labels(exc.code).inc()
            await self.send_json(exc.frame())
        except DatabaseError:
            log.exception("database unavailable for %s", self._who())
            await self.send_json({"type": "error", "code": "database_unavailable",
                                  "detail": "the database is busy or unavailable and nothing was changed; try again"})
        except RedisError:
            log.exception("redis unavailable for %s", self._who())
            await self.send_json({"type": "error", "code": "unavailable",
                                  "detail": "the service's Redis is unavailable; try again in a moment"})
        except Exception:
            log.exception("frame failed for %s", self._who())
            await self.send_json({"type": "error", "code": "internal", "detail": "the server failed; try again"})

    async def _over_frame_rate(self):
        """The per-socket token bucket: True when this frame was refused (`rate_limited`), or the
        socket closed for flooding."""
        wait = self.bucket.take()
        if not wait:
            return False
        metrics.ERRORS.labels("rate_limited").inc()
        if self.bucket.refused >= settings.CHAT_SOCKET_FLOOD_FRAMES:
            await self._refuse({"type": "error", "code": "rate_limited", "retry_after": wait, "detail": (
                f"{settings.CHAT_SOCKET_FLOOD_FRAMES} frames over the limit of "
                f"{settings.CHAT_SOCKET_FRAMES_PER_SECOND:g} a second; the connection is closed")}, FLOOD_CODE)
        else:
            await self.send_json({"type": "error", "code": "rate_limited", "retry_after": wait, "detail": (
                f"at most {settings.CHAT_SOCKET_FRAMES_PER_SECOND:g} frames a second on one connection "
                f"(CHAT_SOCKET_FRAMES_PER_SECOND); this one was ignored, try again in {wait} s")})
        return True

    async def _become_stored_guest(self):
        """A visitor's socket speaks for the guest its session holds by now, if any (another tab or an
        import made it, and the word of it has not come, or was lost); False when refused and closed."""
        session_key = self.scope["session"].session_key
        key = session_key and await _db(stored_guest)(session_key)
        return not key or await self._become(Owner(guest_key=key))

    async def _become_guest(self):
        """A visitor's first act: its guest identity, within the per-address limit (too_many_guests);
        the session's other visitor sockets are told."""
        key = await admission.admit_guest(self.scope["session"], self._address())
        group = self.visitors
        if not await self._become(Owner(guest_key=key)):
            return False
        if group:
            await self.channel_layer.group_send(group, {"type": "chat.identified", "guest": key})
        return True

    async def chat_identified(self, event):
        """Another tab of this browser (or an import) made its session's guest: speak for it too, and
        ask the page to read its list again (the protocol's `changed`)."""
        if self.owner is None and not self.closed and await self._become(Owner(guest_key=event["guest"])):
            await self.send_json({"type": "changed"})

    def _who(self):
        return self.owner.key if self.owner else "a visitor"

    async def on_send(self, frame):
        conversation_id = _conversation_field(frame, required=False)
        content = _content_field(frame, conversation_id)
        model = _model_field(frame, conversation_id)
        params = _params_field(frame, conversation_id)
        files = attachments.validated(frame.get("attachments"), conversation_id)
        chosen = None if frame.get("settings") is None else presets.clean_settings(frame["settings"], conversation_id)
        conversation, user_message, reply = await self._admit(
            conversation_id, turns.start_turn, conversation_id, content, params, files, chosen)
        await ConversationHistory(self.owner.key, conversation.pk).append(
            user_message.pk, "user", content, files=bool(files))  # the files stay in the database only
        await self.send_json({"type": "ack", "conversation": conversation.pk, "message": user_message.pk,
                              "reply": reply.pk})
        await self._announce_turn(conversation.pk, user_message, reply.pk)
        await self._dispatch(conversation.pk, reply, frame["type"], model)

    async def on_regenerate(self, frame):
        conversation_id = _conversation_field(frame)
        params = _params_field(frame, conversation_id) if "params" in frame else None
        conversation, answered, reply, replaced = await self._admit(
            conversation_id, turns.start_regeneration, conversation_id, params)
        await ConversationHistory(self.owner.key, conversation.pk).invalidate()
        await self.send_json({"type": "ack", "conversation": conversation.pk, "message": answered.pk,
                              "reply": reply.pk, "replaces": replaced})
        await self._announce_turn(conversation.pk, None, reply.pk)
        await self._dispatch(conversation.pk, reply, frame["type"])

    async def on_continue(self, frame):
        """Generate more of the last reply (cut by its length limit): its tokens go on from its text."""
        conversation_id = _conversation_field(frame)
        params = _params_field(frame, conversation_id) if "params" in frame else None
        conversation, answered, reply = await self._admit(
            conversation_id, turns.start_continuation, conversation_id, params)
        await ConversationHistory(self.owner.key, conversation.pk).invalidate()  # the reply is open again
        await LiveReply(reply.pk).start_from(reply.content, settings.CHAT_REQUEST_TIMEOUT)  # for history meanwhile
        await self.send_json({"type": "ack", "conversation": conversation.pk, "message": answered.pk,
                              "reply": reply.pk, "continues": reply.pk})
        await self._announce_turn(conversation.pk, None, reply.pk, continues=reply.pk)
        await self._dispatch(conversation.pk, reply, frame["type"])

    async def on_edit(self, frame):
        conversation_id = _conversation_field(frame)
        message_id = _id_field(frame, "message", conversation_id)
        content = _content_field(frame, conversation_id)
        params = _params_field(frame, conversation_id)
        files = attachments.validated(frame["attachments"], conversation_id) if "attachments" in frame else None
        conversation, user_message, reply = await self._admit(
            conversation_id, turns.start_edit, conversation_id, message_id, content, params, files)
        await ConversationHistory(self.owner.key, conversation.pk).invalidate()
        await self.send_json({"type": "ack", "conversation": conversation.pk, "message": user_message.pk,
                              "reply": reply.pk, "replaces": message_id})
        await self._announce_turn(conversation.pk, user_message, reply.pk, replaces=message_id)
        await self._dispatch(conversation.pk, reply, frame["type"])

    async def on_stop(self, frame):
        conversation_id = _conversation_field(frame)
        await _db(turns.get_owned)(self.owner, conversation_id)
        replies = await _db(turns.generating_replies)(self.owner, conversation_id)
        if not replies:
            raise ProtocolError("not_generating", "no reply is being generated in this conversation",
                                conversation_id)
        for reply_id in replies:
            await request_stop(reply_id)

    async def on_history(self, frame):
        conversation_id = _conversation_field(frame)
        before = _id_field(frame, "before", conversation_id, required=False)
        limit = frame.get("limit", settings.CHAT_HISTORY_PAGE_MESSAGES)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= settings.CHAT_HISTORY_PAGE_MESSAGES:
            raise ProtocolError("bad_field", f"'limit' must be an integer from 1 to {settings.CHAT_HISTORY_PAGE_MESSAGES} "
                                "(CHAT_HISTORY_PAGE_MESSAGES)", conversation_id)
        await admission.fail_abandoned_replies(self.owner, conversation_id)
        conversation, messages, more = await _db(turns.active_messages_page)(self.owner, conversation_id, before, limit)
        versions = await _db(versions_of)(conversation)
        frames = []
        for message in messages:
            item = message.as_frame()
            if message.pk in versions:
                item["versions"] = versions[message.pk]
            if message.generating:  # show what the worker has produced so far
                item["content"] = await LiveReply(message.pk).text()
                item["generating"] = True
            frames.append(item)
        history = {"type": "history", "conversation": conversation.pk, "title": str(conversation),
                   "model": conversation.model_name, "messages": frames}
        if conversation.settings is not None:
            history["settings"] = conversation.settings
        if before is not None:
            history["before"] = before
        if more:
            history["more"] = True
        await self.send_json(history)

    async def on_list(self, frame):
        items = await _db(turns.conversation_list)(self.owner)
        await self.send_json({"type": "conversations", "items": items})

    async def on_rename(self, frame):
        conversation_id = _conversation_field(frame)
        title = frame.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE_CHARS:
            raise ProtocolError("bad_field", f"'title' must be a non-empty string of at most "
                                f"{MAX_TITLE_CHARS} characters", conversation_id)
        await _db(turns.rename)(self.owner, conversation_id, title.strip())
        await self.channel_layer.group_send(self.group, {"type": "chat.changed"})

    async def on_delete(self, frame):
        """Delete a conversation; a reply generating in it is stopped first (chat.lifecycle)."""
        conversation_id = _conversation_field(frame)
        await _db(turns.get_owned)(self.owner, conversation_id)
        await stop_before_removal(await _db(turns.generating_replies)(self.owner, conversation_id))
        await _db(turns.delete)(self.owner, conversation_id)
        await ConversationHistory(self.owner.key, conversation_id).invalidate()
        await self.channel_layer.group_send(self.group, {"type": "chat.changed", "deleted": conversation_id})

    async def on_switch(self, frame):
        """Show another version of a message (and the branch below it) in every tab."""
        conversation_id = _conversation_field(frame)
        message_id = _id_field(frame, "message", conversation_id)
        await _db(switch_to)(self.owner, conversation_id, message_id)
        await ConversationHistory(self.owner.key, conversation_id).invalidate()
        await self.channel_layer.group_send(self.group, {"type": "chat.switched", "conversation": conversation_id,
                                                         "message": message_id})

    async def on_rate(self, frame):
        message_id = _id_field(frame, "message")
        rating, comment = frame.get("rating"), frame.get("comment")  # no comment: the stored one stays
        if rating not in (1, -1, None) or isinstance(rating, bool):
            raise ProtocolError("bad_field", "'rating' must be 1, -1 or null")
        if comment is not None and (not isinstance(comment, str) or len(comment) > settings.CHAT_MAX_MESSAGE_CHARS):
            raise ProtocolError("bad_field", "'comment' must be a string within the message size limit")
        conversation_id, comment = await _db(turns.rate)(self.owner, message_id, rating, comment)
        await self.channel_layer.group_send(self.group, {
            "type": "chat.rated", "conversation": conversation_id, "message": message_id,
            "rating": rating, "comment": comment,
        })

    async def on_presets(self, frame):
        await self.send_json({"type": "presets", "items": await _db(presets.list_presets)(self.owner)})

    async def on_preset_save(self, frame):
        saved = await _db(presets.save_preset)(self.owner, frame.get("preset"))
        await self._presets_changed(saved=saved["id"])

    async def on_preset_delete(self, frame):
        await _db(presets.delete_preset)(self.owner, frame.get("preset"))
        await self._presets_changed()

    async def _presets_changed(self, **fields):
        items = await _db(presets.list_presets)(self.owner)
        await self.channel_layer.group_send(self.group, {"type": "chat.presets", "items": items, **fields})

    async def on_configure(self, frame):
        conversation_id = _conversation_field(frame)
        chosen = presets.clean_settings(frame.get("settings"), conversation_id)
        await _db(presets.set_conversation_settings)(self.owner, conversation_id, chosen)
        await self.channel_layer.group_send(self.group, {"type": "chat.configured", "conversation": conversation_id,
                                                         "settings": chosen})

    async def on_search(self, frame):
        query = _query_field(frame)
        _, retry_after = await take_window_slot(f"chat:{self.owner.key}:searches", settings.CHAT_SEARCHES_PER_MINUTE, 60)
        if retry_after:
            raise ProtocolError("rate_limited", f"at most {settings.CHAT_SEARCHES_PER_MINUTE} searches per minute "
                                f"(CHAT_SEARCHES_PER_MINUTE); try again in {retry_after} s", retry_after=retry_after)
        # In a thread of its own: a slow search must not hold up the socket frames of everyone else,
        # which share the web process's one database thread (thread_sensitive).
        items = await database_sync_to_async(search.search, thread_sensitive=False)(self.owner, query)
        await self.send_json({"type": "search_results", "query": query, "items": items})

    HANDLERS = {
        "send": on_send, "regenerate": on_regenerate, "edit": on_edit, "stop": on_stop,
        "history": on_history, "list": on_list, "rename": on_rename, "delete": on_delete,
        "rate": on_rate, "presets": on_presets, "preset_save": on_preset_save,
        "preset_delete": on_preset_delete, "configure": on_configure, "switch": on_switch,
        "continue": on_continue,
        "search": on_search,
    }

    # A visitor with no guest identity yet: what it may read it reads empty, and no identity is made.
    async def visitor_list(self, frame):
        await self.send_json({"type": "conversations", "items": []})

    async def visitor_presets(self, frame):
        await self.send_json({"type": "presets", "items": presets.builtin_items()})

    async def visitor_search(self, frame):
        await self.send_json({"type": "search_results", "query": _query_field(frame), "items": []})

    # --- events from the worker and other sockets (channel layer) ----------------------
    async def chat_token(self, event):
        if event["message"] in self.timings:
            self.timings[event["message"]].token()
        await self._relay(event)

    async def chat_done(self, event):
        timing = self.timings.pop(event["message"], None)
        if timing:  # counted once, by the socket that started the turn
            timing.done(event)
        await self._relay(event)

    async def _relay(self, event):
        await self.send_json({**event, "type": event["type"].removeprefix("chat.")})

    # The other events go to the page as they are, as the frame of the same name.
    chat_queued = chat_turn = chat_changed = chat_rated = chat_presets = chat_configured = chat_switched = _relay

    # --- helpers ----------------------------------------------------------------------
    async def _admit(self, conversation_id, start, *args):
        return await admission.admit_turn(self.owner, self._address(), conversation_id, start, *args)

    def _address(self):
        return admission.socket_client_address(self.scope)  # the same rule as HTTP's

    async def _announce_turn(self, conversation_id, user_message, reply_id, replaces=None, continues=None):
        event = {"type": "chat.turn", "conversation": conversation_id, "reply": reply_id}
        if user_message is not None:
            event["user"] = {"id": user_message.pk, "role": "user", "content": user_message.content}
            if user_message.attachments:
                event["user"]["attachments"] = attachments.summary(user_message.attachments)
        if replaces is not None:
            event["replaces"] = replaces
        if continues is not None:
            event["continues"] = continues
        await self.channel_layer.group_send(self.group, event)

    async def _dispatch(self, conversation_id, reply, kind, model=None):
        """Hand the reply to the workers serving the conversation's model (chat.lifecycle watches it from
        there), or end it at once with no_worker when none does (`model`: a new conversation's choice)."""
        metrics.TURNS.labels(kind).inc()
        if await dispatch(self.owner.key, conversation_id, reply, model) is None:
            detail = (await stored_reply(reply.pk)).error_detail or NO_WORKER  # names the model nobody serves
            await self.send_json({"type": "error", "code": "no_worker", "detail": detail,
                                  "conversation": conversation_id})
            return
        self.timings[reply.pk] = metrics.TurnTiming()

    async def _rejoin_group(self):
        """Every REJOIN_INTERVAL: re-join the user's group, unless the user was deactivated meanwhile."""
        from django.contrib.auth import get_user_model
        from django.db import DatabaseError

        active = get_user_model().objects.filter(pk=self.owner.user_id, is_active=True).exists
        while True:
            await asyncio.sleep(REJOIN_INTERVAL)
            try:
                if self.owner.user_id and not await _db(active)():  # deactivated (or deleted): it may not go on
                    await self.send_json({"type": "error", "code": "auth_required",
                                          "detail": "your account was deactivated; sign in again"})
                    await self.close(code=4401)
                    return
                await self.channel_layer.group_add(self.group, self.channel_name)
                await refresh_socket(self.owner.key, self.channel_name)
            except (RedisError, OSError, DatabaseError):
                log.warning("could not re-join the group of %s; trying again later", self.owner.key)


VISITOR_ANSWERS = {"list": ChatConsumer.visitor_list, "presets": ChatConsumer.visitor_presets,
                   "search": ChatConsumer.visitor_search}
VISITOR_MINTS = {"send", "preset_save"}  # a visitor's first act: it becomes a guest (chat.admission.admit_guest)


def _db(function):
    return database_sync_to_async(function)


NOBODY = Owner(guest_key="-")  # owns nothing: no guest key is "-" (they are uuid4 hex)


def _as_nobody(handler):
    """A visitor's frame about something of its own (it has nothing): the handler's checks, then not_found."""
    async def run(consumer, frame):
        consumer.owner = NOBODY
        try:
            await handler(consumer, frame)
        finally:
            consumer.owner = None
    return run


def _conversation_or_none(frame):
    value = frame.get("conversation")
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID else None


def _query_field(frame):
    query = frame.get("query")
    if not isinstance(query, str) or len(query) > search.MAX_QUERY_CHARS:
        raise ProtocolError("bad_field", f"'query' must be a string of at most {search.MAX_QUERY_CHARS} characters")
    return query


def _id_field(frame, name, conversation_id=None, required=True):
    value = frame.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ProtocolError("bad_field", f"'{name}' must be a positive integer id", conversation_id)
    return value


def _conversation_field(frame, required=True):
    return _id_field(frame, "conversation", required=required)


def _model_field(frame, conversation_id):
    """The model a new conversation asks for (None: the default); an existing one keeps its own."""
    model = frame.get("model")
    if model is None or conversation_id is not None:
        return None
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise ProtocolError("bad_field", f"'model' must be the name of a served model (at most {MAX_MODEL_CHARS} "
                            "characters)")
    return model


def _content_field(frame, conversation_id):
    content = frame.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ProtocolError("bad_field", "'content' must be a non-empty string", conversation_id)
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ProtocolError("too_large", f"the message has {len(content)} characters; the limit is "
                            f"{settings.CHAT_MAX_MESSAGE_CHARS}", conversation_id)
    return content


def _params_field(frame, conversation_id):
    """Validated sampling parameters plus the system prompt, as stored on the reply."""
    raw = frame.get("params")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProtocolError("bad_field", "'params' must be an object", conversation_id)
    raw = dict(raw)
    system = raw.pop("system", None)
    if system is not None and (not isinstance(system, str) or len(system) > settings.CHAT_MAX_MESSAGE_CHARS):
        raise ProtocolError("bad_field", "'params.system' must be a string within the message size limit",
                            conversation_id)
    try:
        return turns.reply_params(raw, system)
    except (InvalidParameters, TypeError) as exc:
        raise ProtocolError("bad_params", str(exc), conversation_id) from None
