"""Sign-in attempts are throttled on every sign-in form (the site's and the admin's), three ways:

- per (address, username): CHAT_SIGNIN_ATTEMPTS failed tries per 15 minutes (guessing one account's
  password from one place);
- per username: CHAT_SIGNIN_ATTEMPTS_PER_USER (guessing it from many addresses);
- per address: CHAT_SIGNIN_ATTEMPTS_PER_ADDRESS, much looser (one place trying many accounts), so
  that one attacker behind an office's or a carrier's shared address does not lock out everyone
  else there, who sign in under other names.

A failed attempt keeps its slots for 15 minutes; a successful one gives them back, so people who
mistype now and then never notice.
"""
import hashlib

from asgiref.sync import async_to_sync
from django.conf import settings

from .admission import http_client_address, too_many_requests
from .live_state import release_window_slot, take_window_slot

SIGN_IN_PATHS = {"/accounts/login/", "/admin/login/"}
WINDOW_SECONDS = 15 * 60


def _limits(request):
    """[(key, limit, what the refusal says)] for this attempt."""
    address = http_client_address(request)
    username = (request.POST.get("username") or "").strip().lower()[:150]
    user = hashlib.sha256(username.encode()).hexdigest()[:32]  # any characters, a bounded key
    return [
        (f"chat:signin:{address}:user:{user}", settings.CHAT_SIGNIN_ATTEMPTS, "for this account from your address"),
        (f"chat:signin:user:{user}", settings.CHAT_SIGNIN_ATTEMPTS_PER_USER, "for this account"),
        (f"chat:signin:{address}", settings.CHAT_SIGNIN_ATTEMPTS_PER_ADDRESS, "from your address"),
    ]


class SignInThrottleMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method != "POST" or request.path not in SIGN_IN_PATHS:
            return self.get_response(request)
        taken = []
        for key, limit, where in _limits(request):
            slot, retry_after = async_to_sync(take_window_slot)(key, limit, WINDOW_SECONDS)
            if retry_after:
                self._give_back(taken)  # a refused attempt counts nowhere
                return too_many_requests(f"Too many sign-in attempts {where}; try again in {retry_after} s.",
                                         retry_after)
            taken.append((key, slot))
        response = self.get_response(request)
        if response.status_code == 302:  # signed in: this attempt does not count
            self._give_back(taken)
        return response

    @staticmethod
    def _give_back(taken):
        for key, slot in taken:
            async_to_sync(release_window_slot)(key, slot)
