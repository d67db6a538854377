"""Settings panel, keyboard use, accessibility basics, and the narrow (375 px) layout."""
import json

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def sent_frames(page):
    frames = []

    def on_socket(ws):
        ws.on("framesent", lambda payload: frames.append(json.loads(payload)) if isinstance(payload, str) else None)

    page.on("websocket", on_socket)
    return frames


def test_settings_panel_is_saved_and_sent_as_params(chat_session):
    session = chat_session()
    chat = session.new_page(open_=False)
    frames = sent_frames(chat.page)
    chat.open()
    page = chat.page

    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    assert dialog.is_visible()
    dialog.get_by_label("System prompt").fill("Answer in one short sentence.")
    temperature = dialog.get_by_label("Temperature")
    temperature.fill("0")
    assert dialog.locator("output").inner_text() == "0.00"
    dialog.get_by_label("Max tokens").fill("9")
    dialog.get_by_label("Max tokens").press("Enter")  # Enter in a field saves, before the dialog closes
    expect(dialog).to_be_hidden()
    saved = json.loads(page.evaluate("() => localStorage.getItem('chat.settings')"))
    assert saved == {"system": "Answer in one short sentence.", "temperature": 0, "max_new_tokens": 9}

    # Escape, or Cancel, closes the panel without saving.
    page.get_by_role("button", name="Settings", exact=True).click()
    assert dialog.get_by_label("Max tokens").input_value() == "9"
    dialog.get_by_label("Max tokens").fill("77")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Settings", exact=True).click()
    dialog.get_by_label("Max tokens").fill("78")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert json.loads(page.evaluate("() => localStorage.getItem('chat.settings')"))["max_new_tokens"] == 9

    # The settings survive a reload and go out with the next turn.
    chat.reload()
    chat.send("What is the capital of France?")
    reply_id = chat.wait_last_reply_started()
    send = [f for f in frames if f.get("type") == "send"][-1]
    assert send["params"] == {"system": "Answer in one short sentence.", "temperature": 0, "max_new_tokens": 9}
    _, state, _ = chat.wait_reply_done(reply_id)
    assert state in ("stop", "length")


def test_untouched_settings_send_no_params_and_the_dialog_shows_the_server_s_defaults(chat_session):
    """Nothing the user did not set goes out: the server's CHAT_MAX_NEW_TOKENS and temperature apply,
    and the dialog shows them, with the server's limit as the field's bound."""
    session = chat_session()
    chat = session.new_page()
    page = chat.page
    page.evaluate("() => localStorage.setItem('chat.settings', '{}')")  # nothing set (not the suite's preset)
    frames = sent_frames(page)
    chat.reload()
    limits = page.evaluate("() => ({...document.body.dataset})")
    assert (limits["defaultMaxNewTokens"], limits["maxNewTokensLimit"]) == ("512", "4096")  # the stack's settings

    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    assert dialog.get_by_label("Max tokens").input_value() == "512"
    assert dialog.get_by_label("Max tokens").get_attribute("max") == "4096"
    assert dialog.locator("output").inner_text() == "0.70"
    dialog.get_by_role("button", name="Cancel").click()

    chat.send("Say hi.")
    reply_id = chat.wait_last_reply_started()
    send = [f for f in frames if f.get("type") == "send"][-1]
    assert send.get("params", {}) == {}
    _, state, _ = chat.wait_reply_done(reply_id)
    assert state in ("stop", "length")

    # Regenerate is answered with an ack that names the replaced reply: the page swaps at once.
    page.get_by_role("button", name="Regenerate reply").click()
    page.wait_for_function(
        "(old) => { const m = window.chatApp.state.messages.filter(m => m.role === 'assistant');"
        "           return m.length === 1 && m[0].id !== old; }", arg=reply_id, timeout=30_000)
    regenerate = [f for f in frames if f.get("type") == "regenerate"][-1]
    assert regenerate.get("params", {}) == {}
    chat.wait_reply_done()


def test_keyboard_only_use(chat):
    page = chat.page
    chat.set_settings(max_new_tokens=6)

    # The skip link comes first and shows when focused; then the header's buttons, then the sidebar.
    first = page.evaluate("""() => [...document.querySelectorAll('a[href], button, textarea, input, [tabindex]')]
        .find(e => e.tabIndex >= 0 && !e.disabled && e.getClientRects().length).className""")
    assert first == "skip-link"
    page.focus(".skip-link")
    assert page.locator(".skip-link").bounding_box()["y"] >= 0
    order = []
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(page.evaluate("""() => { const e = document.activeElement;
            return e.getAttribute('aria-label') || e.textContent.trim(); }"""))
    assert order == ["Hide conversations", "Settings", "New chat"]
    # Focus is visible (an outline is drawn on keyboard focus).
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    # The skip link jumps to the message box without touching the URL.
    hash_before = page.evaluate("location.hash")
    page.focus(".skip-link")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "composer-input"
    assert page.evaluate("location.hash") == hash_before

    # Shift+Enter adds a line; Enter sends.
    chat.input.focus()
    page.keyboard.type("Line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Line two")
    assert chat.input.input_value() == "Line one\nLine two"
    assert chat.users().count() == 0
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#messages .msg-user').length === 1")
    assert chat.users().last.locator(".msg-body").inner_text() == "Line one\nLine two"
    assert chat.input.input_value() == ""
    chat.wait_reply_done(chat.wait_last_reply_started())

    # Every control in the transcript is a real button with a name.
    unnamed = page.evaluate("""() => [...document.querySelectorAll('button')]
        .filter(b => !(b.getAttribute('aria-label') || b.textContent.trim())).map(b => b.outerHTML)""")
    assert unnamed == []
    assert page.locator("[role=status][aria-live=polite]").count() >= 1


def test_narrow_layout_collapses_the_sidebar(chat_session, artifacts):
    session = chat_session(viewport={"width": 375, "height": 740})
    chat = session.new_page()
    page = chat.page
    chat.set_settings(max_new_tokens=20)
    sidebar = page.locator("#sidebar")
    toggle = page.get_by_role("button", name="Show conversations")
    assert not sidebar.is_visible()
    assert toggle.get_attribute("aria-expanded") == "false"
    # Nothing overflows sideways at 375 px.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375

    chat.send("Write a Python function that reverses a string.")
    chat.wait_reply_done(chat.wait_last_reply_started())
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(artifacts / "chat-page-375.png"))

    toggle.click()
    page.wait_for_function("() => getComputedStyle(document.getElementById('sidebar')).visibility === 'visible'")
    assert sidebar.is_visible()
    assert page.get_by_role("button", name="Hide conversations").get_attribute("aria-expanded") == "true"
    page.wait_for_function("() => document.getElementById('sidebar').getAnimations().length === 0")  # slid in
    page.screenshot(path=str(artifacts / "chat-page-375-sidebar.png"))
    assert page.get_by_role("button", name="Close conversations").is_visible()
    assert page.evaluate("() => document.activeElement.id") == "new-chat"  # focus moved into the panel
    page.keyboard.press("Escape")
    page.wait_for_function("() => getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden'")
    assert page.evaluate("() => document.activeElement.id") == "sidebar-toggle"  # and back to the toggle
    page.get_by_role("button", name="Show conversations").click()
    page.get_by_role("button", name="Close conversations").click()
    page.wait_for_function("() => getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden'")

    # Choosing a conversation from the sidebar closes it again.
    page.get_by_role("button", name="Show conversations").click()
    page.locator("#conversation-list .conversation-open").first.click()
    page.wait_for_function("() => getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden'")
    assert chat.assistants().count() == 1
