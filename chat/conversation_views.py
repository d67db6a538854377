"""The page's HTTP endpoints for one conversation: export (Markdown, JSON), import, share links,
and the read-only shared page. docs/protocol.md ("HTTP endpoints of the page") lists them.

The caller is identified as on the socket: the signed-in user, or the guest kept in the session.
Someone else's conversation answers 404, exactly as one that does not exist.
"""
import logging
import re

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from redis.exceptions import RedisError

from . import conversation_export, sharing
from .admission import admit_guest, http_client_address
from .lifecycle import user_group, visitor_group
from .live_state import release_window_slot, take_window_slot
from .markdown_html import render_markdown
from .models import GUEST_SESSION_KEY, MAX_ID, Owner
from .turns import ProtocolError, get_owned

log = logging.getLogger(__name__)


def _owner(request):
    if request.user.is_authenticated:
        return Owner(user_id=request.user.pk)
    if settings.CHAT_ALLOW_GUESTS and GUEST_SESSION_KEY in request.session:
        return Owner(guest_key=request.session[GUEST_SESSION_KEY])
    return None


def _owned(request, conversation_id):
    owner = _owner(request)
    if owner is None or conversation_id > MAX_ID:
        raise Http404("no such conversation")
    try:
        return owner, get_owned(owner, conversation_id)
    except ProtocolError:
        raise Http404("no such conversation") from None


def _refused(code, detail, status=400):
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _filename(conversation, extension):
    stem = re.sub(r"[^A-Za-z0-9]+", "-", str(conversation)).strip("-")[:60] or "conversation"
    return f"{stem}-{conversation.pk}.{extension}"


def _attachment(parts, content_type, filename):
    response = StreamingHttpResponse(parts, content_type=content_type)  # a message at a time
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@never_cache
@require_GET
def export_markdown(request, conversation_id):
    _, conversation = _owned(request, conversation_id)
    return _attachment(conversation_export.markdown_parts(conversation), "text/markdown; charset=utf-8",
                       _filename(conversation, "md"))


@never_cache
@require_GET
def export_json(request, conversation_id):
    _, conversation = _owned(request, conversation_id)
    return _attachment(conversation_export.json_parts(conversation), "application/json; charset=utf-8",
                       _filename(conversation, "json"))


@require_POST
def import_json(request):
    """The body is an export (JSON); answers 201 {conversation, title}, or 4xx {error, detail}.
    Admitted like a turn: at most CHAT_IMPORTS_PER_HOUR stored imports per user (429 `rate_limited`
    with Retry-After), counted per address for guests (their identities are cheap to make), and
    within CHAT_MAX_CONVERSATIONS. A visitor's first import makes its guest identity."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > conversation_export.MAX_IMPORT_BYTES:  # refused before the body is read
        return _refused("too_large", f"the file is over the import limit of "
                        f"{conversation_export.MAX_IMPORT_BYTES // (1024 * 1024)} MB", status=413)
    try:
        title, records = conversation_export.parse_import(request.body)
    except conversation_export.ImportRefused as exc:
        return _refused(exc.code, str(exc), status=413 if exc.code == "too_large" else 400)
    address = http_client_address(request)
    try:
        owner = _owner(request) or _new_guest(request, address)
        if owner is None:
            return _refused("auth_required", "sign in before importing", status=403)
        rate_key = f"chat:addr:{address}:guest-imports" if owner.guest_key else f"chat:{owner.key}:imports"
        slot, retry_after = async_to_sync(take_window_slot)(rate_key, settings.CHAT_IMPORTS_PER_HOUR, 3600)
    except ProtocolError as exc:  # too many new guests from this address
        return _too_many(exc)
    except RedisError:
        return _refused("unavailable", "the service's Redis is unavailable; try again in a moment", status=503)
    if retry_after:
        per = ", counted per address for guests; or sign in" if owner.guest_key else ""
        return _too_many(ProtocolError("rate_limited", f"at most {settings.CHAT_IMPORTS_PER_HOUR} imports an hour "
                                       f"(CHAT_IMPORTS_PER_HOUR{per}); try again in {retry_after} s",
                                       retry_after=retry_after))
    try:
        conversation = conversation_export.import_conversation(owner, title, records)
    except ProtocolError as exc:
        _give_back(rate_key, slot)
        return _refused(exc.code, exc.detail, status=409)
    except BaseException:
        _give_back(rate_key, slot)
        raise
    _tell_other_tabs(owner, request.session.session_key)
    return JsonResponse({"conversation": conversation.pk, "title": str(conversation)}, status=201)


def _new_guest(request, address):
    if not settings.CHAT_ALLOW_GUESTS:
        return None
    return Owner(guest_key=async_to_sync(admit_guest)(request.session, address))


def _too_many(exc):
    response = JsonResponse({"error": exc.code, "detail": exc.detail, **exc.extra}, status=429)
    response["Retry-After"] = str(exc.extra["retry_after"])
    return response


def _give_back(rate_key, slot):
    """Only stored imports count: a refused one returns its slot."""
    try:
        async_to_sync(release_window_slot)(rate_key, slot)
    except RedisError:
        log.warning("could not give back the import slot at %s", rate_key)


def _tell_other_tabs(owner, session_key=None):
    """Every socket of the owner asks for its list again (the protocol's `changed` frame); the
    browser's sockets that speak for no one yet become the guest (the import may have made it)."""
    try:
        group_send = async_to_sync(get_channel_layer().group_send)
        if owner.guest_key and session_key:
            group_send(visitor_group(session_key), {"type": "chat.identified", "guest": owner.guest_key})
        group_send(user_group(owner.key), {"type": "chat.changed"})
    except (RedisError, OSError):
        log.warning("could not tell the tabs of %s that a conversation was imported", owner.key)


def _link_answer(request, link):
    if link is None:
        return {"shared": False}
    return {"shared": True, "token": link.token,
            "url": request.build_absolute_uri(reverse("shared", args=[link.token]))}


@never_cache
@require_http_methods(["GET", "POST", "DELETE"])
def share(request, conversation_id):
    """GET: the live link ({shared, url?}); POST: create one (or return the live one); DELETE: revoke."""
    owner, conversation = _owned(request, conversation_id)
    if request.method == "POST":
        return JsonResponse(_link_answer(request, sharing.share(owner, conversation.pk)), status=201)
    if request.method == "DELETE":
        revoked = sharing.revoke(owner, conversation.pk)
        return JsonResponse({"shared": False, "revoked": revoked})
    return JsonResponse(_link_answer(request, sharing.current_link(owner, conversation.pk)))


@never_cache
@require_GET
def shared(request, token):
    """The read-only page of a shared conversation: its active branch when shared, rendered on the server."""
    link = sharing.shared_link(token)
    if link is None:
        raise Http404("this link does not exist or was revoked")
    conversation = link.conversation
    # What was finished when it was shared (chat.sharing), not what came after.
    messages = [{"role": m.role, "content": m.content, "html": render_markdown(m.content) if m.role == "assistant" else "",
                 "finish_reason": m.finish_reason}
                for m in link.shown_messages()]
    response = render(request, "chat/shared.html", {"conversation": conversation, "messages": messages})
    # The token is the key: never sent on to other sites, never indexed.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response
