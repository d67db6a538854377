"""Who is asking: the client address a request came from, and the key the per-address limits count it under.

Behind a proxy (CHAT_PROXY_HEADERS) the address is the one our proxies appended to X-Forwarded-For:
the CHAT_PROXY_COUNT-th entry from the right. Entries further left were written by the client and
prove nothing. A request whose header has fewer entries than that did not come through our proxies
as configured, so its peer address is used. HTTP views and the WebSocket consumer read it here alike.

An IPv6 client usually holds a whole /64 (any address in it is theirs to use), so the limits count
a /64 as one client; an IPv4 address counts alone.
"""
import ipaddress

from django.conf import settings


def limit_key(address):
    """The key a per-address limit counts `address` under: the address for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address(peer, forwarded_for):
    """The client's address, from the connection's peer and the X-Forwarded-For value (or None)."""
    if settings.CHAT_PROXY_HEADERS and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if len(hops) >= settings.CHAT_PROXY_COUNT:
            return _without_port(hops[-settings.CHAT_PROXY_COUNT])
    return peer or "unknown"


def of_http(request):
    """The limit key of an HTTP request's client."""
    return limit_key(client_address(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR")))


def of_scope(scope):
    """The limit key of an ASGI connection's client (the WebSocket consumer's scope)."""
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name.lower() == b"x-forwarded-for"]
    return limit_key(client_address((scope.get("client") or [None])[0], ", ".join(forwarded) or None))


def _without_port(hop):
    """'1.2.3.4:5678' or '[2001:db8::1]:443' (as some proxies write them) to the bare address."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop
