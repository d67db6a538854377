"""A conversation as the admin shows it to reviewers: its messages in order, as the chat shows
them (a reply's Markdown rendered and sanitized, a user's text as typed), each reply with where
and how it was made. Messages superseded by a regeneration or an edit are grouped where they
branched off, for the template to show collapsed."""
from dataclasses import dataclass, field

from django.urls import reverse

from .formatting import format_params, format_rate, format_seconds
from .markdown_html import render_markdown
from .models import Message

RATINGS = {1: "👍 good", -1: "👎 bad"}


@dataclass
class ShownMessage:
    message: Message
    body: str  # safe HTML of a reply; a user's message is shown as plain text by the template
    facts: list = field(default_factory=list)  # (label, value) pairs, for replies only
    admin_url: str = ""
    is_branch = False

    @property
    def is_reply(self):
        return self.message.role == Message.Role.ASSISTANT


@dataclass
class Branch:
    """Consecutive superseded messages: a reply regenerated, or a user's message edited away with
    everything after it."""
    messages: list
    is_branch = True

    @property
    def edited(self):
        return not self.messages[0].is_reply

    @property
    def summary(self):
        count = len(self.messages)
        if self.edited:
            return f"Edited away here: {count} earlier message{'s' if count != 1 else ''}"
        return f"Regenerated here: {count} earlier repl{'ies' if count != 1 else 'y'}"


def transcript(conversation):
    """The conversation's messages in order: ShownMessage for the active branch, Branch for each
    run of superseded messages."""
    entries = []
    for message in conversation.messages.order_by("id"):
        shown = shown_message(message)
        if not message.superseded:
            entries.append(shown)
        elif entries and isinstance(entries[-1], Branch):
            entries[-1].messages.append(shown)
        else:
            entries.append(Branch([shown]))
    return entries


def shown_message(message):
    admin_url = reverse("admin:chat_message_change", args=[message.pk])
    if message.role != Message.Role.ASSISTANT:
        return ShownMessage(message, body="", admin_url=admin_url)
    return ShownMessage(message, body=render_markdown(message.content), facts=reply_facts(message),
                        admin_url=admin_url)


def reply_facts(message):
    """What a reviewer wants to know of a reply besides its text, as (label, value) pairs."""
    finish = message.get_finish_reason_display()
    if message.error_detail:
        finish = f"{finish}: {message.error_detail}"
    facts = [
        ("Model", message.model_name or "–"),
        ("Worker", message.worker or "–"),
        ("Device", " · ".join(part for part in (message.device, message.precision) if part) or "–"),
        ("Finish", finish),
        ("Tokens", _tokens(message)),
        ("First token", format_seconds(message.time_to_first_token_ms)),
        ("Speed", format_rate(message.tokens_per_second)),
        ("Total time", format_seconds(message.generation_ms)),
        ("Sampling", format_params(message.params) or "–"),
    ]
    system = (message.params or {}).get("system")
    if system:
        facts.append(("System prompt", system))
    if message.rating is not None:
        facts.append(("Rating", RATINGS.get(message.rating, str(message.rating))))
    if message.feedback:
        facts.append(("Comment", message.feedback))
    return facts


def _tokens(message):
    if message.prompt_tokens is None and message.completion_tokens is None:
        return "–"
    return f"{message.prompt_tokens or 0} prompt → {message.completion_tokens or 0} generated"
