"""Read-only share links: the owner creates one for a conversation (an unguessable token) and may
revoke it; anyone holding the token sees the conversation as it was when shared (a snapshot of its
active branch: later turns are not shown until the owner shares again, which updates it;
chat.conversation_views)."""
from django.db import transaction
from django.utils import timezone

from .models import ShareLink
from .turns import get_owned


@transaction.atomic
def share(owner, conversation_id):
    """The conversation's live share link, created if it has none (one link per conversation at a time),
    showing the conversation as it is now: sharing again updates what the link shows."""
    conversation = get_owned(owner, conversation_id)
    link = ShareLink.objects.active().filter(conversation=conversation).first()
    snapshot = ShareLink.snapshot_of(conversation)
    if link is None:
        return ShareLink.objects.create(conversation=conversation, token=ShareLink.new_token(), snapshot=snapshot)
    link.snapshot = snapshot
    link.save(update_fields=["snapshot"])
    return link


def current_link(owner, conversation_id):
    """The conversation's live share link, or None."""
    return ShareLink.objects.active().filter(conversation=get_owned(owner, conversation_id)).first()


def revoke(owner, conversation_id):
    """Revoke every live link of the conversation; returns how many there were."""
    conversation = get_owned(owner, conversation_id)
    return ShareLink.objects.active().filter(conversation=conversation).update(revoked_at=timezone.now())


def shared_link(token):
    """The live link of this token, or None (unknown or revoked)."""
    if not isinstance(token, str) or not token or len(token) > 64:
        return None
    return ShareLink.objects.active().filter(token=token).select_related("conversation").first()
