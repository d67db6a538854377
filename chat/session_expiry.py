"""Sessions expire after CHAT_SESSION_DAYS without a visit, not a year after they began.

Django's SESSION_SAVE_EVERY_REQUEST would slide the expiry by writing the session row on every
request; here a session that is in use is saved (expiry and cookie renewed) at most once a day, so
a visit a month keeps a guest's identity, and with it their conversations, for good. A guest who
signs in moves their conversations to the account, where an expired session loses nothing: signing
in again finds them.
"""
import time

RENEWED = "chat_renewed"  # when this session's expiry was last pushed back (seconds since the epoch)
RENEW_EVERY = 24 * 3600


class SlidingSessionMiddleware:
    """Inside SessionMiddleware: marking the session modified makes it save the row (expiry now +
    SESSION_COOKIE_AGE) and send the cookie again with that age."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        session = getattr(request, "session", None)
        if session is not None and session.session_key and not session.is_empty():
            now = time.time()
            if now - session.get(RENEWED, 0) >= RENEW_EVERY:
                session[RENEWED] = now
                session.set_expiry(None)  # the default age from now (SESSION_COOKIE_AGE)
        return response
