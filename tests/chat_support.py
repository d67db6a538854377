"""Shared pieces for the consumer tests: named users, sockets, HTTP calls, and an in-process worker."""
import asyncio
import json
import threading
import time
import uuid

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from chat.live_state import live_workers
from chat.worker import InferenceWorker
from inference import Engine

ORIGIN = (b"origin", b"http://127.0.0.1")


class PacedModel:
    """The real model, paced like a slow device so a test can act mid-reply, and able to hang."""

    def __init__(self, model):
        self._model = model
        self.delay = 0.0
        self.stalled = threading.Event()

    def __call__(self, *args, **kwargs):
        time.sleep(self.delay)
        while self.stalled.is_set():  # hung like a stuck GPU, until the test releases it
            time.sleep(0.05)
        return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


class RecordingEngine(Engine):
    """The tiny real model, remembering every conversation it was asked to continue."""

    def __init__(self, engine, token_delay=0.0, config=None):
        super().__init__(PacedModel(engine.model), engine.tokenizer, config or engine.config, name="tiny-test-model")
        self.model.delay = token_delay
        self.conversations = []
        self.streams = []

    def stream_reply(self, messages, params=None, system=None):
        self.conversations.append(list(messages))
        stream = super().stream_reply(messages, params, system)
        self.streams.append(stream)
        return stream


async def new_guest(identified=False):
    """A guest's session key, as the chat page would have set in the cookie; `identified`: the guest
    identity already made (as a first send or an import does), so every socket opened on it speaks
    for the guest from its connect."""
    from chat.models import GUEST_SESSION_KEY

    session = SessionStore()
    if identified:
        session[GUEST_SESSION_KEY] = uuid.uuid4().hex
    await sync_to_async(session.create)()
    return session.session_key


async def owner_key_of(session_key):
    """The Redis/group namespace of the guest whose browser holds this session."""
    from chat.models import GUEST_SESSION_KEY

    session = SessionStore(session_key)
    return "g" + await sync_to_async(lambda: session[GUEST_SESSION_KEY])()


async def connect(session_key=None, headers=None):
    from chatsite.asgi import application

    headers = headers if headers is not None else [ORIGIN]
    if session_key:
        headers = headers + [(b"cookie", f"sessionid={session_key}".encode())]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator, frame_type, timeout=20):
    """Every frame up to and including the first of `frame_type`."""
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await communicator.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        frames.append(frame)
        if frame["type"] == frame_type:
            return frames


async def send_turn(communicator, content, conversation=None, **params):
    """Send a turn and collect its frames through `done`."""
    params.setdefault("max_new_tokens", 8)
    params.setdefault("temperature", 0)
    await communicator.send_json_to({"type": "send", "conversation": conversation, "content": content,
                                     "params": params})
    return await receive_until(communicator, "done")


def text_of(frames):
    return "".join(f["text"] for f in frames if f["type"] == "token")


async def start_worker(engine):
    worker = InferenceWorker(engine)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(100):
        if await live_workers():
            break
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError("the worker did not announce itself")
    return worker, stop, task


class HttpResponse:
    def __init__(self, status, headers, body):
        self.status_code, self.headers, self.content = status, headers, body

    def json(self):
        return json.loads(self.content)


async def http(method, path, body=None, headers=None, client=("127.0.0.1", 40000), gone=None, raw_body=None):
    """One HTTP request through the site's real ASGI application (as daphne serves it: each request
    in its own thread-sensitive context, so an in-process worker's ORM calls are not held up by it).
    Setting the event `gone` makes the client hang up (http.disconnect) before the response ends;
    `raw_body` is sent as it is instead of `body` as JSON."""
    from chatsite.asgi import application

    payload = raw_body if raw_body is not None else json.dumps(body).encode() if body is not None else b""
    raw_headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": raw_headers, "client": client, "server": ("127.0.0.1", 8000)}
    request_sent, response = False, {"headers": {}, "body": b""}

    async def receive():
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await (gone or asyncio.Event()).wait()  # the client stays until the response ends, or hangs up
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
            response["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    await application(scope, receive, send)
    return HttpResponse(response.get("status"), response["headers"], response["body"])  # no status: hung up
