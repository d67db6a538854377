"""Client addresses: only our proxy's X-Forwarded-For entry counts, the same for HTTP and WebSocket;
an IPv6 client is one /64; sign-in is throttled per account and address, not per address alone."""
import pytest
from django.contrib.auth.models import User
from django.test import Client

from chat import client_address
from chat.admission import http_client_address, socket_client_address

pytestmark = pytest.mark.django_db(transaction=True)


def login_from(address, username, password, forwarded_for=None):
    """A sign-in POST from `address` (the peer), or through our proxy when `forwarded_for` is given."""
    extra = {"REMOTE_ADDR": address}
    if forwarded_for:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    client = Client(enforce_csrf_checks=False)
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def test_behind_the_proxy_the_entry_it_appended_counts_and_the_clients_own_entries_do_not(settings):
    settings.CHAT_PROXY_HEADERS = True
    request = Client().get("/healthz", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9").wsgi_request
    assert http_client_address(request) == "203.0.113.9"
    scope = {"client": ["10.0.0.2", 5000], "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")]}
    assert socket_client_address(scope) == "203.0.113.9"  # the socket reads it by the same rule
    settings.CHAT_PROXY_COUNT = 2  # two proxies of ours: the client is second from the right
    assert client_address.client_address("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1") == "203.0.113.9"
    assert client_address.client_address("10.0.0.2", "203.0.113.9") == "10.0.0.2"  # did not come through both


def test_without_proxy_headers_x_forwarded_for_is_ignored(settings):
    settings.CHAT_PROXY_HEADERS = False
    request = Client().get("/healthz", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="1.1.1.1").wsgi_request
    assert http_client_address(request) == "198.51.100.7"
    assert socket_client_address({"client": ["198.51.100.7", 1], "headers": [(b"x-forwarded-for", b"1.1.1.1")]}) \
        == "198.51.100.7"


def test_an_ipv6_client_is_counted_per_64_and_ipv4_per_address():
    same = {client_address.limit_key(a) for a in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:DB8:1:2::abcd")}
    assert same == {"2001:db8:1:2::/64"}
    assert client_address.limit_key("2001:db8:1:3::1") != "2001:db8:1:2::/64"
    assert client_address.limit_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_address.limit_key("192.0.2.1") != client_address.limit_key("192.0.2.2")
    assert client_address.of_scope({"client": ["2001:db8:1:2::77", 1], "headers": []}) == "2001:db8:1:2::/64"


def test_spoofed_leftmost_entries_do_not_escape_the_sign_in_throttle(db, clean_redis, settings):
    settings.CHAT_PROXY_HEADERS, settings.CHAT_SIGNIN_ATTEMPTS = True, 2
    User.objects.create_user("alice", password="alice-secret-1")
    for n in range(2):
        assert login_from("10.0.0.2", "alice", "wrong", f"9.9.9.{n}, 203.0.113.9").status_code == 200
    assert login_from("10.0.0.2", "alice", "wrong", "9.9.9.200, 203.0.113.9").status_code == 429
    # another client of the proxy is another address
    assert login_from("10.0.0.2", "alice", "alice-secret-1", "203.0.113.10").status_code == 302


def test_one_guesser_behind_a_shared_address_does_not_lock_out_the_others_there(db, clean_redis, settings):
    settings.CHAT_SIGNIN_ATTEMPTS = 3
    User.objects.create_user("bob", password="bob-secret-1")
    for _ in range(10):
        login_from("192.0.2.50", "alice", "guess")
    assert login_from("192.0.2.50", "alice", "guess").status_code == 429
    assert login_from("192.0.2.50", "bob", "bob-secret-1").status_code == 302  # same NAT, another account


def test_one_account_guessed_from_many_addresses_is_throttled(db, clean_redis, settings):
    settings.CHAT_SIGNIN_ATTEMPTS_PER_USER = 4
    User.objects.create_user("alice", password="alice-secret-1")
    for n in range(4):
        assert login_from(f"198.51.100.{n}", "Alice", "guess").status_code == 200
    refused = login_from("198.51.100.99", "alice", "alice-secret-1")
    assert refused.status_code == 429 and "for this account" in refused.content.decode()


def test_one_address_trying_many_accounts_meets_the_looser_per_address_cap(db, clean_redis, settings):
    settings.CHAT_SIGNIN_ATTEMPTS_PER_ADDRESS = 5
    for n in range(5):
        assert login_from("192.0.2.60", f"user{n}", "guess").status_code == 200
    refused = login_from("192.0.2.60", "user99", "guess")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0


@pytest.mark.parametrize("proxy_headers, accepted", [(True, True), (False, False)])
async def test_behind_a_tls_proxy_a_socket_from_the_https_page_is_accepted(proxy_headers, accepted, clean_redis,
                                                                           settings):
    """daphne runs without --proxy-headers (it would trust the client's X-Forwarded-For entry), so the
    socket's scheme is plain ws behind the proxy: the origin check reads X-Forwarded-Proto instead."""
    from channels.testing import WebsocketCommunicator

    from chatsite.asgi import application

    settings.CHAT_PROXY_HEADERS = proxy_headers
    socket = WebsocketCommunicator(application, "/ws/chat/", headers=[
        (b"origin", b"https://localhost"), (b"host", b"localhost"), (b"x-forwarded-proto", b"https")])
    assert (await socket.connect())[0] is accepted
    if accepted:
        await socket.disconnect()
