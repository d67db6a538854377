"""A conversation's active branch out of the service (Markdown to read, JSON to keep), and a JSON
export back in as a new conversation of the importer.

The JSON round-trips: importing an export and exporting the copy gives the same `messages`.
An import is checked whole before anything is stored, and stored in one transaction.
"""
import json

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import attachments
from .models import Conversation, Message
from .turns import ProtocolError, title_from

FORMAT = "chatsite.conversation"
VERSION = 1
MAX_IMPORT_BYTES = 2 * 1024 * 1024
MAX_IMPORT_MESSAGES = 1000
BULK_BATCH = 500  # rows per statement (well under SQLite's limit of bound parameters)
MAX_TITLE_CHARS = 200
ROLES = {Message.Role.USER.value, Message.Role.ASSISTANT.value}
# What an imported reply may have ended with ("" is a reply still generating: never exported as such).
FINISH_REASONS = {"stop", "length", "cancelled", "error"}


class ImportRefused(Exception):
    """An import that is not a valid export: nothing was stored; the message says what is wrong."""

    def __init__(self, detail, code="bad_import"):
        super().__init__(detail)
        self.code = code  # "too_large" or "bad_import"


def message_record(message):
    """One message as the JSON export lists it."""
    record = {"role": message.role, "content": message.content}
    if message.attachments:  # files sent with a user's message, their text included
        record["attachments"] = [{"name": a["name"], "content": a["content"]} for a in message.attachments]
    if message.role == Message.Role.ASSISTANT:
        # A reply still generating is exported as what it has so far, cut there.
        record["finish_reason"] = message.finish_reason or Message.FinishReason.CANCELLED.value
        if message.model_name:
            record["model"] = message.model_name
    return record


def as_json(conversation):
    """The export as a dict (json.dumps it): the title and the active branch's messages, in order."""
    return {**as_json_header(conversation), "messages": [message_record(m) for m in conversation.active_messages()]}


def as_json_header(conversation):
    return {"format": FORMAT, "version": VERSION, "title": str(conversation), "model": conversation.model_name,
            "exported": timezone.now().isoformat()}


def as_markdown(conversation):
    """The active branch as a Markdown document: the title, then each message under its speaker."""
    return "".join(markdown_parts(conversation))


def markdown_parts(conversation):
    """as_markdown's text, a message at a time (the page's export streams it)."""
    yield f"# {_one_line(str(conversation))}\n\n"
    for message in conversation.active_messages().iterator(chunk_size=100):
        speaker = "User" if message.role == Message.Role.USER else "Assistant"
        parts = [f"## {speaker}", ""]
        if message.attachments:
            parts += [attachments.prompt_content("", message.attachments).rstrip(), ""]
        parts += [message.content.rstrip() or "*(empty)*", ""]
        yield "\n".join(parts) + "\n"


def json_parts(conversation):
    """json.dumps(as_json(conversation), indent=2)'s document, a message at a time (the page's export
    streams it; the messages are read in chunks, never all at once)."""
    head = as_json_header(conversation)
    yield json.dumps(head, ensure_ascii=False, indent=2)[:-2] + ',\n  "messages": ['
    for index, message in enumerate(conversation.active_messages().iterator(chunk_size=100)):
        record = json.dumps(message_record(message), ensure_ascii=False, indent=2).replace("\n", "\n    ")
        yield ("," if index else "") + "\n    " + record
    yield "\n  ]\n}"


def _one_line(text):
    return " ".join(text.split())


def parse_import(raw):
    """The export in `raw` (bytes or str) checked: (title, [message records]); raises ImportRefused."""
    if len(raw) > MAX_IMPORT_BYTES:
        raise ImportRefused(f"the file is over the import limit of {MAX_IMPORT_BYTES // (1024 * 1024)} MB",
                            "too_large")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ImportRefused("the file is not valid JSON") from None
    except RecursionError:
        raise ImportRefused("the file nests arrays or objects too deeply to be a conversation export") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ImportRefused(f"this is not a conversation export (expected \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise ImportRefused(f"export version {data.get('version')!r:.20} is not supported (expected {VERSION})")
    title = data.get("title", "")
    if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
        raise ImportRefused(f"\"title\" must be a string of at most {MAX_TITLE_CHARS} characters")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ImportRefused("\"messages\" must be a non-empty list")
    if len(messages) > MAX_IMPORT_MESSAGES:
        raise ImportRefused(f"the export has {len(messages)} messages; at most {MAX_IMPORT_MESSAGES} can be imported")
    return " ".join(title.split()), [_checked(record, index) for index, record in enumerate(messages)]


def _checked(record, index):
    where = f"message {index + 1}"
    if not isinstance(record, dict):
        raise ImportRefused(f"{where} is not an object")
    expected_role = "user" if index % 2 == 0 else "assistant"
    if record.get("role") != expected_role:
        raise ImportRefused(f"{where} must have \"role\": \"{expected_role}\" (messages alternate, user first)")
    content = record.get("content")
    if not isinstance(content, str):
        raise ImportRefused(f"{where} has no text \"content\"")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ImportRefused(f"{where} has {len(content)} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS}")
    checked = {"role": expected_role, "content": content}
    if "attachments" in record:
        if expected_role != "user":
            raise ImportRefused(f"{where}: only user messages have \"attachments\"")
        try:
            checked["attachments"] = attachments.validated(record["attachments"])
        except ProtocolError as exc:
            raise ImportRefused(f"{where}: {exc.detail}") from None
    if expected_role == "assistant":
        finish_reason = record.get("finish_reason", "stop")
        if finish_reason not in FINISH_REASONS:
            raise ImportRefused(f"{where} has an unknown \"finish_reason\" (one of {', '.join(sorted(FINISH_REASONS))})")
        model = record.get("model", "")
        if not isinstance(model, str) or len(model) > 200:
            raise ImportRefused(f"{where} has a bad \"model\" (a string of at most 200 characters)")
        checked.update(finish_reason=finish_reason, model=model)
    return checked


@transaction.atomic
def import_conversation(owner, title, records):
    """Store checked records (parse_import) as a new conversation of `owner`; returns it. The rows go
    in as one bulk insert and one bulk update of their parents, so SQLite's write lock, which the
    workers' writes wait for, is held for a few statements rather than one per message."""
    if Conversation.objects.owned_by(owner).count() >= settings.CHAT_MAX_CONVERSATIONS:
        raise ProtocolError("too_many_conversations", f"you have {settings.CHAT_MAX_CONVERSATIONS} "
                            "conversations, the most allowed (CHAT_MAX_CONVERSATIONS); delete some first")
    conversation = Conversation.objects.create(title=title or title_from(records[0]["content"]), **owner.fields())
    rows = []
    for record in records:
        fields = {"conversation": conversation, "role": record["role"], "content": record["content"],
                  "attachments": record.get("attachments", [])}
        if record["role"] == "assistant":
            fields.update(finish_reason=record["finish_reason"], model_name=record["model"])
        rows.append(Message(**fields))
    rows = Message.objects.bulk_create(rows, batch_size=BULK_BATCH)
    for parent, message in zip(rows, rows[1:]):  # one branch: each message follows the one before it
        message.parent = parent
    Message.objects.bulk_update(rows[1:], ["parent"], batch_size=BULK_BATCH)
    return conversation
