"""Files sent with a user's message as context: checked when a turn arrives, stored with the
message (Message.attachments, [{name, content}]), and put in front of the message's text in the
prompt the worker builds, each under its name.

Only text is accepted: the page reads a file as UTF-8 and refuses it when it is not (or holds NUL
bytes); the server checks the same of what arrives. All files of one message together may have at
most CHAT_MAX_ATTACHMENT_CHARS characters (a limit of their own: a file is usually longer than what
one types, and CHAT_MAX_MESSAGE_CHARS stays the limit of the typed text).
"""
import re

from django.conf import settings

from .turns import ProtocolError

MAX_NAME_CHARS = 200
_FENCE_RUN = re.compile(r"`{3,}")


def validated(raw, conversation_id=None):
    """The `attachments` field of a frame as [{name, content}]; raises ProtocolError (bad_field,
    too_large) with a message that names the file."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ProtocolError("bad_field", "'attachments' must be a list of {name, content} objects", conversation_id)
    if len(raw) > settings.CHAT_MAX_ATTACHMENTS:
        raise ProtocolError("too_large", f"{len(raw)} files attached; at most {settings.CHAT_MAX_ATTACHMENTS} "
                            "per message (CHAT_MAX_ATTACHMENTS)", conversation_id)
    files, total = [], 0
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"name", "content", "size"}:
            raise ProtocolError("bad_field", "each attachment must be an object {name, content}", conversation_id)
        name, content = item.get("name"), item.get("content")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS or _has_control(name):
            raise ProtocolError("bad_field", f"an attachment's 'name' must be a file name of 1 to {MAX_NAME_CHARS} "
                                "characters", conversation_id)
        if not isinstance(content, str):
            raise ProtocolError("bad_field", f"the content of {name!r} must be a string", conversation_id)
        if "\x00" in content or not _is_utf8(content):
            raise ProtocolError("bad_field", f"{name!r} is not a text file (it has NUL bytes or is not valid "
                                "UTF-8); only text and code files can be attached", conversation_id)
        total += len(content)
        if total > settings.CHAT_MAX_ATTACHMENT_CHARS:
            raise ProtocolError("too_large", f"the attached files have more than {settings.CHAT_MAX_ATTACHMENT_CHARS} "
                                f"characters together (at {name!r}; CHAT_MAX_ATTACHMENT_CHARS)", conversation_id)
        files.append({"name": name.strip(), "content": content})
    return files


def summary(attachments):
    """What the page shows of each file (a chip): its name and size in characters, not its text."""
    return [{"name": a["name"], "size": len(a["content"])} for a in attachments or ()]


def prompt_content(content, attachments):
    """The text the model reads for a user's message: each file under its name, then the message."""
    if not attachments:
        return content
    parts = []
    for attachment in attachments:
        text = attachment["content"]
        # A fence longer than any run of backticks in the file, so the file cannot close it early.
        longest = max((len(run) for run in _FENCE_RUN.findall(text)), default=0)
        fence = "`" * max(3, longest + 1)
        parts.append(f"File: {attachment['name']}\n{fence}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}")
    return "\n\n".join(parts + [content])


def _is_utf8(text):
    try:  # JSON can carry lone surrogates (\ud800), which are not text
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_control(text):
    return any(ord(c) < 32 or ord(c) == 127 for c in text)
