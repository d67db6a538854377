"""Browser tests: Debian's chromium, driven by Playwright, against the live stack (tests/conftest.py).

Every page opened through the `chat` fixture records console errors and uncaught page errors;
the test fails if any were seen (expected ones, such as a refused WebSocket while the server is
deliberately down, are allowed per test with `chat.allow_console(pattern)`).
"""
import json
import os
import re
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REPLY_TIMEOUT_MS = 120_000  # a 0.5B model on a shared 2-core CPU: a few tokens per second, sometimes fewer
DEFAULT_MAX_TOKENS = 24
FINAL_STATES = ("stop", "length", "cancelled", "error")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); "
                    "`playwright install` is not used")
    # Playwright's sync API keeps an event loop running in the main thread while it is open, and
    # Django then refuses every ORM call of the test process (such as the test database's
    # teardown). Only here, where no consumer runs in this process, is that check switched off.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class ChatPage:
    """One tab of the chat page, with the few helpers the tests share."""

    def __init__(self, page, base_url, errors):
        self.page, self.base_url, self.errors = page, base_url, errors
        page.on("console", lambda message: message.type == "error" and errors.append(
            f"console: {message.text} ({message.location.get('url', '')})"))
        page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))

    # --- navigation -------------------------------------------------------------------
    def open(self, conversation=None):
        url = self.base_url + "/" + (f"#c={conversation}" if conversation else "")
        self.page.goto(url)
        self.wait_connected()
        if conversation:
            self.wait_history_loaded()
        return self

    def reload(self):
        self.page.reload()
        self.wait_connected()
        if self.current() is not None:
            self.wait_history_loaded()

    def wait_connected(self, timeout=30_000):
        self.page.wait_for_function("() => window.chatApp && window.chatApp.socket.isOpen", timeout=timeout)

    def wait_history_loaded(self, timeout=30_000):
        self.page.wait_for_function("() => window.chatApp.state.historyPending === null", timeout=timeout)

    def current(self):
        return self.page.evaluate("() => window.chatApp.state.current")

    def session_key(self):
        cookies = {c["name"]: c["value"] for c in self.page.context.cookies()}
        return cookies["sessionid"]

    def guest_key(self, stack):
        """The guest identity the server keeps in this page's session (what conversations are owned by).
        A page view makes none: when the page's visitor has not acted yet, it is made here, in the
        session, as the socket would at a first send (the page's socket speaks for it from its next frame)."""
        return self._session_shell(stack, "s.setdefault('chat_guest', uuid.uuid4().hex); s.save(); print(s['chat_guest'])")

    def stored_guest(self, stack):
        """The guest identity in this page's session, or "" while its visitor has made none."""
        return self._session_shell(stack, "print(s.get('chat_guest', ''))")

    def _session_shell(self, stack, code):
        import subprocess
        import sys

        from bench.stack import ROOT

        code = ("import uuid; from django.contrib.sessions.backends.db import SessionStore; "
                f"s = SessionStore({self.session_key()!r}); {code}")
        result = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", code], cwd=ROOT,
                                env=stack.env, capture_output=True, text=True, check=True)
        lines = result.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    # --- the transcript -----------------------------------------------------------------
    @property
    def input(self):
        return self.page.locator("#composer-input")

    def assistants(self):
        return self.page.locator("#messages .msg-assistant")

    def users(self):
        return self.page.locator("#messages .msg-user")

    def last_reply(self):
        return self.assistants().last

    def send(self, text):
        """Type and send a message; returns once the page has put the `send` frame on its socket."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        self.page.wait_for_function(
            "() => window.chatApp.socket.isOpen && !document.getElementById('send-button').disabled", timeout=30_000)
        self.replies_before_send = self.assistants().count()
        self.input.fill(text)
        self.input.press("Enter")
        # The page clears the box only when the frame went out; a refusal keeps the text and says why.
        try:
            self.page.wait_for_function("() => document.getElementById('composer-input').value === ''",
                                        timeout=10_000)
        except PlaywrightTimeout:
            notices = self.page.locator("#notices").all_inner_texts()
            raise AssertionError(f"the page did not send {text!r}; its notices: {notices}") from None

    def reply_state(self):
        """[(id, state, raw text)] of the assistant messages shown, from the page's own model."""
        return self.page.evaluate("""() => window.chatApp.state.messages
            .filter(m => m.role === 'assistant')
            .map(m => [m.id, document.querySelector(`.msg[data-id="${m.id}"]`)?.dataset.state, m.content])""")

    def reply_text(self, message_id):
        return self.page.evaluate(
            "(id) => (window.chatApp.state.messages.find(m => m.id === id) || {}).content ?? null", message_id)

    def wait_last_reply_started(self, timeout=REPLY_TIMEOUT_MS):
        """The id of the reply to the last send, once the page shows it: waiting or generating, or
        already ended (a short reply on a fast machine can end before the page is next looked at)."""
        self.page.wait_for_function(
            """([before, states]) => { const els = document.querySelectorAll('#messages .msg-assistant');
                       const last = els[els.length - 1];
                       return last && states.includes(last.dataset.state)
                           && (['waiting', 'generating'].includes(last.dataset.state) || els.length > before); }""",
            arg=[getattr(self, "replies_before_send", 0), ["waiting", "generating", *FINAL_STATES]], timeout=timeout)
        return int(self.last_reply().get_attribute("data-id"))

    def wait_reply_text(self, message_id, min_chars, timeout=REPLY_TIMEOUT_MS):
        self.page.wait_for_function(
            """([id, n]) => { const m = window.chatApp.state.messages.find(m => m.id === id);
                              return m && (m.content.length >= n || !m.generating); }""",
            arg=[message_id, min_chars], timeout=timeout)
        return self.reply_text(message_id)

    def wait_reply_done(self, message_id=None, timeout=REPLY_TIMEOUT_MS):
        """Wait until the reply (the last one by default) is in a final state; returns (id, state, text)."""
        if message_id is None:
            message_id = int(self.last_reply().get_attribute("data-id"))
        self.page.wait_for_function(
            """([id, finals]) => { const el = document.querySelector(`#messages .msg[data-id="${id}"]`);
                                   return el && finals.includes(el.dataset.state); }""",
            arg=[message_id, list(FINAL_STATES)], timeout=timeout)
        state = self.page.locator(f'#messages .msg[data-id="{message_id}"]').get_attribute("data-state")
        return message_id, state, self.reply_text(message_id)

    def set_settings(self, **values):
        self.page.evaluate("(v) => localStorage.setItem('chat.settings', JSON.stringify(v))",
                           {"system": "", "temperature": 0.7, "max_new_tokens": DEFAULT_MAX_TOKENS, **values})
        self.page.evaluate("() => window.dispatchEvent(new StorageEvent('storage', {key: 'chat.settings'}))")

    def stop_anything_generating(self):
        """Leave the shared worker idle for the next test."""
        if self.page.is_closed():
            return
        try:
            generating = self.page.evaluate("""() => window.chatApp ? window.chatApp.state.messages
                .filter(m => m.generating).map(m => window.chatApp.state.current) : []""")
            for conversation in generating:
                self.page.evaluate("(c) => window.chatApp.socket.send({type: 'stop', conversation: c})", conversation)
            if generating:
                self.page.wait_for_function("() => !window.chatApp.state.messages.some(m => m.generating)",
                                            timeout=30_000)
        except Exception:  # noqa: BLE001 - best effort clean-up
            pass


class ChatSession:
    """A browser context (one guest user) and the pages opened in it."""

    def __init__(self, browser, base_url, viewport):
        self.base_url = base_url
        self.context = browser.new_context(viewport=viewport, color_scheme="light")
        self.context.set_default_timeout(30_000)
        # Short replies keep the slow CPU model quick; a page may still change them.
        self.context.add_init_script(
            "if (!localStorage.getItem('chat.settings')) localStorage.setItem('chat.settings', "
            + json.dumps(json.dumps({"system": "", "temperature": 0.7, "max_new_tokens": DEFAULT_MAX_TOKENS}))
            + ");")
        self.errors = []
        self.allowed = []
        self.pages = []

    def new_page(self, conversation=None, open_=True):
        page = ChatPage(self.context.new_page(), self.base_url, self.errors)
        self.pages.append(page)
        if open_:
            page.open(conversation)
        return page

    def allow_console(self, pattern):
        self.allowed.append(re.compile(pattern))

    def unexpected_errors(self):
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def close(self):
        for page in self.pages:
            page.stop_anything_generating()
        self.context.close()


@pytest.fixture
def chat_session(browser, live_stack):
    sessions = []

    def make(viewport=None):
        session = ChatSession(browser, live_stack.base_url, viewport or {"width": 1280, "height": 800})
        sessions.append(session)
        return session

    yield make
    errors = []
    for session in sessions:
        errors += session.unexpected_errors()
        session.close()
    assert not errors, "console errors on the page:\n" + "\n".join(errors)


@pytest.fixture
def chat(chat_session):
    """One page of the chat, opened and connected, in a fresh guest session."""
    session = chat_session()
    page = session.new_page()
    page.session = session
    return page


@pytest.fixture
def db(live_stack):
    """Direct access to the stack's SQLite database, for setting up conversations."""
    connection = sqlite3.connect(live_stack.db_path, timeout=20)
    try:
        yield Database(connection)
    finally:
        connection.close()


class Database:
    def __init__(self, connection):
        self.connection = connection

    def add_conversation(self, guest_key, title, messages):
        """Insert a conversation with [(role, content, finish_reason, rating)] messages; returns its id and message ids."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        with self.connection:
            cursor = self.connection.execute(
                "INSERT INTO chat_conversation (guest_key, title, model_name, created, updated, user_id) "
                "VALUES (?, ?, '', ?, ?, NULL)", (guest_key, title, now, now))
            conversation_id = cursor.lastrowid
            ids = []
            for role, content, finish_reason, rating in messages:  # one branch: each follows the one before
                cursor = self.connection.execute(
                    "INSERT INTO chat_message (role, content, finish_reason, error_detail, superseded, model_name, "
                    "params, rating, feedback, created, conversation_id, parent_id) "
                    "VALUES (?, ?, ?, '', 0, '', '{}', ?, '', ?, ?, ?)",
                    (role, content, finish_reason, rating, now, conversation_id, ids[-1] if ids else None))
                ids.append(cursor.lastrowid)
        return conversation_id, ids

    def messages(self, conversation_id):
        rows = self.connection.execute(
            "SELECT id, role, content, finish_reason, superseded, rating, feedback FROM chat_message "
            "WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
        keys = ("id", "role", "content", "finish_reason", "superseded", "rating", "feedback")
        return [dict(zip(keys, row)) for row in rows]


def wait_until(predicate, timeout=30.0, interval=0.25, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")

