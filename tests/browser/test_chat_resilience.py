"""The page rides out a web-server restart mid-reply, and explains a missing worker (then retries).

These tests stop and restart processes of the shared live stack, and leave it healthy again.
"""

import pytest

from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# While a process is deliberately down the browser itself logs the refused connections.
REFUSED = r"WebSocket connection to .* failed|Failed to load resource|ERR_CONNECTION_REFUSED"


def test_reconnects_after_the_web_server_restarts_mid_reply(chat, live_stack):
    page = chat.page
    chat.session.allow_console(REFUSED)
    chat.set_settings(max_new_tokens=60)
    chat.send("Write a Python function that returns the factorial of n.")
    reply_id = chat.wait_last_reply_started()
    before = chat.wait_reply_text(reply_id, 10)

    live_stack.kill("web")
    page.wait_for_function(
        "() => /Connection lost|Reconnecting/.test(document.getElementById('connection-status').textContent)",
        timeout=15_000)
    assert page.locator("#connection-status").get_attribute("role") == "status"
    # The page keeps retrying, with backoff, while the server is away: let it fail twice more.
    attempts = page.evaluate("() => window.chatApp.socket.attempt")
    page.wait_for_function("(n) => window.chatApp.socket.attempt >= n + 2", arg=attempts, timeout=15_000)
    live_stack.start("web")
    wait_until(lambda: live_stack.health() == 200, timeout=120, message="web back up")

    chat.wait_connected(timeout=30_000)  # the backoff is capped at ~10 s
    page.wait_for_function("() => window.chatApp.state.historyPending === null")
    _, state, text = chat.wait_reply_done(reply_id)
    assert state in ("stop", "length")
    assert text.startswith(before)
    chat.reload()
    assert chat.reply_state() == [[reply_id, state, text]]


def test_no_worker_is_explained_and_retry_regenerates(chat, live_stack):
    page = chat.page
    # no console allowance: the page polls /status, which answers 200 even with no worker
    chat.set_settings(max_new_tokens=8)
    live_stack.kill("worker")
    try:
        wait_until(lambda: live_stack.health() == 503, timeout=30, message="the worker's heartbeat to expire")
        chat.reload()  # polls /status at once
        page.wait_for_function("() => document.getElementById('model-status').dataset.health === 'starting'")
        assert "not ready" in page.inner_text("#model-status")

        chat.send("Say hi.")
        notice = page.locator('.notice[data-key="no_worker"]')
        notice.wait_for()
        assert "No inference worker is running" in notice.inner_text()
        reply_id, state, _ = chat.wait_reply_done()
        assert state == "error"
        reply = page.locator(f'.msg[data-id="{reply_id}"]')
        assert "Error" in reply.locator(".status-text").inner_text()
        retry = reply.get_by_role("button", name="Retry")
        assert retry.is_visible()
        # Notices can be dismissed.
        notice.get_by_role("button", name="Dismiss notice").click()
        assert notice.count() == 0
    finally:
        live_stack.start("worker")
        live_stack.wait_healthy(timeout=240)

    page.wait_for_function("() => document.getElementById('model-status').dataset.health === 'ok'",
                           timeout=20_000)
    retry.click()
    page.wait_for_function(
        "(old) => window.chatApp.state.messages.some(m => m.role === 'assistant' && m.id !== old)",
        arg=reply_id, timeout=30_000)
    new_id, state, text = chat.wait_reply_done()
    assert new_id != reply_id and state in ("stop", "length") and text
    assert chat.assistants().count() == 1
