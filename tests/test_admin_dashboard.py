"""The admin's dashboard: the service's days from the database, drawn as SVG on the server."""
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from chat import dashboard
from tests.admin_support import conversation_with, reply, staff, user_says

pytestmark = pytest.mark.django_db


def days_ago(conversation, days):
    """Move a conversation's messages `days` back in time."""
    conversation.messages.update(created=timezone.now() - timedelta(days=days))


def test_the_figures_count_turns_ratings_errors_and_users_per_day():
    ada = User.objects.create_user("ada")
    today = conversation_with(
        user_says("Hi"), reply("Hello", rating=-1, time_to_first_token_ms=400.0, generation_ms=2400.0,
                               completion_tokens=11),
        user_says("More"), reply("Sure", rating=1, time_to_first_token_ms=800.0, generation_ms=1800.0,
                                 completion_tokens=21),
        user=ada, guest_key="")
    conversation_with(user_says("Hi"), reply("", finish_reason="error",
                                             error_detail="no inference worker took this turn within 20 s"),
                      guest_key="guest-a")
    conversation_with(user_says("Hi"), reply("", finish_reason="error",
                                             error_detail="no inference worker took this turn within 30 s"),
                      guest_key="guest-a")
    yesterday = conversation_with(
        user_says("Hi"), reply("partial", finish_reason="error",
                               error_detail="generation produced nothing for 20 s; the text so far is kept"),
        user_says("Again"), reply("Hello", rating=-1), guest_key="guest-b")
    days_ago(yesterday, 1)
    long_ago = conversation_with(user_says("Hi"), reply("Hello"), guest_key="guest-c")
    days_ago(long_ago, 30)

    figures = dashboard.figures(days=7)
    assert len(figures.days) == 7 and figures.days[-1] == timezone.localdate()
    assert figures.turns == [0, 0, 0, 0, 0, 2, 4]
    assert figures.active_users == [0, 0, 0, 0, 0, 1, 2]  # ada and guest-a today; guest-b yesterday
    assert figures.thumbs_down_rate[-2:] == [1.0, 0.5] and figures.thumbs_down_rate[0] is None
    assert figures.error_causes == [("no inference worker took this turn within N s", 2),
                                    ("generation produced nothing for N s", 1)]
    assert dict(figures.finish_reasons) == {"Stop": 3, "Error": 3}
    assert figures.first_token_ms[50][-1] == pytest.approx(600.0)
    assert figures.first_token_ms[90][-1] == pytest.approx(760.0)
    # 10 tokens after the first in 2 s, and 20 in 1 s
    assert figures.tokens_per_second[50][-1] == pytest.approx(12.5)
    assert figures.tokens_per_second[50][-2] is None
    assert figures.totals == {"turns": 6, "errors": 3, "thumbs_down_rate": 2 / 3, "first_token_ms": 600.0,
                              "tokens_per_second": 12.5, "active_users": 3}


def test_percentiles_interpolate_between_the_closest_ranks():
    assert dashboard.percentile([], 50) is None
    assert dashboard.percentile([5.0], 90) == 5.0
    assert dashboard.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert dashboard.percentile(list(range(11)), 90) == 9.0


def test_error_causes_lose_their_figures_and_what_was_kept():
    assert dashboard.error_cause("prompt too long: 5000 tokens > 4096") == "prompt too long: N tokens > N"
    assert dashboard.error_cause("the worker failed while generating this reply; the text so far is kept") == \
        "the worker failed while generating this reply"
    assert dashboard.error_cause("") == "(no detail)"
    assert len(dashboard.error_cause("x" * 300)) == 78


def test_the_dashboard_page_draws_its_charts_from_the_database():
    conversation_with(user_says("Hi"), reply("Hello", time_to_first_token_ms=610.0, generation_ms=2610.0,
                                             completion_tokens=11))
    conversation_with(user_says("<script>x</script>"),
                      reply("", finish_reason="error", error_detail="<script>alert(1)</script> broke"))
    _, client = staff("watcher", "view_conversation")
    page = client.get("/admin/chat/conversation/dashboard/?days=7").content.decode()
    today = timezone.localdate().isoformat()
    for chart in ["turns", "finish-reasons", "errors", "thumbs-down", "first-token", "speed", "active-users"]:
        assert f'<svg class="chart" data-chart="{chart}"' in page, chart
    turns = page[page.index('data-chart="turns"'):]
    assert re.search(rf'<rect class="bar" [^>]*data-key="{today}" data-value="2"', turns)
    assert "<dd>0.61 s</dd>" in page and "<dd>5.0 tok/s</dd>" in page  # the headline figures
    assert "<script>" not in page.split("</head>", 1)[1].replace('<script src=', '')
    assert "&lt;script&gt;alert(N)&lt;/script&gt; broke" in page


def test_the_dashboard_is_linked_from_the_admin_index_and_needs_staff():
    _, client = staff("watcher", "view_conversation")
    assert '/admin/chat/conversation/dashboard/' in client.get("/admin/").content.decode()
    _, outsider = staff("outsider")
    assert outsider.get("/admin/chat/conversation/dashboard/").status_code == 403
