from asgiref.sync import async_to_sync
from django.conf import settings
from redis.exceptions import RedisError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from inference.sampling import SamplingParams

from .live_state import live_workers, served_models
from .admission import existing_guest, guest_quota_wait, guests_refused_detail, http_client_address


@ensure_csrf_cookie
def index(request):
    """The chat page. A view makes no guest identity (crawlers, link previews and health checks view
    it too), only a session, so that the browser has the cookie its socket will name the guest
    in: the socket makes the identity at the visitor's first act (chat.consumers). A visitor whose
    address may make no more guests now gets the page all the same, as a 429 that says so, with a
    sign-in link."""
    context, retry_after = _page_limits(), 0
    if settings.CHAT_ALLOW_GUESTS and not request.user.is_authenticated and existing_guest(request.session) is None:
        request.session.setdefault("chat_visitor", True)  # the session is kept, and its cookie set
        try:
            retry_after = async_to_sync(guest_quota_wait)(http_client_address(request))
        except RedisError:  # the page works without Redis; its first act will say what is wrong
            retry_after = 0
        if retry_after:
            context["refused"] = guests_refused_detail()
    response = render(request, "chat/index.html", context, status=429 if retry_after else 200)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def _page_limits():
    """What the page needs to know of the server's limits and defaults (it sends only the params
    the user set; the server fills in the rest: the default model's own sampling, where its worker
    announces one)."""
    sampling = {**SamplingParams().as_dict(), **_model_sampling()}
    return {
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "default_max_new_tokens": settings.CHAT_MAX_NEW_TOKENS,
        "max_new_tokens_limit": settings.CHAT_MAX_NEW_TOKENS_LIMIT,
        "default_temperature": sampling["temperature"],
        "default_top_p": sampling["top_p"],
        "default_top_k": sampling["top_k"],
        "default_min_p": sampling["min_p"],
        "default_repetition_penalty": sampling["repetition_penalty"],
        "default_system_prompt": settings.CHAT_DEFAULT_SYSTEM_PROMPT,
        "context_window": settings.CHAT_CONTEXT_WINDOW,
        "max_attachment_chars": settings.CHAT_MAX_ATTACHMENT_CHARS,
        "max_attachments": settings.CHAT_MAX_ATTACHMENTS,
        "max_turns_in_flight": settings.CHAT_MAX_TURNS_IN_FLIGHT,
    }


def _model_sampling():
    """The sampling defaults of the default model (the first served), as its worker announces them."""
    try:
        workers = async_to_sync(live_workers)()
    except RedisError:
        return {}
    models = served_models(workers)
    return next((w.get("sampling") or {} for w in workers if models and w.get("model") == models[0]), {})


async def _health():
    """(ready, body): ready once a worker with a loaded model announces itself in Redis. `models` are
    the models the live workers serve (a new conversation may choose one); `model` is the default."""
    try:
        workers = await live_workers()
    except RedisError as exc:
        return False, {"status": "unavailable", "detail": f"Redis unreachable: {exc}", "workers": []}
    if not workers:
        return False, {"status": "starting", "detail": "no inference worker is ready", "workers": []}
    ready = [w for w in workers if w.get("ready", True)]
    if not ready:  # alive but unable to generate (its engine is restarting) never looks healthy
        return False, {"status": "unhealthy", "detail": "no inference worker can generate now; "
                       "their engines are restarting", "workers": workers}
    models = served_models(workers)
    return True, {"status": "ok", "model": models[0] if models else ready[0]["model"], "models": models,
                  "workers": workers}


@never_cache
async def healthz(request):
    """For probes and load balancers: 200 when a worker is ready, 503 before."""
    ready, body = await _health()
    return JsonResponse(body, status=200 if ready else 503)


@never_cache
async def status(request):
    """The same facts for the page, always 200 (a 503 would be logged as an error in its console)."""
    ready, body = await _health()
    return JsonResponse({**body, "ready": ready})


@never_cache
async def metrics_view(request):
    """Prometheus exposition: this web process's counters plus the queue and every worker."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from . import metrics, request_queue

    try:
        depth, workers = await request_queue.depth(), await live_workers()
    except RedisError:
        depth, workers = (0, 0), []
    return HttpResponse(metrics.exposition(depth, workers), content_type=CONTENT_TYPE_LATEST)
