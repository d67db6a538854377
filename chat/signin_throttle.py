"""Sign-in attempts are throttled per client address, on every sign-in form (the site's and the admin's).

A failed attempt keeps its slot for 15 minutes; a successful one gives it back, so people who
mistype now and then never notice, while guessing passwords costs CHAT_SIGNIN_ATTEMPTS tries
per quarter hour.
"""
from asgiref.sync import async_to_sync
from django.conf import settings

from .admission import http_client_address, too_many_requests
from .live_state import release_window_slot, take_window_slot

SIGN_IN_PATHS = {"/accounts/login/", "/admin/login/"}
WINDOW_SECONDS = 15 * 60


class SignInThrottleMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method != "POST" or request.path not in SIGN_IN_PATHS:
            return self.get_response(request)
        key = f"chat:signin:{http_client_address(request)}"
        slot, retry_after = async_to_sync(take_window_slot)(key, settings.CHAT_SIGNIN_ATTEMPTS, WINDOW_SECONDS)
        if retry_after:
            return too_many_requests(f"Too many sign-in attempts from your address; try again in {retry_after} s.",
                                     retry_after)
        response = self.get_response(request)
        if response.status_code == 302:  # signed in: this attempt does not count
            async_to_sync(release_window_slot)(key, slot)
        return response
