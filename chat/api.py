"""The HTTP API: OpenAI-compatible chat completions and models, and the simple /generate.

A request's `model` picks which workers serve it (each serves one model; GET /v1/models lists them).

Served by the same workers through the same queue as the WebSocket, and stored as
conversations like any other, so reviewers see them in the admin.
"""
import asyncio
import json
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from redis.exceptions import RedisError

from inference.sampling import InvalidParameters

from . import admission, api_fields, api_limits, metrics, turns
from .lifecycle import NO_WORKER, ReplyFollower, dispatch, finish_reply, request_stop, stored_reply
from .live_state import LiveReply, live_workers, served_models
from .models import ApiKey, Message, Owner
from .turns import ProtocolError

ROLES = {"system", "user", "assistant"}
MAX_MESSAGES = 500  # per request: the prompt keeps the newest that fit the context window anyway
DEFAULT_MODEL = "default"  # a request's `model` for "whichever the service serves by default"
MAX_MODEL_CHARS = 200  # a conversation's model_name column


class ApiError(Exception):
    def __init__(self, status, message, kind="invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    retry_after = None

    def response(self):
        metrics.ERRORS.labels(self.code or self.kind).inc()
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        response = JsonResponse({"error": error}, status=self.status)
        if self.retry_after:
            response["Retry-After"] = str(self.retry_after)
        return response


def _api_key_owner(request):
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    key = ApiKey.objects.filter(key_hash=ApiKey.hash(header.removeprefix("Bearer ").strip()), active=True,
                                user__is_active=True).first()
    if key is None:
        raise ApiError(401, "the API key is not valid or has been revoked", code="invalid_api_key")
    ApiKey.objects.filter(pk=key.pk).update(last_used=timezone.now())
    return Owner(user_id=key.user_id, api_key=key)


@sync_to_async
def _signed_in_owner(request, guests_allowed):
    """The owner named by an API key, or the signed-in user; None for a guest (if guests may)."""
    owner = _api_key_owner(request)
    if owner is not None:
        return owner
    if not (guests_allowed and settings.CHAT_ALLOW_GUESTS):
        raise ApiError(401, "send an API key: Authorization: Bearer <key> (staff create keys in the admin)",
                       code="invalid_api_key")
    if request.user.is_authenticated:
        return Owner(user_id=request.user.pk)
    return None


async def _owner(request, guests_allowed):
    owner = await _signed_in_owner(request, guests_allowed)
    if owner is None:
        try:
            owner = Owner(guest_key=await admission.admit_guest(request.session, admission.http_client_address(request)))
        except ProtocolError as exc:
            raise _refusal(exc) from None
    return owner


# What each refusal of chat.admission is over HTTP.
REFUSAL_STATUS = {"busy": 429, "rate_limited": 429, "too_many_guests": 429, "too_many_conversations": 403,
                  "overloaded": 503, "not_found": 404}


def _refusal(exc):
    error = ApiError(REFUSAL_STATUS.get(exc.code, 400), exc.detail,
                     kind="server_error" if exc.code == "overloaded" else "invalid_request_error", code=exc.code)
    error.retry_after = exc.extra.get("retry_after")
    return error


def _json_body(request):
    try:
        body = json.loads(request.body)
    except ValueError:
        raise ApiError(400, "the body must be JSON") from None
    except RecursionError:  # thousands of nested [ or {: the parser gives up
        raise ApiError(400, "the body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _messages(body):
    """The request's messages, checked. With `continue_final_message` (vLLM's and SGLang's field) the
    last one may be the assistant's, after the user's: a reply to go on from."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list")
    if len(raw) > MAX_MESSAGES:
        raise ApiError(400, f"at most {MAX_MESSAGES} messages per request", code="too_large")
    messages = []
    for item in raw:
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise ApiError(400, f"each message needs a role in {sorted(ROLES)}")
        content = item.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise ApiError(400, "each message needs text content")
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise ApiError(400, f"a message has {len(content)} characters; the limit is "
                           f"{settings.CHAT_MAX_MESSAGE_CHARS} (CHAT_MAX_MESSAGE_CHARS)", code="too_large")
        messages.append({"role": item["role"], "content": content})
    continuing = body.get("continue_final_message") is True
    if continuing and ([m["role"] for m in messages[-2:]] != ["user", "assistant"] or not messages[-1]["content"]):
        raise ApiError(400, "with continue_final_message the last message must be the assistant's (not empty), "
                       "after the user's", param="continue_final_message")
    if not continuing and messages[-1]["role"] != "user":
        raise ApiError(400, "the last message must be from the user (or set continue_final_message to go on "
                       "from an assistant message)")
    return messages


def _params(body, system):
    """The reply's params from the request's fields (chat.api_fields: each used, or refused by name)."""
    if system is not None and len(system) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ApiError(400, f"the system prompt has {len(system)} characters; the limit is "
                       f"{settings.CHAT_MAX_MESSAGE_CHARS} (CHAT_MAX_MESSAGE_CHARS)", code="too_large")
    try:
        api_fields.choices_count(body)
        values = api_fields.sampling_values(body)
        return turns.reply_params(values, system)
    except api_fields.FieldError as exc:
        raise ApiError(400, exc.message, param=exc.param) from None
    except (InvalidParameters, TypeError) as exc:
        raise ApiError(400, str(exc)) from None


async def _model(body):
    """The model a request goes to: its `model` when a live worker serves it, the default one (the
    first served) when it names none or "default"; another model is refused as OpenAI refuses one it
    does not have (404, model_not_found). With no worker at all, the turn ends with no_worker."""
    requested = body.get("model")
    if requested is not None and not isinstance(requested, str):
        raise ApiError(400, "'model' must be a string", param="model")
    if requested is not None and len(requested) > MAX_MODEL_CHARS:
        raise ApiError(400, f"'model' has {len(requested)} characters; a model's name has at most {MAX_MODEL_CHARS}",
                       param="model")
    served = served_models(await live_workers())
    if requested in (None, "", DEFAULT_MODEL):
        return served[0] if served else None
    if served and requested not in served:
        raise ApiError(404, f"the model {requested!r} does not exist or no worker serves it now; GET /v1/models "
                       f"lists those served", code="model_not_found", param="model")
    return requested


async def _start(request, owner, messages, params, kind, model=None, choices=1):
    """Admit and store the conversation, and queue its reply (OpenAI's n: `choices` replies, versions of
    one another) to `model`; returns (conversation, replies, a ReplyFollower of them, subscribed before
    they were queued so that it misses none of their tokens)."""
    try:
        conversation, replies = await admission.admit_turn(owner, admission.http_client_address(request), None,
                                                           turns.start_api_turn, messages, params, choices)
    except ProtocolError as exc:
        raise _refusal(exc) from None
    except api_limits.KeyRateLimited as exc:
        error = ApiError(429, exc.detail, kind=exc.kind, code="rate_limit_exceeded")
        error.retry_after = exc.retry_after
        raise error from None
    metrics.TURNS.labels(kind).inc()
    follower = await ReplyFollower(owner.key).subscribe()
    try:
        for position, reply in enumerate(replies):
            if reply.content:  # it goes on from an assistant message: its text so far, for the chat's history
                await LiveReply(reply.pk).start_from(reply.content, settings.CHAT_REQUEST_TIMEOUT)
            if await dispatch(owner.key, conversation.pk, reply, model) is None:  # it ended, as no_worker
                detail = (await stored_reply(reply.pk)).error_detail or NO_WORKER  # names the model nobody serves
                for other in replies[position + 1:]:  # the other choices end the same way
                    await finish_reply(other.pk, content=other.content, finish_reason=Message.FinishReason.ERROR,
                                       error_detail=detail)
                raise ApiError(503, detail, kind="server_error", code="no_worker")
    except BaseException:
        await follower.close()
        raise
    return conversation, replies, follower


async def _with_rate_limits(response, owner):
    """A key's answers, whatever they are, carry its x-ratelimit-* headers (as OpenAI's do)."""
    if owner is not None and owner.api_key is not None:
        try:
            headers = await api_limits.headers(owner.api_key)
        except (RedisError, OSError):  # the answer matters more than its headers
            headers = {}
        for name, value in headers.items():
            response[name] = value
    return response


async def _collect(follower, replies):
    """[(text, done)] of each reply, in order, once every one has ended."""
    texts, dones = {reply.pk: [] for reply in replies}, {}
    try:
        async for event in follower.events(*texts):
            if event["type"] == "chat.token":
                texts[event["message"]].append(event["text"])
            elif event["type"] == "chat.done":
                dones[event["message"]] = event
    except asyncio.CancelledError:  # Django cancels the view when its client goes away: stop generating
        for reply in replies:
            await asyncio.shield(request_stop(reply.pk))
        raise
    for done in dones.values():
        if done["finish_reason"] == "error":
            raise ApiError(502, done.get("detail", "the reply failed"), kind="server_error", code="generation_failed")
    return [("".join(texts[reply.pk]), dones[reply.pk]) for reply in replies]


@csrf_exempt
@require_POST
async def chat_completions(request):
    owner = None
    try:
        body = _json_body(request)
        owner = await _owner(request, guests_allowed=False)
        messages = _messages(body)
        system = "\n".join(m["content"] for m in messages if m["role"] == "system") or None
        params = _params(body, system)
        model = await _model(body)
        conversation, replies, follower = await _start(request, owner, messages, params, "api", model,
                                                       api_fields.choices_count(body))
        created, completion_id = int(time.time()), f"chatcmpl-{replies[0].pk}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _sse(follower, replies, completion_id, created, model, include_usage)
            response = StreamingHttpResponse(events, content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            return await _with_rate_limits(response, owner)
        answers = await _collect(follower, replies)
    except ApiError as exc:
        return await _with_rate_limits(exc.response(), owner)
    return await _with_rate_limits(JsonResponse({
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": index, "message": {"role": "assistant", "content": text},
                     "logprobs": _logprobs(done), "finish_reason": _finish(done["finish_reason"])}
                    for index, (text, done) in enumerate(answers)],
        "usage": _usage(*[done for _, done in answers]),
    }), owner)


async def _sse(follower, replies, completion_id, created, model, include_usage):
    def chunk(index, delta, finish_reason=None, logprobs=None):
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}
        return f"data: {json.dumps(payload)}\n\n"

    index_of = {reply.pk: index for index, reply in enumerate(replies)}
    dones = []
    try:
        for index in index_of.values():
            yield chunk(index, {"role": "assistant", "content": ""})
        async for event in follower.events(*index_of):
            index = index_of[event["message"]]
            if event["type"] == "chat.token":
                yield chunk(index, {"content": event["text"]})
            elif event["type"] == "chat.done":
                dones.append(event)
                if event["finish_reason"] == "error":
                    error = {"message": event.get("detail", "the reply failed"), "type": "server_error"}
                    yield f"data: {json.dumps({'error': error})}\n\n"
                else:  # the reply's logprobs come whole, with its last chunk
                    yield chunk(index, {}, _finish(event["finish_reason"]), logprobs=_logprobs(event))
        if include_usage:
            yield f"data: {json.dumps({'id': completion_id, 'object': 'chat.completion.chunk', 'created': created, 'model': model, 'choices': [], 'usage': _usage(*dones)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        await follower.close()  # if the stream ended before its events did
        ended = {done["message"] for done in dones}
        for reply in replies:
            if reply.pk not in ended:  # the client went away: stop generating for nobody
                await request_stop(reply.pk)


def _finish(reason):
    return {"length": "length"}.get(reason, "stop")


def _logprobs(done):
    """OpenAI's choice.logprobs: the reply's tokens, where the request asked for logprobs (else null)."""
    return {"content": done["logprobs"]} if "logprobs" in done else None


def _usage(*dones):
    """OpenAI's usage of one call: its prompt once (the first choice's: the others read the same), the
    completion tokens of every choice, and the prompt tokens the engine reused from its cache."""
    usage = dict(dones[0]["usage"])
    cached = usage.pop("cached_tokens", None) or 0
    usage["completion_tokens"] = sum(done["usage"]["completion_tokens"] for done in dones)
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": cached}}


@require_GET
async def models(request):
    try:
        await _owner(request, guests_allowed=False)
    except ApiError as exc:
        return exc.response()
    workers = await live_workers()
    names = sorted({w["model"] for w in workers})
    return JsonResponse({"object": "list", "data": [
        {"id": name, "object": "model", "created": int(min(w["started"] for w in workers if w["model"] == name)),
         "owned_by": "chatsite"} for name in names]})


@csrf_exempt
@require_POST
async def generate(request):
    """The simple form: {"prompt": "..."} -> {"text": "..."} (an API key, or the session of a guest)."""
    owner = None
    try:
        if request.content_type != "application/json":
            raise ApiError(415, "send the body as application/json")
        body = _json_body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(400, "'prompt' must be a non-empty string")
        if len(prompt) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise ApiError(400, f"the prompt has {len(prompt)} characters; the limit is "
                           f"{settings.CHAT_MAX_MESSAGE_CHARS} (CHAT_MAX_MESSAGE_CHARS)", code="too_large")
        owner = await _owner(request, guests_allowed=True)
        chat_only = sorted(set(body) & {"messages", "stream", "stream_options", "continue_final_message", "n"})
        if chat_only:
            raise ApiError(400, f"{chat_only[0]} is a /v1/chat/completions field; /generate takes a prompt",
                           param=chat_only[0])
        fields = {name: value for name, value in body.items() if name not in ("prompt", "system")}
        params = _params(fields, body.get("system") if isinstance(body.get("system"), str) else None)
        _, replies, follower = await _start(request, owner, [{"role": "user", "content": prompt}], params,
                                            "generate", await _model(body))
        [(text, done)] = await _collect(follower, replies)
    except ApiError as exc:
        return await _with_rate_limits(exc.response(), owner)
    return await _with_rate_limits(
        JsonResponse({"text": text, "finish_reason": done["finish_reason"], "usage": _usage(done)}), owner)
