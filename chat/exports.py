"""What reviewers take out of the admin: every message with its provenance (CSV, JSONL), and the
conversations' active branches in the chat fine-tuning shape. Each export is produced piece by piece
(the admin streams it): conversations and messages are read in chunks, never all at once."""
import csv
import io
import json

from .models import Message

MESSAGE_FIELDS = [
    "id", "role", "content", "finish_reason", "error_detail", "superseded", "prompt_tokens",
    "completion_tokens", "time_to_first_token_ms", "generation_ms", "model_name", "worker", "device",
    "precision", "params", "rating", "feedback", "created",
]


def message_rows(conversations):
    """One dict per message of each conversation, superseded ones included (marked so)."""
    for conversation in conversations.select_related("user").order_by("pk").iterator(chunk_size=100):
        owner = str(conversation.user) if conversation.user_id else f"guest:{conversation.guest_key[:8]}"
        for message in conversation.messages.order_by("id").iterator(chunk_size=500):
            row = {"conversation": conversation.pk, "title": conversation.title, "owner": owner,
                   "conversation_model": conversation.model_name,
                   "reviewed": conversation.reviewed_at.isoformat() if conversation.reviewed_at else "",
                   "review_note": conversation.review_note}
            row.update({field: getattr(message, field) for field in MESSAGE_FIELDS})
            row["created"] = message.created.isoformat()
            yield row


def as_csv(conversations):
    """The CSV, a line (a message) at a time."""
    buffer = io.StringIO()
    writer = None
    for row in message_rows(conversations):
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(row))
            writer.writeheader()
        writer.writerow({k: spreadsheet_safe(json.dumps(v) if isinstance(v, dict) else v) for k, v in row.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def spreadsheet_safe(value):
    """A cell a spreadsheet would run as a formula (=, +, -, @, or a tab/CR first) is kept as text
    with a leading apostrophe (OWASP's advice against CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def as_jsonl(rows):
    """JSON lines, a row at a time."""
    return (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def fine_tuning_example(conversation):
    """The conversation's active branch as `{"messages": [{"role", "content"}, ...]}`, or None when it
    holds no finished reply. Superseded messages (regenerated or edited away), replies that are
    still generating or ended empty, and user messages after the last reply are left out."""
    messages = [{"role": m.role, "content": m.content} for m in conversation.active_messages()
                if m.role == Message.Role.USER or (m.content and not m.generating)]
    while messages and messages[-1]["role"] != Message.Role.ASSISTANT:
        messages.pop()
    return {"messages": messages} if messages else None


def fine_tuning_examples(conversations):
    for conversation in conversations.order_by("pk").iterator(chunk_size=100):
        example = fine_tuning_example(conversation)
        if example is not None:
            yield example
