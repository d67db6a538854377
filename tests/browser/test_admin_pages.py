"""The reviewers' side in a real browser, as staff, against the live stack: a finished conversation's
transcript, and the dashboard drawn from the turns the test made."""
import json
import re
import subprocess
import sys
import time

import pytest
from websockets.sync.client import connect

from bench.stack import ROOT
from tests.browser.conftest import REPLY_TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STAFF_USER, STAFF_PASSWORD = "admin-pages-reviewer", "admin-pages-pass-123"
MARKDOWN_REPLY = (
    "Here are the results:\n\n| city | temperature |\n|------|------------:|\n| Oslo | 4 °C |\n| Rome | 18 °C |\n\n"
    "```python\ndef mean(values):\n    return sum(values) / len(values)\n```\n\n"
    "Careful with <script>window.__pwned = 2</script> and <img src=x onerror=\"window.__pwned = 3\">.\n"
)


class Turns:
    """A guest talking to the live stack over its WebSocket (as the page does, without the page)."""

    def __init__(self, stack):
        self.socket = connect(stack.ws_url, origin=stack.base_url, proxy=None)

    def exchange(self, frame):
        """Send a send/regenerate frame; returns (conversation, reply id, finish reason) once it is done."""
        self.socket.send(json.dumps({"params": {"temperature": 0, "max_new_tokens": 6}, **frame}))
        reply = conversation = None
        deadline = time.monotonic() + REPLY_TIMEOUT_MS / 1000
        while True:
            message = json.loads(self.socket.recv(timeout=max(1.0, deadline - time.monotonic())))
            if message["type"] == "error":
                raise AssertionError(f"the turn was refused: {message}")
            if message["type"] == "ack":
                conversation, reply = message["conversation"], message["reply"]
            if message["type"] == "done" and message["message"] == reply:
                return conversation, reply, message["finish_reason"]

    def send(self, content, conversation=None):
        return self.exchange({"type": "send", "conversation": conversation, "content": content})

    def regenerate(self, conversation):
        return self.exchange({"type": "regenerate", "conversation": conversation})

    def close(self):
        self.socket.close()


@pytest.fixture
def turns(live_stack):
    talker = Turns(live_stack)
    yield talker
    talker.close()


@pytest.fixture(scope="module")
def staff_user(live_stack):
    env = {**live_stack.env, "DJANGO_SUPERUSER_USERNAME": STAFF_USER, "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD,
           "DJANGO_SUPERUSER_EMAIL": "pages@example.com"}
    result = subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0 or "already taken" in result.stderr, result.stderr
    return STAFF_USER


@pytest.fixture
def admin_page(browser, live_stack, staff_user):
    """A page signed in to the admin as staff; fails the test on any console error (a CSP refusal included)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(
        f"{message.text} ({message.location.get('url', '')})"))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_stack.base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", staff_user)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_stack.base_url}/admin/")
    yield page
    context.close()
    assert not errors, "console errors in the admin:\n" + "\n".join(errors)


def test_a_finished_conversation_reads_like_the_chat_in_the_admin(admin_page, turns, db, live_stack, artifacts):
    page = admin_page
    conversation, first, _ = turns.send("Count from 1 to 20. <script>window.__pwned = 1</script>")
    _, reply, finish_reason = turns.regenerate(conversation)
    assert finish_reason in ("stop", "length")
    # The small model does not print a table on request: its stored text is replaced by one that has
    # a table, code and hostile HTML; everything else about the reply is as the worker stored it.
    with db.connection:
        db.connection.execute("UPDATE chat_message SET content = ? WHERE id = ?", (MARKDOWN_REPLY, reply))
    model_name, = db.connection.execute("SELECT model_name FROM chat_conversation WHERE id = ?",
                                        (conversation,)).fetchone()
    assert model_name

    page.goto(f"{live_stack.base_url}/admin/chat/conversation/{conversation}/change/")
    transcript = page.locator("section.transcript")
    active = transcript.locator(f'article[data-id="{reply}"]')
    # The reply's Markdown, rendered: a table and a monospaced code block
    table = active.locator(".msg-body table")
    assert table.locator("th").all_inner_texts() == ["city", "temperature"]
    assert table.locator("tbody tr").count() == 2
    code = active.locator(".msg-body pre code")
    assert code.inner_text().startswith("def mean(values):")
    assert "monospace" in code.evaluate("e => getComputedStyle(e).fontFamily")
    # HTML from the model or the user is text, and nothing of it ran
    assert "<script>window.__pwned = 2</script>" in active.locator(".msg-body").inner_text()
    user = transcript.locator('article[data-role="user"]').first
    assert user.locator(".msg-body").inner_text() == "Count from 1 to 20. <script>window.__pwned = 1</script>"
    page.wait_for_load_state("networkidle")
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert transcript.locator("script, img, iframe").count() == 0
    # Its provenance and timings, for people
    facts = dict(zip(active.locator(".facts dt").all_inner_texts(), active.locator(".facts dd").all_inner_texts()))
    assert facts["Model"] == model_name
    assert re.fullmatch(r"\S+-\d+-[0-9a-f]{6}", facts["Worker"]), facts
    assert re.fullmatch(r"(cpu|cuda:\d+) · \w+", facts["Device"]), facts
    assert facts["Finish"] in ("Stop", "Length")
    assert re.fullmatch(r"(< 0\.01|\d+\.\d\d|\d+\.\d|\d+) s", facts["First token"]), facts
    assert re.fullmatch(r"\d+(\.\d)? tok/s", facts["Speed"]), facts
    assert "temperature 0 · " in facts["Sampling"]
    assert "generating" not in page.locator("body").inner_text().lower()
    # The first reply was regenerated: collapsed where it branched, shown when opened
    branch = transcript.locator("details.branch")
    assert branch.locator("> summary").inner_text() == "Regenerated here: 1 earlier reply"
    superseded = branch.locator(f'article[data-id="{first}"]')
    assert not superseded.is_visible()
    branch.locator("> summary").click()
    superseded.wait_for(state="visible")
    page.screenshot(path=str(artifacts / "admin-transcript.png"), full_page=True)


def test_the_dashboard_draws_the_turns_the_test_made(admin_page, turns, live_stack, artifacts):
    page = admin_page
    page.get_by_role("link", name="Service dashboard").click()
    page.wait_for_url(re.compile(r".*/admin/chat/conversation/dashboard/$"))
    today_turns = page.locator('svg[data-chart="turns"] rect.bar').last
    before = int(today_turns.get_attribute("data-value"))

    conversation, _, _ = turns.send("Count from 1 to 20.")
    turns.send("Now count back from 20 to 1.", conversation)
    page.reload()

    assert page.locator("svg.chart").count() == 7
    assert int(today_turns.get_attribute("data-value")) == before + 2
    assert today_turns.bounding_box()["height"] > 0
    assert int(page.locator('svg[data-chart="active-users"] rect.bar').last.get_attribute("data-value")) >= 1
    # Today's timings are points on the percentile lines, with their values in people's units
    today = today_turns.get_attribute("data-key")
    point = page.locator(f'svg[data-chart="first-token"] circle[data-key="{today}"][data-series="p50"]')
    assert re.search(r"p50: (< 0\.01|\d+(\.\d+)?) s$", point.locator("title").text_content())
    assert page.locator(f'svg[data-chart="speed"] circle[data-key="{today}"]').count() == 2
    assert page.locator('svg[data-chart="finish-reasons"] rect.bar').count() >= 1
    page.screenshot(path=str(artifacts / "admin-dashboard.png"), full_page=True)
