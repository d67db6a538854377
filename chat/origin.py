"""Sockets only from pages of this site.

Channels' AllowedHostsOriginValidator compares the Origin's host with ALLOWED_HOSTS only, so a
page served from another port or scheme of an allowed host could open a socket with the user's
cookies. Here the Origin must also be the socket's own scheme, host and port (http for ws, https
for wss), or be listed in CSRF_TRUSTED_ORIGINS.
"""
from channels.security.websocket import WebsocketDenier
from django.conf import settings


class SameOriginValidator:
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not self._same_origin(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)

    @staticmethod
    def _same_origin(scope):
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1").lower()
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if not host:  # no Host header (not a browser); AllowedHostsOriginValidator has checked the Origin
            return True
        secure = scope.get("scheme") == "wss" or (  # TLS ended at our proxy, which says so (as Django trusts it)
            settings.CHAT_PROXY_HEADERS and headers.get(b"x-forwarded-proto", b"").lower() == b"https")
        scheme = "https" if secure else "http"
        own = {f"{scheme}://{host}"}
        default_port = ":443" if scheme == "https" else ":80"
        own.add(f"{scheme}://{host.removesuffix(default_port)}")
        return origin in own or origin in {o.lower() for o in settings.CSRF_TRUSTED_ORIGINS}
