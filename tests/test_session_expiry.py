"""A session lasts CHAT_SESSION_DAYS (30) after its last visit, renewed at most once a day."""
from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from chat.models import GUEST_SESSION_KEY
from chat.session_expiry import RENEWED

pytestmark = pytest.mark.django_db

MONTH = 30 * 24 * 3600


def a_guest_session(renewed_seconds_ago):
    session = SessionStore()
    session[GUEST_SESSION_KEY] = "a-guest"
    session[RENEWED] = timezone.now().timestamp() - renewed_seconds_ago
    session.set_expiry(3600)  # about to expire
    session.create()
    return session.session_key


def visit(key):
    client = Client()
    client.cookies["sessionid"] = key
    return client.get("/status")


def test_a_visit_pushes_the_expiry_a_month_ahead_and_renews_the_cookie(settings):
    assert settings.SESSION_COOKIE_AGE == MONTH  # not a year
    key = a_guest_session(renewed_seconds_ago=2 * 24 * 3600)
    response = visit(key)
    cookie = response.cookies["sessionid"]
    assert cookie.value == key and int(cookie["max-age"]) == MONTH
    expires = Session.objects.get(session_key=key).expire_date
    assert abs((expires - timezone.now()) - timedelta(seconds=MONTH)) < timedelta(minutes=1)
    assert SessionStore(key)[GUEST_SESSION_KEY] == "a-guest"  # the same guest, with their conversations


def test_visits_within_a_day_write_nothing(settings):
    key = a_guest_session(renewed_seconds_ago=60)
    before = Session.objects.get(session_key=key).expire_date
    assert "sessionid" not in visit(key).cookies
    assert Session.objects.get(session_key=key).expire_date == before
