"""Database work for starting turns, kept synchronous and transactional (chat.admission wraps it)."""
import hashlib
import re

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from inference.sampling import SamplingParams

from .api_limits import in_flight_refusal
from .models import Conversation, Message

TITLE_LENGTH = 60


class ProtocolError(Exception):
    """A refused frame: becomes an `error` frame with this code and detail."""

    def __init__(self, code, detail, conversation=None, **extra):
        super().__init__(detail)
        self.code, self.detail, self.conversation = code, detail, conversation
        self.extra = extra  # more fields for the frame, such as retry_after

    def frame(self):
        frame = {"type": "error", "code": self.code, "detail": self.detail, **self.extra}
        if self.conversation is not None:
            frame["conversation"] = self.conversation
        return frame


def reply_params(values, system=None):
    """The sampling parameters a turn set (and the configured reply length, unless it set one) plus
    the system prompt, as stored on a reply until it ends: the worker fills in the model's defaults
    for the rest and stores what was used (chat.worker). Raises InvalidParameters (or TypeError) for
    values out of bounds or unknown."""
    values = {"max_new_tokens": settings.CHAT_MAX_NEW_TOKENS, **values}
    checked = SamplingParams.from_dict(values, settings.CHAT_MAX_NEW_TOKENS_LIMIT).as_dict()
    params = {name: checked[name] for name in values}
    params["system"] = system if system is not None else settings.CHAT_DEFAULT_SYSTEM_PROMPT
    return params


def get_owned(owner, conversation_id):
    """The owner's conversation, or not_found (the same answer whether it is absent or someone else's)."""
    conversation = Conversation.objects.owned_by(owner).filter(pk=conversation_id).first()
    if conversation is None:
        raise ProtocolError("not_found", "no such conversation", conversation_id)
    return conversation


def take_owner_lock(owner):
    """Inside a transaction: wait for, then hold until it ends, the owner's lock, so that the owner's
    changes that check what is generating (starting a turn, switching versions) pass one at a time.
    SQLite's IMMEDIATE transactions hold the database's write lock already; PostgreSQL takes a
    per-owner advisory lock."""
    _serialize_turns_of(owner.key)


def refuse_if_busy(owner, conversation_id=None):
    """Inside a turn's transaction: `busy` if the owner has as many replies generating as allowed,
    or one in this conversation. Turns of one owner pass here one at a time (SQLite's IMMEDIATE
    transactions hold the write lock already; PostgreSQL takes a per-owner advisory lock), so two
    tabs cannot both start a reply."""
    take_owner_lock(owner)
    # An API key's calls are counted by the key's own limit (refuse_if_key_busy), not the person's.
    generating = generating_replies(owner, api_calls=False)
    in_conversation = conversation_id is not None and generating_replies(owner, conversation_id)
    if len(generating) >= settings.CHAT_MAX_TURNS_IN_FLIGHT or in_conversation:
        raise ProtocolError("busy", f"a reply is still being generated (at most {settings.CHAT_MAX_TURNS_IN_FLIGHT} "
                            "at a time per user, and one per conversation); wait for it or stop it first",
                            conversation_id)


def refuse_if_key_busy(key):
    """Inside an API call's transaction: KeyRateLimited if `key` has as many replies generating as it
    may (its max_in_flight), counted as refuse_if_busy counts (two calls cannot both take the last one)."""
    _serialize_turns_of(f"apikey{key.pk}")
    if Message.objects.generating().filter(conversation__api_key=key).count() >= key.limit_in_flight:
        raise in_flight_refusal(key)


def _serialize_turns_of(name):
    """Turns counted under `name` pass one at a time: SQLite's IMMEDIATE transactions hold the write
    lock already; PostgreSQL takes an advisory lock until the transaction ends."""
    if connection.vendor == "postgresql":
        lock_id = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])


def generating_replies(owner, conversation_id=None, api_calls=True):
    """Ids of the owner's replies still generating (in one conversation); without those of API-key calls
    when `api_calls` is False."""
    query = Message.objects.generating().filter(conversation__in=Conversation.objects.owned_by(owner))
    if conversation_id is not None:
        query = query.filter(conversation_id=conversation_id)
    if not api_calls:
        query = query.filter(conversation__api_key__isnull=True)
    return list(query.values_list("id", flat=True))


@transaction.atomic
def start_turn(owner, conversation_id, content, params, attachments=(), conversation_settings=None):
    """Store the user's message (with its attached files) and an empty reply to fill; create the
    conversation if needed. `conversation_settings`, when given, become the conversation's (chat.presets)."""
    refuse_if_busy(owner, conversation_id)
    if conversation_id is None:
        conversation, parent = _new_conversation(owner, content), None
    else:
        conversation = get_owned(owner, conversation_id)
        parent = conversation.active_messages().last()
    if conversation_settings is not None:
        conversation.settings = conversation_settings
        conversation.save(update_fields=["settings"])
    user_message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=content,
                                          parent=parent, attachments=list(attachments))
    reply = _new_reply(conversation, params, user_message)
    return conversation, user_message, reply


@transaction.atomic
def start_regeneration(owner, conversation_id, params):
    """Supersede the last reply and open a new one in its place. Returns (conversation, the user
    message the new reply answers, the new reply, the id of the reply it replaces)."""
    refuse_if_busy(owner, conversation_id)
    conversation = get_owned(owner, conversation_id)
    last = conversation.active_messages().last()
    if last is None or last.role != Message.Role.ASSISTANT:
        raise ProtocolError("nothing_to_regenerate", "the conversation has no reply to regenerate", conversation_id)
    last.superseded = True
    last.save(update_fields=["superseded"])
    answered = conversation.active_messages().last()
    return conversation, answered, _new_reply(conversation, params or last.params, answered), last.pk


@transaction.atomic
def start_edit(owner, conversation_id, message_id, content, params, attachments=None):
    """Replace a user message: it and every later message are superseded, kept as the earlier version
    (chat.versions switches back to it). Editing the first message retitles a conversation the user
    has not renamed."""
    refuse_if_busy(owner, conversation_id)
    conversation = get_owned(owner, conversation_id)
    edited = conversation.active_messages().filter(pk=message_id, role=Message.Role.USER).first()
    if edited is None:
        raise ProtocolError("not_found", "no such user message in this conversation", conversation_id)
    conversation.active_messages().filter(id__gte=edited.pk).update(superseded=True)
    user_message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=content,
                                          parent_id=edited.parent_id,  # files stay unless the edit sends others
                                          attachments=edited.attachments if attachments is None else attachments)
    if edited.parent_id is None and not conversation.title_edited:
        conversation.title = title_from(content)
        conversation.save(update_fields=["title"])
    return conversation, user_message, _new_reply(conversation, params, user_message)


CONTINUABLE = (Message.FinishReason.LENGTH, Message.FinishReason.CANCELLED)


@transaction.atomic
def start_continuation(owner, conversation_id, params):
    """Reopen the conversation's last reply, cut by its length limit (or stopped), to generate more of
    it: the same message goes on from its text (chat.worker continues it). Returns (conversation,
    the user message it answers, the reply)."""
    refuse_if_busy(owner, conversation_id)
    conversation = get_owned(owner, conversation_id)
    last = conversation.active_messages().last()
    if last is None or last.role != Message.Role.ASSISTANT or last.finish_reason not in CONTINUABLE or not last.content:
        raise ProtocolError("nothing_to_continue", "only a last reply cut by its length limit (or stopped) "
                            "can be continued", conversation_id)
    last.finish_reason = Message.FinishReason.GENERATING
    last.params = params or last.params
    last.save(update_fields=["finish_reason", "params"])
    conversation.updated = timezone.now()
    conversation.save(update_fields=["updated"])
    return conversation, last.parent or conversation.active_messages().filter(role=Message.Role.USER).last(), last


def _new_conversation(owner, first_message, api_key=None):
    """A new conversation of the owner's; one stored by an API key's call is the key's: those are kept
    CHAT_API_RETENTION_DAYS instead of counting against CHAT_MAX_CONVERSATIONS."""
    if api_key is None and (Conversation.objects.owned_by(owner).filter(api_key__isnull=True).count()
                            >= settings.CHAT_MAX_CONVERSATIONS):
        raise ProtocolError("too_many_conversations", f"you have {settings.CHAT_MAX_CONVERSATIONS} "
                            "conversations, the most allowed (CHAT_MAX_CONVERSATIONS); delete some first")
    return Conversation.objects.create(title=title_from(first_message), api_key=api_key, **owner.fields())


def _new_reply(conversation, params, parent, content=""):
    conversation.updated = timezone.now()
    conversation.save(update_fields=["updated"])
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content=content,
        finish_reason=Message.FinishReason.GENERATING, params=params, parent=parent,
    )


MARKUP = re.compile(r"```.*?(```|$)|[`*#>~\[\]]+", re.DOTALL)  # code fences and Markdown marks


def title_from(content):
    """A conversation's title from its first prompt: its first line of prose without Markdown, cut
    at a word boundary."""
    lines = [" ".join(line.split()) for line in MARKUP.sub(" ", content).splitlines()]
    line = next((line for line in lines if line), "") or " ".join(content.split())
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[: TITLE_LENGTH - 1]
    if " " in cut[TITLE_LENGTH // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:-") + "…"


def conversation_list(owner, limit=200):
    rows = Conversation.objects.owned_by(owner).order_by("-updated")[:limit]
    return [{"id": c.pk, "title": str(c), "updated": c.updated.isoformat(), "model": c.model_name} for c in rows]


def rename(owner, conversation_id, title):
    """The user's own title; the conversation keeps its place in the list (`updated` is its last turn)."""
    get_owned(owner, conversation_id)
    Conversation.objects.filter(pk=conversation_id).update(title=title, title_edited=True)


@transaction.atomic
def delete(owner, conversation_id):
    """Delete a conversation with nothing generating in it (the caller stopped its replies first,
    chat.lifecycle.stop_before_removal); `busy` if a turn started in it meanwhile."""
    conversation = get_owned(owner, conversation_id)
    if generating_replies(owner, conversation_id):
        raise ProtocolError("busy", "a reply started in this conversation meanwhile; stop it, then delete",
                            conversation_id)
    conversation.delete()


def active_messages(owner, conversation_id):
    conversation = get_owned(owner, conversation_id)
    return conversation, list(conversation.active_messages())


def active_messages_page(owner, conversation_id, before=None, limit=200):
    """(conversation, its last `limit` active messages older than message `before` (all when None),
    oldest first, whether older ones remain)."""
    conversation = get_owned(owner, conversation_id)
    rows = conversation.active_messages()
    if before is not None:
        rows = rows.filter(id__lt=before)
    page = list(rows.order_by("-id")[:limit + 1])
    return conversation, page[:limit][::-1], len(page) > limit


def rate(owner, message_id, rating, comment):
    """Store a user's rating (and comment, unless it is None) of one of their assistant replies;
    returns its conversation id and the comment now stored."""
    message = Message.objects.filter(
        pk=message_id, role=Message.Role.ASSISTANT, conversation__in=Conversation.objects.owned_by(owner)
    ).first()
    if message is None:
        raise ProtocolError("not_found", "no such reply")
    message.rating = rating
    if comment is not None:
        message.feedback = comment
    message.save(update_fields=["rating", "feedback"])
    return message.conversation_id, message.feedback


@transaction.atomic
def start_api_turn(owner, messages, params, choices=1):
    """Store an API request as a new conversation: its messages, then the reply to fill: empty, or,
    when the messages end with the assistant's, that message, to go on from (its text so far).
    Returns (conversation, [replies]): with `choices` (OpenAI's n) above 1, the others are versions of
    the first (chat.versions), shown in the admin's transcript, not in the conversation's branch."""
    if owner.api_key is not None:
        refuse_if_key_busy(owner.api_key)
    else:
        refuse_if_busy(owner)
    prefix = messages[-1]["content"] if messages[-1]["role"] == Message.Role.ASSISTANT else ""
    messages = messages[:-1] if prefix else messages
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == Message.Role.USER)
    conversation = _new_conversation(owner, last_user, api_key=owner.api_key)
    # The client's own history is stored as it was sent: its assistant turns are finished replies.
    parent = None
    for m in messages:
        if m["role"] != "system":
            parent = Message.objects.create(
                conversation=conversation, role=m["role"], content=m["content"], parent=parent,
                finish_reason=Message.FinishReason.STOP if m["role"] == Message.Role.ASSISTANT else "")
    replies = [_new_reply(conversation, params, parent, content=prefix)]
    for index in range(1, choices):  # a seeded call's choices differ, each reproducible: seed + index
        seeded = {**params, "seed": params["seed"] + index} if params.get("seed") is not None else params
        replies.append(Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, content=prefix, superseded=True,
            finish_reason=Message.FinishReason.GENERATING, params=seeded, parent=parent))
    return conversation, replies
