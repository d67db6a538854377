from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from .models import GUEST_SESSION_KEY, Conversation


@receiver(user_logged_in)
def keep_guest_conversations(sender, request, user, **kwargs):
    """A guest who signs in keeps the conversations of their browser session."""
    key = request.session.get(GUEST_SESSION_KEY) if request is not None else None
    if key:
        Conversation.objects.filter(user__isnull=True, guest_key=key).update(user=user, guest_key="")
