"""Every bad frame gets an error frame, the socket stays open, and nobody sees another's data."""
import pytest
from channels.testing import WebsocketCommunicator

from tests.chat_support import ORIGIN, connect, new_guest, send_turn

pytestmark = pytest.mark.django_db(transaction=True)

BAD_FRAMES = [
    ("not json at all", "bad_json"),
    ('{"type": "send", "content": "x"', "bad_json"),
    ("[1, 2, 3]", "bad_frame"),
    ('"send"', "bad_frame"),
    ("{}", "unknown_type"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": 7}', "unknown_type"),
    ('{"type": "send", "conversation": null}', "bad_field"),
    ('{"type": "send", "conversation": null, "content": ""}', "bad_field"),
    ('{"type": "send", "conversation": null, "content": "   "}', "bad_field"),
    ('{"type": "send", "conversation": null, "content": 42}', "bad_field"),
    ('{"type": "send", "conversation": "1", "content": "hi"}', "bad_field"),
    ('{"type": "send", "conversation": true, "content": "hi"}', "bad_field"),
    ('{"type": "send", "conversation": -3, "content": "hi"}', "bad_field"),
    ('{"type": "send", "conversation": null, "content": "hi", "params": []}', "bad_field"),
    ('{"type": "send", "conversation": null, "content": "hi", "params": {"temperature": 9}}', "bad_params"),
    ('{"type": "send", "conversation": null, "content": "hi", "params": {"max_new_tokens": 0}}', "bad_params"),
    ('{"type": "send", "conversation": null, "content": "hi", "params": {"beam_width": 5}}', "bad_params"),
    ('{"type": "send", "conversation": null, "content": "hi", "params": {"system": 5}}', "bad_field"),
    ('{"type": "stop"}', "bad_field"),
    ('{"type": "history", "conversation": 1.5}', "bad_field"),
    ('{"type": "edit", "conversation": 1, "message": "x", "content": "y"}', "bad_field"),
    ('{"type": "rename", "conversation": 1, "title": ""}', "bad_field"),
    ('{"type": "rate", "message": 1, "rating": 5}', "bad_field"),
    ('{"type": "history", "conversation": 999999}', "not_found"),
    # Integers beyond the database's 64-bit ids, and a seed beyond torch's, at the edges of their types.
    ('{"type": "history", "conversation": 18446744073709551616}', "bad_field"),
    ('{"type": "history", "conversation": 9223372036854775808}', "bad_field"),
    ('{"type": "rate", "message": 9223372036854775808, "rating": 1}', "bad_field"),
    ('{"type": "send", "conversation": null, "content": "hi", "params": {"seed": 18446744073709551616}}',
     "bad_params"),
    ('{"type": "send", "conversation": null, "content": "hi", "params": {"seed": -1}}', "bad_params"),
]


@pytest.mark.parametrize("text, code", BAD_FRAMES)
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_open(text, code, clean_redis):
    socket = await connect(await new_guest())
    await socket.send_to(text_data=text)
    error = await socket.receive_json_from()
    assert error["type"] == "error" and error["code"] == code and error["detail"]
    await socket.send_json_to({"type": "list"})
    assert (await socket.receive_json_from())["type"] == "conversations"
    await socket.disconnect()


async def test_binary_frames_and_oversized_content_are_refused(clean_redis, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    socket = await connect(await new_guest())
    await socket.send_to(bytes_data=b"\x00\x01binary")
    assert (await socket.receive_json_from())["code"] == "bad_frame"
    await socket.send_json_to({"type": "send", "conversation": None, "content": "x" * 101})
    error = await socket.receive_json_from()
    assert error["code"] == "too_large" and "limit is 100" in error["detail"]
    await socket.send_json_to({"type": "list"})
    assert (await socket.receive_json_from())["items"] == []
    await socket.disconnect()


async def test_another_users_conversation_is_not_found_for_every_frame(worker):
    alice, bob = await connect(await new_guest()), await connect(await new_guest())
    frames = await send_turn(alice, "Alice's secret")
    conversation, user_message, reply = frames[0]["conversation"], frames[0]["message"], frames[-1]["message"]
    for frame in [
        {"type": "history", "conversation": conversation},
        {"type": "send", "conversation": conversation, "content": "let me in"},
        {"type": "stop", "conversation": conversation},
        {"type": "regenerate", "conversation": conversation},
        {"type": "edit", "conversation": conversation, "message": user_message, "content": "mine now"},
        {"type": "rename", "conversation": conversation, "title": "pwned"},
        {"type": "delete", "conversation": conversation},
        {"type": "rate", "message": reply, "rating": -1},
    ]:
        await bob.send_json_to(frame)
        answer = await bob.receive_json_from()
        assert answer["code"] == "not_found", frame
        assert "Alice" not in str(answer)
    await bob.send_json_to({"type": "list"})
    assert (await bob.receive_json_from())["items"] == []
    assert await alice.receive_nothing(timeout=0.3)  # nothing of Bob's leaked to Alice either
    await alice.send_json_to({"type": "history", "conversation": conversation})
    assert (await alice.receive_json_from())["messages"][0]["content"] == "Alice's secret"
    await alice.disconnect()
    await bob.disconnect()


async def test_a_socket_without_a_cookie_is_its_own_guest(clean_redis):
    socket = await connect()
    await socket.send_json_to({"type": "list"})
    assert (await socket.receive_json_from()) == {"type": "conversations", "items": []}
    await socket.disconnect()


async def test_guests_can_be_turned_off(clean_redis, settings):
    settings.CHAT_ALLOW_GUESTS = False
    socket = await connect(await new_guest())
    error = await socket.receive_json_from()
    assert error["code"] == "auth_required"
    assert (await socket.receive_output())["type"] == "websocket.close"
    # A consumer lives on after closing, until the client's disconnect: without this one it would be
    # left listening on the channel layer, and the test's event loop could not finish.
    await socket.disconnect()


async def test_a_socket_from_another_origin_is_refused(clean_redis):
    from chatsite.asgi import application

    socket = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await socket.connect()
    assert not connected
    socket = WebsocketCommunicator(application, "/ws/chat/", headers=[ORIGIN])
    assert (await socket.connect())[0]
    await socket.disconnect()


@pytest.mark.parametrize("origin, host, scheme, accepted", [
    (b"http://127.0.0.1:8000", b"127.0.0.1:8000", "ws", True),
    (b"http://127.0.0.1:9999", b"127.0.0.1:8000", "ws", False),  # another port of an allowed host
    (b"https://127.0.0.1:8000", b"127.0.0.1:8000", "ws", False),  # another scheme
    (b"http://localhost:8000", b"127.0.0.1:8000", "ws", False),  # another allowed host
    (b"https://localhost", b"localhost", "wss", True),
    (b"http://localhost", b"localhost", "wss", False),
])
async def test_a_socket_is_accepted_only_from_the_sites_own_scheme_host_and_port(origin, host, scheme, accepted,
                                                                                  clean_redis):
    from chatsite.asgi import application

    socket = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"origin", origin), (b"host", host)])
    socket.scope["scheme"] = scheme
    assert (await socket.connect())[0] is accepted
    if accepted:
        await socket.disconnect()
