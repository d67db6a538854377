from django.conf import settings
from redis.exceptions import RedisError
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from .live_state import live_workers


@ensure_csrf_cookie
def index(request):
    if not request.session.session_key:
        request.session.save()  # guests get their identity before the socket opens
    return render(request, "chat/index.html", {"max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS})


@never_cache
async def healthz(request):
    """200 once a worker with a loaded model is announcing itself in Redis, 503 before."""
    try:
        workers = await live_workers()
    except RedisError as exc:
        return JsonResponse({"status": "unavailable", "detail": f"Redis unreachable: {exc}"}, status=503)
    if not workers:
        return JsonResponse({"status": "starting", "detail": "no inference worker is ready", "workers": []},
                            status=503)
    return JsonResponse({"status": "ok", "model": workers[0]["model"], "workers": workers})
