"""Loaded as a pytest plugin (-p) before Django reads its settings: points tests at their own Redis db."""
import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("CHAT_REQUEST_TIMEOUT", "5")
os.environ.setdefault("CHAT_STALL_TIMEOUT", "5")
os.environ.setdefault("CHAT_WORKER_HEARTBEAT", "0.5")
# Playwright's sync API keeps an event loop running in the main thread for the whole session;
# Django would then refuse the test database set-up of later tests (its documented workaround).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
