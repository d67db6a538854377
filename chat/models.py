import hashlib
import secrets
import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone


GUEST_SESSION_KEY = "chat_guest"
MAX_ID = 2**63 - 1  # the database's bigint: a larger id cannot exist, and would overflow a query


def stored_guest(session_key):
    """The guest identity stored in session `session_key` now (a copy of the session read earlier may
    not have it yet), or None."""
    from importlib import import_module

    return import_module(settings.SESSION_ENGINE).SessionStore(session_key).get(GUEST_SESSION_KEY)


def guest_key(session):
    """A guest's identity: a random id kept in their session (it survives signing in, unlike the session key).
    Two tabs of one browser may ask at once (their first sends): the session's row is read again under
    a lock, so both get the identity the first one made."""
    if GUEST_SESSION_KEY in session:
        return session[GUEST_SESSION_KEY]
    from django.contrib.sessions.models import Session

    with transaction.atomic():  # SQLite: the write lock from here (IMMEDIATE); PostgreSQL: the row's
        if session.session_key and Session.objects.select_for_update().filter(session_key=session.session_key).exists():
            made = stored_guest(session.session_key)
            if made:
                session[GUEST_SESSION_KEY] = made
                return made
        session[GUEST_SESSION_KEY] = uuid.uuid4().hex
        session.save()
    return session[GUEST_SESSION_KEY]


class Owner:
    """Who a conversation belongs to: a signed-in user, or a guest identified by session key."""

    def __init__(self, user_id=None, guest_key=None, api_key=None):
        if bool(user_id) == bool(guest_key):
            raise ValueError("an owner is either a user or a guest")
        self.user_id, self.guest_key = user_id, guest_key
        # The ApiKey a call came with (its user's): its turns are admitted by the key's limits
        # (chat.api_limits) and its conversations are the key's (kept CHAT_API_RETENTION_DAYS).
        self.api_key = api_key

    @property
    def key(self):
        """A stable string for Redis keys and channel-layer group names."""
        return f"u{self.user_id}" if self.user_id else f"g{self.guest_key}"

    def filter(self):
        return Q(user_id=self.user_id) if self.user_id else Q(user__isnull=True, guest_key=self.guest_key)

    def fields(self):
        return {"user_id": self.user_id, "guest_key": self.guest_key or ""}


class ConversationQuerySet(models.QuerySet):
    def owned_by(self, owner):
        return self.filter(owner.filter())

    def with_replies(self, **conditions):
        """Conversations with at least one reply matching `conditions` (Message field lookups)."""
        return self.filter(pk__in=Message.objects.filter(role=Message.Role.ASSISTANT, **conditions)
                           .values("conversation_id"))

    def reviewed(self, reviewed=True):
        return self.filter(reviewed_at__isnull=not reviewed)


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    guest_key = models.CharField(max_length=64, blank=True, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    model_name = models.CharField(max_length=200, blank=True, db_index=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    updated = models.DateTimeField(auto_now=True, db_index=True)
    # A reviewer's mark (chat.admin): the one thing written in the admin while it is read-only.
    reviewed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    review_note = models.TextField(blank=True, default="", db_default="")
    # True once the user renamed it: the title is then theirs, no longer derived from the first prompt
    title_edited = models.BooleanField(default=False, db_default=False)
    # The settings the page uses in this conversation (chat.presets.clean_settings: the preset picked
    # and the values the user set); None for a conversation that never had any (it follows the page's).
    settings = models.JSONField(null=True, blank=True)
    # The API key whose call stored it (None for the page's): such conversations do not count against
    # CHAT_MAX_CONVERSATIONS and are deleted CHAT_API_RETENTION_DAYS after their last turn. RESTRICT: a
    # key is retired by unticking `active`; it can be deleted once retention has cleared its conversations.
    api_key = models.ForeignKey("ApiKey", null=True, blank=True, on_delete=models.RESTRICT,
                                related_name="conversations")

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated"]
        permissions = [("review_conversation", "Can mark a conversation reviewed, with a note")]

    def __str__(self):
        return self.title or f"Conversation {self.pk}"

    @property
    def owner(self):
        return Owner(self.user_id, None if self.user_id else self.guest_key)

    def active_messages(self):
        return self.messages.filter(superseded=False).order_by("id")

    def mark_reviewed(self, reviewer, note=""):
        self.reviewed_at, self.reviewed_by, self.review_note = timezone.now(), reviewer, note
        # `updated` is left alone: it is the conversation's last activity, not the reviewer's
        Conversation.objects.filter(pk=self.pk).update(
            reviewed_at=self.reviewed_at, reviewed_by=reviewer, review_note=note)

    def clear_review(self):
        self.reviewed_at, self.reviewed_by = None, None
        Conversation.objects.filter(pk=self.pk).update(reviewed_at=None, reviewed_by=None)


class MessageQuerySet(models.QuerySet):
    def generating(self):
        """Assistant replies that have not ended (chat.lifecycle changes that, nothing else)."""
        return self.filter(role=Message.Role.ASSISTANT, finish_reason=Message.FinishReason.GENERATING)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class FinishReason(models.TextChoices):
        GENERATING = "", "generating"
        STOP = "stop"
        LENGTH = "length"
        CANCELLED = "cancelled"
        ERROR = "error"

    conversation = models.ForeignKey(Conversation, related_name="messages", on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=16, choices=FinishReason.choices, blank=True, db_index=True)
    error_detail = models.CharField(max_length=500, blank=True)
    superseded = models.BooleanField(default=False, db_index=True)
    # The message this one follows in its branch (None for a first message). Regenerated replies
    # and edited messages share a parent with the versions they replaced (chat.versions).
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    time_to_first_token_ms = models.FloatField(null=True, blank=True)
    generation_ms = models.FloatField(null=True, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    # Provenance of a reply: the worker that served it and how its model ran there. Database
    # defaults too, so that rows written outside the ORM (tests, scripts) need not name them.
    worker = models.CharField(max_length=200, blank=True, default="", db_default="")
    device = models.CharField(max_length=200, blank=True, default="", db_default="")  # an upstream's URL too
    precision = models.CharField(max_length=32, blank=True, default="", db_default="")
    params = models.JSONField(default=dict, blank=True)
    # Files sent with a user's message as context: [{name, content}] (chat.attachments checks them).
    attachments = models.JSONField(default=list, blank=True, db_default=[])
    rating = models.SmallIntegerField(null=True, blank=True, choices=[(1, "up"), (-1, "down")], db_index=True)
    feedback = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["conversation", "superseded", "id"])]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"

    @classmethod
    def provenance(cls, worker_id, engine):
        """The provenance fields of a reply served by this worker's engine (for finish_reply), each
        cut to its column's length (PostgreSQL refuses a longer value, and with it the whole reply)."""
        values = {"model_name": engine.name, "worker": worker_id, "device": str(engine.device),
                  "precision": getattr(engine, "precision", None) or str(engine.dtype).removeprefix("torch.")}
        return {name: value[:cls._meta.get_field(name).max_length] for name, value in values.items()}

    @property
    def generating(self):
        return self.role == self.Role.ASSISTANT and self.finish_reason == self.FinishReason.GENERATING

    @property
    def tokens_per_second(self):
        return decode_rate(self.completion_tokens, self.generation_ms, self.time_to_first_token_ms)

    def as_frame(self):
        """The message as the protocol's `history` frame lists it."""
        frame = {"id": self.pk, "role": self.role, "content": self.content}
        if self.attachments:  # the files' names and sizes (chat.attachments.summary); their text stays here
            frame["attachments"] = [{"name": f["name"], "size": len(f["content"])} for f in self.attachments]
        if self.role == self.Role.ASSISTANT:
            frame["finish_reason"] = self.finish_reason or None
            if self.rating is not None:
                frame["rating"] = self.rating
            if self.feedback:
                frame["comment"] = self.feedback
            if not self.generating:
                frame.update(self.usage_fields())
        return frame

    def usage_fields(self):
        """A finished reply's statistics, as `done` and `history` frames carry them."""
        fields = {"usage": {"prompt_tokens": self.prompt_tokens or 0, "completion_tokens": self.completion_tokens or 0}}
        rate = self.tokens_per_second
        if rate is not None:
            fields["tokens_per_second"] = round(rate, 2)
        return fields


def decode_rate(completion_tokens, generation_ms, first_token_ms):
    """Tokens per second after the first (as chat.metrics and the page count them), or None."""
    if not completion_tokens or completion_tokens < 2 or generation_ms is None or first_token_ms is None:
        return None
    streaming_ms = generation_ms - first_token_ms
    return (completion_tokens - 1) / (streaming_ms / 1000) if streaming_ms > 0 else None


class ApiKey(models.Model):
    """A key for the HTTP API (/v1/..., /generate), created by staff in the admin. Only a hash is kept."""

    name = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             help_text="Conversations made with this key belong to this user.")
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    # Limits of this key's calls (chat.api_limits); blank: the configured default (CHAT_API_KEY_...).
    max_in_flight = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Calls generating at once; blank: CHAT_API_KEY_MAX_IN_FLIGHT.")
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Calls per minute; blank: CHAT_API_KEY_REQUESTS_PER_MINUTE.")
    tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Prompt + completion tokens of the calls that ended in the last minute; blank: "
                  "CHAT_API_KEY_TOKENS_PER_MINUTE.")

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def limit_in_flight(self):
        return self.max_in_flight or settings.CHAT_API_KEY_MAX_IN_FLIGHT

    @property
    def limit_requests(self):
        return self.requests_per_minute or settings.CHAT_API_KEY_REQUESTS_PER_MINUTE

    @property
    def limit_tokens(self):
        return self.tokens_per_minute or settings.CHAT_API_KEY_TOKENS_PER_MINUTE

    @staticmethod
    def hash(raw_key):
        return hashlib.sha256(raw_key.encode()).hexdigest()

    def issue(self):
        """Give this key a new secret; returns it (shown once, never stored)."""
        raw_key = "sk-chat-" + secrets.token_urlsafe(32)
        self.prefix, self.key_hash = raw_key[:12], self.hash(raw_key)
        return raw_key


class ShareLinkQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class ShareLink(models.Model):
    """A read-only link to a conversation's active branch (chat.sharing); anyone holding the token may read."""

    conversation = models.ForeignKey(Conversation, related_name="share_links", on_delete=models.CASCADE)
    token = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # What the link shows: the active branch when it was (last) shared, as [[message id, characters]]
    # (a reply continued later shows only the text it had then). Later turns stay private.
    snapshot = models.JSONField(default=list, blank=True)

    objects = ShareLinkQuerySet.as_manager()

    def __str__(self):
        return f"share of {self.conversation_id} ({self.token[:6]}…)"

    @staticmethod
    def new_token():
        return secrets.token_urlsafe(24)

    @staticmethod
    def snapshot_of(conversation):
        """The conversation's active branch now, as a snapshot; a reply still generating is left out."""
        return [[m.pk, len(m.content)] for m in conversation.active_messages() if not m.generating]

    def shown_messages(self):
        """The snapshot's messages, each with the text it had when shared, in order."""
        lengths = dict(self.snapshot)
        messages = Message.objects.filter(conversation_id=self.conversation_id, pk__in=lengths).order_by("id")
        for message in messages:
            message.content = message.content[:lengths[message.pk]]
        return list(messages)


class PresetQuerySet(models.QuerySet):
    def owned_by(self, owner):
        return self.filter(owner.filter())


class Preset(models.Model):
    """A user's named system prompt and sampling settings (chat.presets; built-in ones live in code).
    Fields left empty/None follow the server's defaults."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    guest_key = models.CharField(max_length=64, blank=True, db_index=True)
    name = models.CharField(max_length=80)
    system = models.TextField(blank=True)
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    max_new_tokens = models.PositiveIntegerField(null=True, blank=True)
    top_k = models.PositiveIntegerField(null=True, blank=True)
    min_p = models.FloatField(null=True, blank=True)
    repetition_penalty = models.FloatField(null=True, blank=True)
    stop = models.JSONField(null=True, blank=True)  # up to 4 strings (inference.sampling.MAX_STOP_STRINGS)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name
