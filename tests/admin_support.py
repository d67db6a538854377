"""What the admin tests share: staff users with named rights, and conversations built in one call."""
from django.contrib.auth.models import Permission, User
from django.test import Client

from chat.models import Conversation, Message


def staff(username, *permissions, superuser=False):
    """A staff member holding `permissions` (codenames in the chat app) and a client signed in as them."""
    user = User.objects.create_user(username, password=f"{username}-secret-1", is_staff=True, is_superuser=superuser)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="chat", codename__in=permissions))
    client = Client()
    client.force_login(user)
    return user, client


def conversation_with(*messages, **fields):
    """A conversation holding `messages`: dicts of Message fields (a role is required)."""
    fields.setdefault("guest_key", "guest-1")
    conversation = Conversation.objects.create(**fields)
    for message in messages:
        if message["role"] == Message.Role.ASSISTANT:
            message = {"finish_reason": Message.FinishReason.STOP, **message}
        Message.objects.create(conversation=conversation, **message)
    return conversation


def user_says(content, **fields):
    return {"role": Message.Role.USER, "content": content, **fields}


def reply(content, **fields):
    return {"role": Message.Role.ASSISTANT, "content": content, **fields}


def transcript_html(page):
    """The transcript section of a conversation's admin page."""
    start = page.index('<section class="transcript"')
    return page[start:page.index("</section>", start)]
