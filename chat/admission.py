"""The one gate for every turn, whichever door it came through (the WebSocket, /v1/chat/completions,
/generate), and for new guest identities.

Cheap, global checks come first: is the shared queue full (`overloaded`)? is this client address
minting guests (`too_many_guests`) or sending guest turns (`rate_limited`) too fast? Then the
owner's own messages-per-minute slot (an API key's call: the key's requests and tokens per minute,
chat.api_limits), then the turn's transaction (chat.turns), which checks `busy` (a key's calls in
flight) where two tabs cannot both pass it. A turn refused after taking its rate slot gives the
slot back, so only turns that were stored count.
"""
from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpResponse

from . import api_limits, client_address, request_queue, turns
from .lifecycle import abandoned_detail, fail_if_abandoned
from .live_state import release_window_slot, take_window_slot, window_wait
from .models import GUEST_SESSION_KEY, guest_key
from .turns import ProtocolError


async def admit_guest(session, address):
    """The guest identity kept in `session`; a new one only within the per-address limit."""
    if not await database_sync_to_async(_has_guest)(session):
        _, retry_after = await take_window_slot(f"chat:addr:{address}:guests", settings.CHAT_GUESTS_PER_ADDRESS,
                                                3600)
        if retry_after:
            raise ProtocolError("too_many_guests", guests_refused_detail(), retry_after=retry_after)
    return await database_sync_to_async(guest_key)(session)


def existing_guest(session):
    """The guest identity kept in `session`, or None: nothing is made (a page view, a socket's connect)."""
    return session.get(GUEST_SESSION_KEY)  # loads the session from the database


async def guest_quota_wait(address):
    """Seconds until `address` may make a new guest (0: now), without taking a slot."""
    return await window_wait(f"chat:addr:{address}:guests", settings.CHAT_GUESTS_PER_ADDRESS, 3600)


def http_client_address(request):
    """The key the per-address limits count an HTTP request against (chat.client_address: our proxy's
    X-Forwarded-For entry, an IPv6 client's /64)."""
    return client_address.of_http(request)


def socket_client_address(scope):
    """The same key for a WebSocket connection."""
    return client_address.of_scope(scope)


def too_many_requests(detail, retry_after):
    """The plain-text 429 answer of a form over a per-address limit."""
    response = HttpResponse(f"{detail}\n", status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(retry_after)
    return response


def guests_refused_detail():
    return (f"Too many new guests from your address (at most {settings.CHAT_GUESTS_PER_ADDRESS} an hour). "
            "Sign in, or keep your browser's cookies so that it stays one guest.")


async def fail_abandoned_replies(owner, conversation_id=None):
    """End the owner's replies (in one conversation, or all) whose worker stopped reporting."""
    for reply_id in await database_sync_to_async(turns.generating_replies)(owner, conversation_id):
        await fail_if_abandoned(reply_id, abandoned_detail(True))


def _has_guest(session):
    return GUEST_SESSION_KEY in session  # loads the session from the database


async def admit_turn(owner, address, conversation_id, start, *args):
    """Store a turn with `start(owner, *args)` (a chat.turns function: one transaction) if every
    limit allows it; returns what `start` returns, or raises ProtocolError. `conversation_id` (or
    None) only labels the refusals."""
    waiting, _ = await request_queue.depth()
    if waiting >= settings.CHAT_MAX_QUEUED_TURNS:
        raise ProtocolError("overloaded", f"the service is at capacity ({waiting} turns waiting); try again in a "
                            "minute", conversation_id, retry_after=30)
    if owner.guest_key:
        _, retry_after = await take_window_slot(f"chat:addr:{address}:guest-turns",
                                                settings.CHAT_GUEST_TURNS_PER_ADDRESS, 60)
        if retry_after:
            raise ProtocolError("rate_limited", f"at most {settings.CHAT_GUEST_TURNS_PER_ADDRESS} guest messages "
                                f"per minute from one address; try again in {retry_after} s, or sign in",
                                conversation_id, retry_after=retry_after)
    await fail_abandoned_replies(owner)  # a dead worker's reply keeps nobody busy
    if owner.api_key is not None:  # a program's call: its key's limits instead of a person's
        slot = await api_limits.take_request(owner.api_key)
        try:
            return await database_sync_to_async(start)(owner, *args)
        except BaseException:
            await api_limits.release_request(owner.api_key, slot)
            raise
    rate_key = f"chat:{owner.key}:rate"
    slot, retry_after = await take_window_slot(rate_key, settings.CHAT_MESSAGES_PER_MINUTE, 60)
    if retry_after:
        raise ProtocolError("rate_limited", f"at most {settings.CHAT_MESSAGES_PER_MINUTE} messages per minute; "
                            f"try again in {retry_after} s", conversation_id, retry_after=retry_after)
    try:
        return await database_sync_to_async(start)(owner, *args)
    except BaseException:
        await release_window_slot(rate_key, slot)
        raise
