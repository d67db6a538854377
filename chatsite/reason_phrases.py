"""HTTP reason phrases for daphne. ASGI carries a response's status code but not its phrase, so
daphne's Twisted writes its own, and Twisted's table lacks several codes Django answers with
(429 went out as "HTTP/1.1 429 Unknown Status"). Filled in from Python's http.HTTPStatus."""
from http import HTTPStatus


def teach_twisted():
    try:
        from twisted.web import http
    except ImportError:  # served by another ASGI server: nothing to teach
        return
    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))
