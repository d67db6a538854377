"""What an upstream's failure shows users: its status and a generic reason, never its URL or its error
body (which can echo key fragments); the body goes to the worker's log, redacted. Public pages name an
upstream worker's device "upstream", not its URL. Against a real HTTP server on a thread."""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from inference import EngineError
from inference.upstream import UpstreamConfig, UpstreamEngine, redact

SECRET = "sk-live-Zq8d0c9f7e6b5a4b3c2d1"
ECHO = f"Incorrect API key provided: {SECRET[:14]}****. Authorization: Bearer {SECRET}"


class Upstream(BaseHTTPRequestHandler):
    answer = (400, "application/json", json.dumps({"error": {"message": ECHO}}))

    def do_GET(self):
        self._send(200, "application/json", json.dumps({"data": [{"id": "m"}]}))

    bodies = []  # what the engine sent, for the forwarding test

    def do_POST(self):
        Upstream.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._send(*self.answer)

    def _send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    Upstream.answer = (400, "application/json", json.dumps({"error": {"message": ECHO}}))


def engine_at(url):
    return UpstreamEngine(UpstreamConfig(url=url, api_key=SECRET, model="m", attempts=1, health_interval=60))


@pytest.mark.parametrize("status", [400, 401, 500])
def test_an_upstream_error_tells_users_its_status_and_a_reason_and_logs_its_body_redacted(upstream_url, status,
                                                                                          caplog):
    Upstream.answer = (status, "application/json", json.dumps({"error": {"message": ECHO}}))
    with caplog.at_level(logging.WARNING, logger="inference.upstream"), pytest.raises(EngineError) as failure:
        engine_at(upstream_url).reply([{"role": "user", "content": "hi"}])
    shown = str(failure.value)
    assert f"HTTP {status}" in shown and "upstream server" in shown
    assert "Incorrect" not in shown and SECRET[:10] not in shown and "127.0.0.1" not in shown
    logged = caplog.text
    assert "Incorrect API key provided" in logged and str(status) in logged  # the operator sees the body
    assert SECRET[:14] not in logged and "[redacted]" in logged


def test_an_error_event_in_the_stream_is_logged_redacted_and_users_get_a_generic_reason(upstream_url, caplog):
    Upstream.answer = (200, "text/event-stream", f"data: {json.dumps({'error': {'message': ECHO}})}\n\n")
    with caplog.at_level(logging.WARNING, logger="inference.upstream"), pytest.raises(EngineError) as failure:
        engine_at(upstream_url).reply([{"role": "user", "content": "hi"}])
    assert str(failure.value) == "the upstream server failed the reply"
    assert "Incorrect API key provided" in caplog.text and SECRET[:14] not in caplog.text


def test_key_like_strings_are_redacted_and_ordinary_words_are_not():
    text = redact(f"bad key {SECRET}; Bearer abc.def-ghi, token 0123456789abcdef0123456789abcdef, model m", "")
    assert SECRET[:8] not in text and "abc.def" not in text and "0123456789abcdef" not in text
    assert text.startswith("bad key [redacted]") and text.endswith(", model m")


@pytest.mark.django_db
def test_public_pages_do_not_show_an_upstream_workers_url(upstream_url, clean_redis):
    from chat.live_state import announce_worker
    from chat.worker import InferenceWorker

    worker = InferenceWorker(engine_at(upstream_url))
    assert worker.provenance["device"] == upstream_url  # staff still see where a reply came from
    async_to_sync(announce_worker)(worker.id, worker.info(), ttl=30)
    for path in ("/status", "/healthz"):
        body = Client().get(path).content.decode()
        assert "127.0.0.1" not in body and '"device": "upstream"' in body, body


def test_the_sampling_controls_a_reply_sets_are_forwarded_and_the_others_are_not(upstream_url):
    from inference import SamplingParams

    Upstream.bodies.clear()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params = SamplingParams(max_new_tokens=5, top_k=20, repetition_penalty=1.1, stop=("END",),
                            logit_bias={7: -100}, structure={"type": "json_schema", "schema": schema})
    stream = engine_at(upstream_url).stream_reply([{"role": "user", "content": "hi"}], params)
    with pytest.raises(EngineError):
        stream.text()
    body = Upstream.bodies[-1]
    assert (body["top_k"], body["repetition_penalty"], body["stop"], body["logit_bias"]) == (20, 1.1, ["END"], {"7": -100})
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert not {"min_p", "presence_penalty", "frequency_penalty", "min_tokens", "stop_token_ids"} & set(body)
