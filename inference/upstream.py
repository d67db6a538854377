"""Replies streamed from an OpenAI-compatible server instead of a model loaded here.

vLLM, TGI, llama.cpp's server, `transformers serve` and this project's own `/v1` all speak
`POST /v1/chat/completions` with `stream: true`. UpstreamEngine has the Engine's surface
(`stream_reply`, `params`, `name`, `loop.healthy()`), so a worker serves the same queue,
history, limits and admin with it. Each reply is one streaming request, read on a thread of
its own (the work is waiting on the network). Stopping a reply closes its connection, which
vLLM and TGI take as an abort. Nothing is retried once text has been streamed; before that,
an unreachable, overloaded (429) or failing (5xx) upstream is tried again a few times.

What reaches users (a reply's error detail, an API 502) names the upstream's status and a generic
reason, never its URL or its error body: a body can echo the request, key fragments included. The
body goes to the worker's log, with anything key-like redacted (`redact`).
"""
import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass

import httpx

from .errors import EngineError
from .generation import ReplyStream
from .sampling import SamplingParams, reply_request

log = logging.getLogger(__name__)
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# Bearer tokens, sk-/key- style keys, and any long run of key characters (hex, base64, JWT parts).
_KEY_LIKE = re.compile(r"""(?i)(bearer\s+)[^\s"',;]+|\b(?:sk|pk|rk|key|api[-_]?key|token)[-_][A-Za-z0-9_\-.]{6,}"""
                       r"""|[A-Za-z0-9_\-+/=.]{24,}""")


def redact(text, secret=""):
    """`text` with the worker's own key and anything that looks like a key replaced by [redacted]."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


def _reason(status):
    """A generic reason for an upstream's HTTP status, for users."""
    if status in (401, 403):
        return "refused this worker's API key"
    if status == 429:
        return "is overloaded"
    if status >= 500:
        return "failed"
    return "refused the request"


@dataclass(frozen=True)
class UpstreamConfig:
    url: str  # the server's OpenAI base URL, e.g. http://gpu-box:8000/v1
    api_key: str = ""
    model: str = ""  # "" takes the first model the server lists
    max_batch_size: int = 64  # replies this worker has in flight upstream at once
    max_new_tokens_limit: int = 4096
    connect_timeout: float = 5.0
    stall_timeout: float = 60.0  # longest wait for the next piece of a reply
    attempts: int = 3  # tries while nothing has been streamed
    health_interval: float = 5.0


class UpstreamEngine:
    def __init__(self, config):
        self.config = config
        self.url = config.url.rstrip("/")
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(
            config.stall_timeout, connect=config.connect_timeout))
        self.model = config.model or self._first_model()
        self.name = self.model
        self.device, self.dtype = self.url, "upstream"
        self.precision = "upstream"  # the URL is kept for staff (a reply's provenance)
        self.public_device = "upstream"  # what unauthenticated pages (/status, /healthz) show instead
        self.loop = UpstreamHealth(self)

    def params(self, **values):
        return SamplingParams.from_dict(values, self.config.max_new_tokens_limit)

    def stream_reply(self, messages, params=None, system=None):
        messages, params = reply_request(messages, params, self.config.max_new_tokens_limit)
        body = {"model": self.model, "stream": True, "stream_options": {"include_usage": True},
                "messages": ([{"role": "system", "content": system}] if system else []) + list(messages),
                "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_new_tokens}
        if params.seed is not None:
            body["seed"] = params.seed
        body.update(_set_controls(params))
        if messages and messages[-1]["role"] == "assistant":  # continue that reply (vLLM's and SGLang's fields)
            body.update(continue_final_message=True, add_generation_prompt=False)
        stream = ReplyStream([], params, read_timeout=self.config.stall_timeout + 5)
        threading.Thread(target=_UpstreamReply(self, stream, body).run, name="upstream-reply", daemon=True).start()
        return stream

    def reply(self, messages, params=None, system=None):
        return self.stream_reply(messages, params, system).text()

    def models(self):
        response = self.client.get("/models", timeout=self.config.connect_timeout)
        response.raise_for_status()
        return [item["id"] for item in response.json().get("data", [])]

    def _first_model(self):
        try:
            names = self.models()
        except (httpx.HTTPError, ValueError) as exc:
            raise EngineError(f"the upstream server at {self.url} does not answer GET /models ({exc}); "
                              "set its model name to start without it") from exc
        if not names:
            raise EngineError(f"the upstream server at {self.url} lists no model")
        return names[0]

    def __repr__(self):
        return f"<UpstreamEngine {self.model} at {self.url}>"


class _UpstreamReply:
    """One reply's request: sends it (again, while nothing was streamed), reads the server-sent
    events into the ReplyStream, and closes the connection when the reply is stopped."""

    def __init__(self, engine, stream, body):
        self.engine, self.stream, self.body = engine, stream, body
        self.response = None
        self.streamed = False
        stream.on_cancel(self._close)

    def run(self):
        stream = self.stream
        try:
            for attempt in range(self.engine.config.attempts):
                try:
                    return self._once()
                except _Retryable as exc:
                    if stream.cancelled:
                        return stream.finish("cancelled")
                    if self.streamed or attempt == self.engine.config.attempts - 1:
                        raise EngineError(str(exc)) from None
                    log.warning("upstream %s: %s; trying again", self.engine.url, exc)  # the log may name it
                    time.sleep(1.0 * (attempt + 1))
        except Exception as exc:  # noqa: BLE001 - whatever went wrong ends this reply, with a reason
            if stream.cancelled:  # whatever broke after a stop (the closed connection), it was stopped
                stream.finish("cancelled")
            elif isinstance(exc, EngineError):
                stream.fail(exc)
            else:
                log.exception("upstream reply failed")
                stream.fail(EngineError(f"the upstream request failed ({type(exc).__name__})"))

    def _once(self):
        engine, stream = self.engine, self.stream
        request = engine.client.build_request("POST", "/chat/completions", json=self.body)
        try:
            self.response = engine.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _Retryable(f"the upstream server does not answer ({type(exc).__name__})") from exc
        if stream.cancelled:  # stopped while connecting
            self.response.close()
            return stream.finish("cancelled")
        try:
            self._check_status()
            finish_reason = self._read_events()
        except httpx.ReadTimeout:
            raise EngineError(f"the upstream server sent nothing for {engine.config.stall_timeout:g} s") from None
        except httpx.TransportError as exc:
            if stream.cancelled:
                return stream.finish("cancelled")
            if self.streamed:
                raise EngineError(f"the upstream server cut the stream mid-reply ({type(exc).__name__})") from None
            raise _Retryable(f"the upstream server cut the connection ({type(exc).__name__})") from exc
        finally:
            self.response.close()
        if stream.cancelled:
            return stream.finish("cancelled")
        if finish_reason is None:
            raise EngineError("the upstream server ended the stream without finishing the reply")
        stream.finish("length" if finish_reason == "length" else "stop")

    def _check_status(self):
        status = self.response.status_code
        if status == 200:
            return
        self.response.read()
        log.warning("upstream %s answered %s: %s", self.engine.url, status,
                    redact(self.response.text[:500], self.engine.config.api_key))
        message = f"the upstream server {_reason(status)} (HTTP {status})"
        if status in RETRYABLE_STATUS:
            raise _Retryable(message)
        raise EngineError(message)

    def _read_events(self):
        """Pieces into the stream; returns the finish reason (None if the stream ended without one)."""
        finish_reason = None
        for line in self.response.iter_lines():
            if self.stream.cancelled:
                return None
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("error"):
                log.warning("upstream %s failed a reply: %s", self.engine.url,
                            redact(json.dumps(event["error"])[:500], self.engine.config.api_key))
                raise EngineError("the upstream server failed the reply")
            if event.get("usage"):
                self.stream.prompt_tokens = event["usage"].get("prompt_tokens", 0)
                self.stream.completion_tokens = event["usage"].get("completion_tokens", 0)
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    self.streamed = True
                    self.stream.completion_tokens += 1  # one token per chunk, until the usage says
                    self.stream.push(piece)
                finish_reason = choice.get("finish_reason") or finish_reason
        return finish_reason

    def _close(self):
        """Called on the stopping thread. Shutting the socket down (rather than closing the response
        from here) wakes the reading thread at once even while the server is silent, and the server
        sees its client go away and aborts the request; the reading thread closes the response."""
        response = self.response
        network = response.extensions.get("network_stream") if response is not None else None
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is None:
            if response is not None:
                response.close()
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed: the reply ended on its own
            pass


class _Retryable(Exception):
    pass


class UpstreamHealth:
    """The worker asks `healthy()` before taking turns (and /healthz follows): the upstream is
    healthy while GET /models answers. Probed on a thread every `health_interval` seconds."""

    def __init__(self, engine):
        self.engine = engine
        self._healthy, self.problem = True, ""
        self._healthy = self._probe()
        if not self._healthy:
            log.warning("upstream %s is not answering (%s)", engine.url, self.problem)
        self._wake = threading.Event()
        threading.Thread(target=self._probe_forever, name="upstream-health", daemon=True).start()

    def healthy(self):
        return self._healthy

    def restart(self):
        """Probe again now (the worker calls this while the upstream is unhealthy)."""
        self._wake.set()
        return False

    def close(self):
        self.engine.client.close()

    def _probe(self):
        try:
            self.engine.models()
            self.problem = ""
            return True
        except (httpx.HTTPError, ValueError) as exc:  # a refused key shows here as 401/403
            self.problem = redact(str(exc).splitlines()[0][:200], self.engine.config.api_key) or type(exc).__name__
            return False

    def _probe_forever(self):
        while True:
            self._wake.wait(self.engine.config.health_interval)
            self._wake.clear()
            healthy = self._probe()
            if healthy != self._healthy:
                log.warning("upstream %s is %s", self.engine.url,
                            "answering again" if healthy else f"not answering ({self.problem})")
            self._healthy = healthy


# The sampling controls an upstream gets when a reply sets them (OpenAI's names, vLLM's extras); one
# left at its default is not sent, so a server without the extras (OpenAI itself) is not refused.
FORWARDED = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias",
             "min_tokens", "stop_token_ids")


def _set_controls(params):
    defaults, body = SamplingParams(), {}
    for name in FORWARDED:
        value = getattr(params, name)
        if value != getattr(defaults, name):
            body[name] = list(value) if isinstance(value, tuple) else value
    if params.stop:
        body["stop"] = list(params.stop)
    if params.logprobs:  # its answer's logprobs have no way back through this worker yet: refused, not lost
        raise EngineError("an upstream worker does not pass on logprobs")
    if params.structure is not None:
        if params.structure["type"] == "tool_calls":
            raise EngineError("an upstream worker cannot force tool calls")
        body["response_format"] = ({"type": "json_object"} if params.structure["type"] == "json_object" else
                                   {"type": "json_schema", "json_schema": {"name": "reply", "strict": True,
                                                                           "schema": params.structure["schema"]}})
    return body
