"""The review queue: filters that find what needs a look, and a reviewed mark with a note, the one
thing a reviewer can write while the admin is read-only."""
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from chat.models import Conversation
from tests.admin_support import conversation_with, reply, staff, user_says

pytestmark = pytest.mark.django_db

REVIEWER_RIGHTS = ("view_conversation", "view_message", "review_conversation")


@pytest.fixture(autouse=True)
def read_only_admin(settings):
    settings.CHAT_ADMIN_READ_ONLY = True


def review(client, conversation, **form):
    return client.post(f"/admin/chat/conversation/{conversation.pk}/review/", form)


def test_a_reviewer_marks_a_conversation_reviewed_with_a_note_while_the_admin_is_read_only():
    conversation = conversation_with(user_says("Hi"), reply("Hello!"), title="Greeting")
    updated = conversation.updated
    rita, client = staff("rita", *REVIEWER_RIGHTS)
    page = client.get(f"/admin/chat/conversation/{conversation.pk}/change/").content.decode()
    assert 'form="review-form"' in page and "Mark reviewed" in page

    response = review(client, conversation, note="Polite and correct.", reviewed="1")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/chat/conversation/{conversation.pk}/change/"
    conversation.refresh_from_db()
    assert conversation.reviewed_at is not None and conversation.reviewed_by == rita
    assert conversation.review_note == "Polite and correct."
    assert conversation.updated == updated  # a review is not the conversation's activity
    entry = LogEntry.objects.get(object_id=str(conversation.pk))
    assert entry.user == rita and "Polite and correct." in entry.get_change_message()

    page = client.get(f"/admin/chat/conversation/{conversation.pk}/change/").content.decode()
    assert "Reviewed by rita" in page and "Polite and correct." in page

    review(client, conversation, reviewed="0")
    conversation.refresh_from_db()
    assert conversation.reviewed_at is None


def test_nothing_else_can_be_written_while_the_admin_is_read_only():
    conversation = conversation_with(user_says("Hi"), reply("Hello!"), title="Greeting")
    _, client = staff("root", superuser=True)
    response = client.post(f"/admin/chat/conversation/{conversation.pk}/change/", {"title": "Changed"})
    assert response.status_code == 403
    assert client.post(f"/admin/chat/conversation/{conversation.pk}/delete/", {"post": "yes"}).status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Greeting"
    assert review(client, conversation, note="ok").status_code == 302  # a superuser may review


def test_staff_without_the_review_right_cannot_mark_a_conversation_reviewed():
    conversation = conversation_with(user_says("Hi"), reply("Hello!"))
    _, client = staff("victor", "view_conversation", "view_message")
    assert review(client, conversation, note="sneaky").status_code == 403
    conversation.refresh_from_db()
    assert conversation.reviewed_at is None and conversation.review_note == ""


def test_the_review_mark_is_only_changed_by_a_post():
    conversation = conversation_with(user_says("Hi"))
    _, client = staff("rita", *REVIEWER_RIGHTS)
    assert client.get(f"/admin/chat/conversation/{conversation.pk}/review/").status_code == 405
    assert review(client, Conversation(pk=999_999)).status_code == 404


def listed(client, query):
    page = client.get(f"/admin/chat/conversation/?{query}").content.decode()
    return {pk for pk in Conversation.objects.values_list("pk", flat=True)
            if f"/admin/chat/conversation/{pk}/change/" in page}


def test_the_queue_finds_thumbs_down_errors_stopped_replies_models_dates_and_words():
    disliked = conversation_with(user_says("Tell me about unicorns"), reply("No.", rating=-1), model_name="qwen-a")
    failed = conversation_with(user_says("Hi"), reply("", finish_reason="error", error_detail="boom"),
                               model_name="qwen-b")
    stopped = conversation_with(user_says("Count to 100"), reply("1 2 3", finish_reason="cancelled"),
                                model_name="qwen-a")
    done = conversation_with(user_says("Hi"), reply("Hello!", rating=1), model_name="qwen-a")
    done.mark_reviewed(None, "fine")
    old = conversation_with(user_says("Hi"), reply("Hello!"))
    Conversation.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=40))
    _, client = staff("rita", *REVIEWER_RIGHTS)

    assert listed(client, "rated=down") == {disliked.pk}
    assert listed(client, "ended=error") == {failed.pk}
    assert listed(client, "ended=stopped") == {stopped.pk}
    assert listed(client, "model_name=qwen-b") == {failed.pk}
    assert listed(client, "reviewed=yes") == {done.pk}
    assert listed(client, "reviewed=no") == {disliked.pk, failed.pk, stopped.pk, old.pk}
    assert listed(client, "q=unicorns") == {disliked.pk}
    since = urlencode({"created__gte": (timezone.now() - timedelta(days=7)).isoformat()})
    assert old.pk not in listed(client, since) and disliked.pk in listed(client, since)
    assert listed(client, "reviewed=no&ended=error&rated=down") == set()


def test_the_lists_filters_and_search_read_no_table_whole(db):
    """No SELECT DISTINCT over a table and no GROUP BY join of every message per page: the filters offer
    the newest rows' values, the message count is a per-row subquery, the search a subquery."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _, client = staff("root", superuser=True)
    for n in range(3):
        conversation_with(user_says(f"question {n}"), reply("answer", worker=f"worker-{n}", device="cpu",
                                                            model_name="m"), title=f"chat {n}")
    pages = {"/admin/chat/message/": None, "/admin/chat/conversation/": None,
             "/admin/chat/conversation/?q=question+1": None, "/admin/chat/message/?worker=worker-2": None}
    for path in pages:
        with CaptureQueriesContext(connection) as queries:
            pages[path] = client.get(path)
        assert pages[path].status_code == 200
        sql = [q["sql"].upper() for q in queries.captured_queries]
        assert not [q for q in sql if "DISTINCT" in q], path
        assert not [q for q in sql if "JOIN \"CHAT_MESSAGE\"" in q], path
    messages = pages["/admin/chat/message/"].content.decode()
    assert all(f"?worker=worker-{n}" in messages for n in range(3))  # the filter still offers each worker
    assert "chat 1" in pages["/admin/chat/conversation/?q=question+1"].content.decode()
    assert "chat 0" not in pages["/admin/chat/conversation/?q=question+1"].content.decode()
    assert pages["/admin/chat/message/?worker=worker-2"].context["cl"].result_count == 1
