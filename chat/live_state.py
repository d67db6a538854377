"""The one place that talks to Redis directly (the channel layer aside).

- ConversationHistory: the hot context of each conversation, namespaced per owner, trimmed,
  rebuilt from the database whenever Redis has lost it. It holds what was typed; a message's
  attached files (up to CHAT_MAX_ATTACHMENT_CHARS each) stay in the database only, marked
  `"files": true` here, and are read from there when the worker builds the prompt.
- LiveReply: the state of a reply being generated: partial text (so a reloaded page can show
  it), a liveness key whose expiry means "the worker is gone", a cancel flag, and which worker
  serves it (so that a request claimed from a worker thought dead is never served twice).
- Sliding windows (rate limits; an API key's tokens per minute).
- Worker heartbeats (each names the model it serves), read by /healthz, /status, /v1/models and
  before handing out a turn.
"""
import asyncio
import json
import time
import uuid
import weakref

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings
from redis.exceptions import RedisError

_clients = weakref.WeakKeyDictionary()
PARTIAL_TTL = 24 * 3600


def redis_client():
    """A client bound to the running event loop (redis.asyncio pools cannot cross loops)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True,
                                                          **settings.REDIS_OPTIONS)
    return client


async def retrying(call, attempts=3):
    """Await `call()`, again on a Redis connection error: after a Redis restart every pooled
    connection fails once ("closed by server") before it is replaced."""
    for attempt in range(attempts):
        try:
            return await call()
        except (RedisError, OSError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))


class ConversationHistory:
    def __init__(self, owner_key, conversation_id):
        self.key = f"chat:{owner_key}:conv:{conversation_id}:history"
        self.conversation_id = conversation_id

    async def messages(self):
        """[{id, role, content, files?}] of the active messages, oldest first (content: the typed text)."""
        r = redis_client()
        raw = await r.lrange(self.key, 0, -1)
        if raw:
            return [json.loads(item) for item in raw]
        return await self.rebuild()

    async def prompt_messages(self, until=None):
        """[{role, content}] as the model reads them: each message with its files in front (chat.attachments);
        with `until`, the messages up to that one (a reply's parent: what came after is not its prompt)."""
        messages = await self.messages()
        ends = [i for i, m in enumerate(messages) if m["id"] == until]
        if ends:
            messages = messages[:ends[-1] + 1]
        with_files = [m["id"] for m in messages if m.get("files")]
        files = await _load_attachments(with_files) if with_files else {}
        return [{"role": m["role"], "content": _prompt_content(m["content"], files.get(m["id"]))} for m in messages]

    async def rebuild(self):
        rows = await _load_active_messages(self.conversation_id, settings.CHAT_HISTORY_MAX_MESSAGES)
        r = redis_client()
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            if rows:
                pipe.rpush(self.key, *[json.dumps(row) for row in rows])
                pipe.expire(self.key, settings.CHAT_HISTORY_TTL)
            await pipe.execute()
        return rows

    async def append(self, message_id, role, content, files=False):
        """Add a message (its typed text; `files`: it has attachments, which stay in the database)."""
        r = redis_client()
        if await r.exists(self.key):
            entry = {"id": message_id, "role": role, "content": content, **({"files": True} if files else {})}
            async with r.pipeline(transaction=True) as pipe:
                pipe.rpush(self.key, json.dumps(entry))
                pipe.ltrim(self.key, -settings.CHAT_HISTORY_MAX_MESSAGES, -1)
                pipe.expire(self.key, settings.CHAT_HISTORY_TTL)  # idle conversations leave Redis
                await pipe.execute()
        else:
            await self.rebuild()

    async def invalidate(self):
        await redis_client().delete(self.key)


@database_sync_to_async
def _load_active_messages(conversation_id, limit):
    from .models import Message

    rows = (
        Message.objects.filter(conversation_id=conversation_id, superseded=False)
        .exclude(role=Message.Role.ASSISTANT, finish_reason=Message.FinishReason.GENERATING)  # still generating
        # as chat.lifecycle.finish_reply leaves them out of the hot history: failed with nothing said
        .exclude(role=Message.Role.ASSISTANT, finish_reason=Message.FinishReason.ERROR, content="")
        .order_by("-id")
        .values("id", "role", "content", "attachments")[:limit]
    )
    return [{"id": row["id"], "role": row["role"], "content": row["content"],
             **({"files": True} if row["attachments"] else {})} for row in reversed(list(rows))]


@database_sync_to_async
def _load_attachments(message_ids):
    """{message id: [{name, content}]} of these messages' files."""
    from .models import Message

    return dict(Message.objects.filter(pk__in=message_ids).values_list("id", "attachments"))


def _prompt_content(content, attachments):
    from .attachments import prompt_content  # chat.attachments imports chat.turns, which imports this module

    return prompt_content(content, attachments)


class LiveReply:
    def __init__(self, message_id):
        prefix = f"chat:reply:{message_id}"
        self.alive_key, self.text_key, self.cancel_key = f"{prefix}:alive", f"{prefix}:text", f"{prefix}:cancel"
        self.server_key = f"{prefix}:server"  # the worker serving it: one at a time, whatever the queue says

    async def keep_alive(self, seconds):
        await redis_client().set(self.alive_key, "1", ex=max(1, int(seconds + 0.999)))

    async def is_alive(self):
        return bool(await redis_client().exists(self.alive_key))

    async def append(self, text, stall_timeout):
        async with redis_client().pipeline(transaction=False) as pipe:
            pipe.append(self.text_key, text)
            pipe.expire(self.text_key, PARTIAL_TTL)
            pipe.set(self.alive_key, "1", ex=max(1, int(stall_timeout + 0.999)))
            await pipe.execute()

    async def start_from(self, text, seconds):
        """A continued reply: its text so far, then alive for `seconds` until a worker reports."""
        async with redis_client().pipeline(transaction=True) as pipe:
            pipe.set(self.text_key, text, ex=PARTIAL_TTL)
            pipe.set(self.alive_key, "1", ex=max(1, int(seconds + 0.999)))
            await pipe.execute()

    async def text(self):
        return await redis_client().get(self.text_key) or ""

    async def end(self):
        """The generation is over: its text, liveness and any stop of it go (a stop belongs to one
        generation; the reply's next one, a Continue, starts unstopped)."""
        await redis_client().delete(self.alive_key, self.text_key, self.cancel_key)

    async def take_serving(self, worker_id, entry_id, seconds):
        """Hold this reply for `worker_id` serving request `entry_id`, for `seconds` (again: prolong it).
        False when another worker holds it for the same request: that one serves it, and this one must
        leave the reply alone. A hold for an earlier request of the reply (a continue reuses the reply)
        is a leftover and gives way."""
        return bool(await redis_client().eval(_TAKE_IF_FREE_OR_MINE, 1, self.server_key, f"{entry_id} {worker_id}",
                                              f"{entry_id} ", max(1, int(seconds + 0.999))))

    async def release_serving(self, worker_id, entry_id):
        await redis_client().eval(_DELETE_IF_MINE, 1, self.server_key, f"{entry_id} {worker_id}")

    async def request_cancel(self):
        await redis_client().set(self.cancel_key, "1", ex=3600)

    async def clear_cancel(self):
        await redis_client().delete(self.cancel_key)

    async def cancel_requested(self):
        return bool(await redis_client().exists(self.cancel_key))


_TAKE_IF_FREE_OR_MINE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and string.sub(holder, 1, #ARGV[2]) == ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""
_DELETE_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


async def take_window_slot(key, limit, window, member=None):
    """Count one event against a sliding window of `window` seconds at `key`. Returns (member, 0)
    when allowed (`member` gives the slot back with release_window_slot), else (None, seconds to wait).
    A repeated `member` (a guest already seen) takes no second slot."""
    r, now = redis_client(), time.time()
    member = member or f"{now:.6f}-{uuid.uuid4().hex[:6]}"
    async with r.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, 0, now - window)
        pipe.zadd(key, {member: now}, nx=True)
        pipe.zcard(key)
        pipe.expire(key, int(window) + 1)
        _, added, count, _ = await pipe.execute()
    if not added or count <= limit:
        return member, 0
    await r.zrem(key, member)
    oldest = await r.zrange(key, 0, 0, withscores=True)
    return None, max(1, int((oldest[0][1] if oldest else now) + window - now + 0.999))


async def window_wait(key, limit, window):
    """Seconds until take_window_slot at `key` would be allowed (0: now); takes nothing."""
    r, now = redis_client(), time.time()
    async with r.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, 0, now - window)
        pipe.zrange(key, 0, -1, withscores=True)
        _, members = await pipe.execute()
    if len(members) < limit:
        return 0
    return max(1, int(members[len(members) - limit][1] + window - now + 0.999))


async def release_window_slot(key, member):
    await redis_client().zrem(key, member)


async def window_entries(key, window):
    """The members of a sliding window at `key` (take_window_slot's, add_to_window's) with the time
    each was added, oldest first; those older than `window` seconds are dropped."""
    r = redis_client()
    async with r.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, 0, time.time() - window)
        pipe.zrange(key, 0, -1, withscores=True)
        _, entries = await pipe.execute()
    return entries


async def add_to_window(key, amount, window):
    """Count `amount` (tokens, say) against a sliding window at `key`; window_entries reads it back
    as members "<amount>:<unique>"."""
    r, now = redis_client(), time.time()
    async with r.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {f"{amount}:{uuid.uuid4().hex[:8]}": now})
        pipe.expire(key, int(window) + 1)
        await pipe.execute()


WORKER_KEY_PREFIX = "chat:worker:"
WORKER_INDEX = "chat:workers"  # worker id -> when its announcement expires (so nobody SCANs the keyspace)


async def announce_worker(worker_id, info, ttl):
    ttl = max(1, int(ttl + 0.999))
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.set(WORKER_KEY_PREFIX + worker_id, json.dumps(info), ex=ttl)
        pipe.zadd(WORKER_INDEX, {worker_id: time.time() + ttl})
        await pipe.execute()


async def worker_info(worker_id):
    """The worker's last heartbeat (chat.worker.InferenceWorker.info), or None once it lapsed."""
    value = await redis_client().get(WORKER_KEY_PREFIX + worker_id)
    return json.loads(value) if value else None


# --- which worker's prompt cache holds a conversation (cache-aware routing, chat.worker) ---------
WARM_KEY_PREFIX = "chat:warm:"  # conversation id -> the worker that ended its last reply
WARM_TTL = 3600  # seconds; a hint only: a worker that evicted it meanwhile reads the prompt again


async def remember_warm(conversation_id, worker_id):
    await redis_client().set(f"{WARM_KEY_PREFIX}{conversation_id}", worker_id, ex=WARM_TTL)


async def warm_worker(conversation_id):
    return await redis_client().get(f"{WARM_KEY_PREFIX}{conversation_id}")


async def worker_is_alive(worker_id):
    return bool(await redis_client().exists(WORKER_KEY_PREFIX + worker_id))


async def withdraw_worker(worker_id):
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.delete(WORKER_KEY_PREFIX + worker_id)
        pipe.zrem(WORKER_INDEX, worker_id)
        await pipe.execute()


async def ready_workers(model=None):
    """The live workers that can generate now (not restarting their engine, upstream answering);
    with `model`, only those serving it."""
    return [worker for worker in await live_workers()
            if worker.get("ready", True) and (model is None or worker.get("model") == model)]


def served_models(workers):
    """The names of the models these workers serve, sorted: the first is the default model (of a new
    conversation that names none)."""
    return sorted({worker["model"] for worker in workers if worker.get("model")})


async def live_workers():
    r = redis_client()
    await r.zremrangebyscore(WORKER_INDEX, 0, time.time())
    ids = await r.zrange(WORKER_INDEX, 0, -1)
    values = await r.mget([WORKER_KEY_PREFIX + worker_id for worker_id in ids]) if ids else []
    return [json.loads(v) for v in values if v]


# --- open sockets per owner (CHAT_MAX_SOCKETS_PER_USER) ------------------------------------
# A sorted set of the owner's sockets, each scored with the time its claim lapses: a socket
# refreshes its claim while it lives, so one whose web process crashed drops out by itself.
SOCKET_CLAIM_TTL = 90  # seconds; sockets refresh every chat.consumers.REJOIN_INTERVAL (30 s)


def _sockets_key(owner_key):
    return f"chat:{owner_key}:sockets"


async def claim_socket(owner_key, socket_id, limit):
    """Count this socket among the owner's open ones; False (and not counted) when `limit` are open."""
    r, now, key = redis_client(), time.time(), _sockets_key(owner_key)
    async with r.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, 0, now)
        pipe.zadd(key, {socket_id: now + SOCKET_CLAIM_TTL})
        pipe.zcard(key)
        pipe.expire(key, SOCKET_CLAIM_TTL)
        _, _, count, _ = await pipe.execute()
    if count <= limit:
        return True
    await r.zrem(key, socket_id)
    return False


async def refresh_socket(owner_key, socket_id):
    r, key = redis_client(), _sockets_key(owner_key)
    async with r.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {socket_id: time.time() + SOCKET_CLAIM_TTL}, xx=True)
        pipe.expire(key, SOCKET_CLAIM_TTL)
        await pipe.execute()


async def release_socket(owner_key, socket_id):
    await redis_client().zrem(_sockets_key(owner_key), socket_id)
