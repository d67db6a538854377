"""Streaming, stop, regenerate and edit, through the page, with the real model."""
import time

import pytest

from tests.browser.conftest import REPLY_TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CODE_PROMPT = "Write a Python function that reverses a string."


def test_reply_streams_in_and_renders_markdown(chat, artifacts):
    page = chat.page
    page.wait_for_function("() => document.getElementById('model-status').dataset.health === 'ok'",
                           timeout=30_000)
    assert "ready" in page.inner_text("#model-name")

    chat.send(CODE_PROMPT)
    user = chat.users().last
    assert user.locator(".msg-body").inner_text() == CODE_PROMPT
    reply_id = chat.wait_last_reply_started()
    assert page.evaluate("location.hash") == f"#c={chat.current()}"
    assert page.locator("#stop-button").is_visible()

    # Watch the reply grow: several distinct, growing lengths before it is done.
    seen, states, deadline = [], set(), time.monotonic() + REPLY_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        state = page.locator(f'.msg[data-id="{reply_id}"]').get_attribute("data-state")
        states.add(state)
        if state not in ("waiting", "generating"):
            break
        text = chat.reply_text(reply_id)
        if text and (not seen or len(text) != len(seen[-1])):
            seen.append(text)
        time.sleep(0.15)
    assert len(seen) >= 3, f"the reply did not stream: {seen!r}"
    for shorter, longer in zip(seen, seen[1:]):
        assert longer.startswith(shorter) and len(longer) > len(shorter)
    assert "generating" in states

    _, final_state, text = chat.wait_reply_done(reply_id)
    assert final_state in ("stop", "length")
    assert text.startswith(seen[-1])
    reply = page.locator(f'.msg[data-id="{reply_id}"]')
    assert "tokens" in reply.locator(".status-text").inner_text()
    assert not page.locator("#stop-button").is_visible()
    # The rendered body is the Markdown of the text, not the raw text.
    assert reply.locator(".msg-body").inner_html() != text
    if "```" in text:
        assert reply.locator("pre code.hljs").count() >= 1
        assert reply.locator(".code-block .code-copy").count() >= 1
    # Copy buttons exist on both messages; the code block has its own.
    assert user.get_by_role("button", name="Copy message").count() == 1
    assert reply.get_by_role("button", name="Copy reply").count() == 1
    page.screenshot(path=str(artifacts / "chat-page.png"))


def test_stop_keeps_the_partial_reply(chat):
    page = chat.page
    chat.set_settings(max_new_tokens=300)
    chat.send("Write a long, detailed story about a dragon who learns to bake bread.")
    reply_id = chat.wait_last_reply_started()
    before = chat.wait_reply_text(reply_id, 20)
    assert len(before) >= 20, "the reply ended before it could be stopped"
    page.get_by_role("button", name="Stop", exact=True).click()
    _, state, text = chat.wait_reply_done(reply_id, timeout=60_000)
    assert state == "cancelled"
    assert text.startswith(before)
    reply = page.locator(f'.msg[data-id="{reply_id}"]')
    assert "Stopped" in reply.locator(".status-text").inner_text()
    assert reply.locator(".msg-body").inner_text().strip()
    # The partial reply is what the server stored: a reload shows the same.
    chat.reload()
    assert chat.reply_state() == [[reply_id, "cancelled", text]]


def test_regenerate_replaces_the_last_reply(chat, db):
    page = chat.page
    chat.set_settings(max_new_tokens=12)
    chat.send("Name a colour.")
    first_id, _, _ = chat.wait_reply_done(chat.wait_last_reply_started())
    regenerate = page.get_by_role("button", name="Regenerate reply")
    regenerate.click()
    page.wait_for_function(
        "(old) => { const m = window.chatApp.state.messages.filter(m => m.role === 'assistant');"
        "           return m.length === 1 && m[0].id !== old; }", arg=first_id, timeout=30_000)
    second_id, state, text = chat.wait_reply_done()
    assert second_id != first_id and state in ("stop", "length") and text
    assert page.locator(f'.msg[data-id="{first_id}"]').count() == 0
    assert chat.users().count() == 1 and chat.assistants().count() == 1
    stored = db.messages(chat.current())
    assert [(m["id"], m["superseded"]) for m in stored if m["role"] == "assistant"] == [(first_id, 1), (second_id, 0)]
    chat.reload()
    assert [r[0] for r in chat.reply_state()] == [second_id]


def test_edit_and_resend_a_user_message(chat, db):
    page = chat.page
    chat.set_settings(max_new_tokens=12)
    chat.send("Say the word apple.")
    first_reply, _, _ = chat.wait_reply_done(chat.wait_last_reply_started())
    old_user_id = int(chat.users().last.get_attribute("data-id"))

    chat.users().last.hover()
    chat.users().last.get_by_role("button", name="Edit message").click()
    editor = page.get_by_role("textbox", name="Edit your message")
    assert editor.input_value() == "Say the word apple."
    editor.fill("Say the word banana.")
    editor.press("Enter")

    page.wait_for_function(
        "(old) => { const users = window.chatApp.state.messages.filter(m => m.role === 'user');"
        "           return users.length === 1 && users[0].id !== old; }", arg=old_user_id, timeout=30_000)
    assert chat.users().count() == 1
    assert chat.users().last.locator(".msg-body").inner_text() == "Say the word banana."
    new_reply, state, _ = chat.wait_reply_done()
    assert new_reply != first_reply and state in ("stop", "length")
    assert chat.assistants().count() == 1

    stored = db.messages(chat.current())
    active = [(m["role"], m["content"]) for m in stored if not m["superseded"]]
    assert active[0] == ("user", "Say the word banana.") and len(active) == 2
    assert {m["id"] for m in stored if m["superseded"]} == {old_user_id, first_reply}
    chat.reload()
    assert page.locator("#messages .msg-user .msg-body").all_inner_texts() == ["Say the word banana."]


def test_queued_position_is_shown_while_another_user_is_served(chat_session):
    first, second = chat_session().new_page(), chat_session().new_page()  # two guests, one worker
    first.set_settings(max_new_tokens=30)
    second.set_settings(max_new_tokens=6)
    first.send(CODE_PROMPT)
    first_reply = first.wait_last_reply_started()
    first.wait_reply_text(first_reply, 1)  # the worker is busy with the first guest's reply
    second.send("Say yes.")
    second_reply = second.wait_last_reply_started()
    reply = second.page.locator(f'.msg[data-id="{second_reply}"]')
    second.page.wait_for_function(
        "(id) => { const el = document.querySelector(`.msg[data-id=\"${id}\"]`);"
        "          return el.querySelector('.status-text').textContent.startsWith('Queued')"
        "                 || !['waiting', 'generating'].includes(el.dataset.state); }", arg=second_reply, timeout=60_000)
    assert reply.get_attribute("data-state") == "waiting"  # the first reply (30 tokens) takes far longer
    assert reply.locator(".status-text").inner_text() == "Queued: position 1"
    first.wait_reply_done(first_reply)
    _, state, text = second.wait_reply_done(second_reply)
    assert state in ("stop", "length") and text


def test_a_refused_send_gives_the_text_back(chat):
    page = chat.page
    chat.set_settings(max_new_tokens=300)
    chat.send("Write a long essay about the history of bread.")
    reply_id = chat.wait_last_reply_started()
    conversation = chat.current()
    page.get_by_role("button", name="New chat").click()
    chat.input.fill("Another question while the first reply is still running.")
    chat.input.press("Enter")
    notice = page.locator('.notice[data-key="busy"]')
    notice.wait_for()
    assert "“Write a long essay about the history of bread.” is still replying" in notice.inner_text()
    assert chat.input.input_value() == "Another question while the first reply is still running."
    assert chat.users().count() == 0
    notice.get_by_role("button", name="Dismiss notice").click()
    assert notice.count() == 0
    # The sidebar marks the conversation that is still generating; go back and stop it.
    item = page.locator(f'#conversation-list .conversation[data-id="{conversation}"]')
    assert item.locator(".generating-dot").count() == 1
    item.locator(".conversation-open").click()
    chat.wait_history_loaded()
    page.get_by_role("button", name="Stop", exact=True).click()
    _, state, _ = chat.wait_reply_done(reply_id, timeout=60_000)
    assert state in ("cancelled", "length", "stop")
    assert item.locator(".generating-dot").count() == 0
