"""The sidebar, reloads mid-reply, and two tabs of one user staying in sync."""
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def sidebar_titles(page):
    return page.locator("#conversation-list .conversation-title").all_inner_texts()


def test_switch_rename_and_delete_conversations(chat):
    page = chat.page
    chat.set_settings(max_new_tokens=8)
    chat.send("First conversation: say hi.")
    chat.wait_reply_done(chat.wait_last_reply_started())
    first = chat.current()

    page.get_by_role("button", name="New chat").click()
    assert chat.current() is None and chat.users().count() == 0
    assert page.evaluate("location.hash") == ""
    chat.send("Second conversation: say bye.")
    chat.wait_reply_done(chat.wait_last_reply_started())
    second = chat.current()
    assert second != first
    page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation').length === 2")
    assert sidebar_titles(page) == ["Second conversation: say bye.", "First conversation: say hi."]

    # Switch back and forth: the transcript loads from `history`, the hash follows.
    page.locator("#conversation-list").get_by_role("button", name="First conversation: say hi.", exact=True).click()
    chat.wait_history_loaded()
    assert page.evaluate("location.hash") == f"#c={first}"
    assert chat.users().all_inner_texts()[0].startswith("First conversation: say hi.")
    assert chat.assistants().count() == 1
    assert page.locator("#conversation-list .conversation.current .conversation-title").inner_text() == \
        "First conversation: say hi."
    page.locator("#conversation-list").get_by_role("button", name="Second conversation: say bye.", exact=True).click()
    chat.wait_history_loaded()
    assert chat.current() == second
    assert page.locator("#messages .msg-user .msg-body").all_inner_texts() == ["Second conversation: say bye."]

    # Rename the first one from the sidebar (keyboard: Enter saves).
    page.get_by_role("button", name="Rename “First conversation: say hi.”").click()
    title = page.get_by_role("textbox", name="New title")
    title.fill("Greetings")
    title.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#conversation-list .conversation-title')]"
        "        .some(e => e.textContent === 'Greetings')")
    chat.reload()
    assert "Greetings" in sidebar_titles(page)

    # Delete the open one: it leaves the list and the page goes back to a new chat.
    page.get_by_role("button", name="Delete “Second conversation: say bye.”").click()
    page.locator("#conversation-list").get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation').length === 1")
    page.wait_for_function("() => window.chatApp.state.current === null")
    assert sidebar_titles(page) == ["Greetings"]
    assert chat.users().count() == 0
    assert page.evaluate("location.hash") == ""


def test_reload_mid_reply_shows_the_text_so_far_and_the_rest(chat):
    page = chat.page
    chat.set_settings(max_new_tokens=60)
    chat.send("Write a Python function that checks whether a number is prime.")
    reply_id = chat.wait_last_reply_started()
    before = chat.wait_reply_text(reply_id, 15)
    conversation = chat.current()

    chat.reload()
    assert chat.current() == conversation
    # What was generated before the reload is shown straight away (from `history`)...
    state = page.locator(f'.msg[data-id="{reply_id}"]').get_attribute("data-state")
    after_reload = chat.reply_text(reply_id)
    assert after_reload.startswith(before)
    assert page.locator(f'.msg[data-id="{reply_id}"] .msg-body').inner_text().strip()
    if state == "generating":
        # ...and the rest keeps streaming in.
        page.wait_for_function(
            "([id, n]) => { const m = window.chatApp.state.messages.find(m => m.id === id);"
            "               return m && (m.content.length > n || !m.generating); }",
            arg=[reply_id, len(after_reload)], timeout=60_000)
    _, final_state, text = chat.wait_reply_done(reply_id)
    assert final_state in ("stop", "length")
    assert text.startswith(after_reload)
    # Nothing was duplicated: the page's text is exactly what the server stored.
    chat.reload()
    assert chat.reply_state() == [[reply_id, final_state, text]]


def test_two_tabs_of_one_user_stay_in_sync(chat_session):
    session = chat_session()
    one, two = session.new_page(), session.new_page()
    one.set_settings(max_new_tokens=10)

    # A conversation started in tab one appears in tab two's sidebar, and can be followed there.
    one.send("Say hello in French.")
    reply_id = one.wait_last_reply_started()
    conversation = one.current()
    two.page.wait_for_function(
        "(c) => document.querySelector(`#conversation-list .conversation[data-id=\"${c}\"]`)", arg=conversation)
    two.page.locator(f'#conversation-list .conversation[data-id="{conversation}"] .conversation-open').click()
    two.wait_history_loaded()
    assert two.users().all_inner_texts()[0].startswith("Say hello in French.")
    _, state_one, text_one = one.wait_reply_done(reply_id)
    _, state_two, text_two = two.wait_reply_done(reply_id)
    assert (state_two, text_two) == (state_one, text_one)

    # A message sent from tab one shows up in tab two (the `turn`), and its reply streams there too.
    one.send("Now say goodbye in French.")
    second_reply = one.wait_last_reply_started()
    two.page.wait_for_function(
        "() => [...document.querySelectorAll('#messages .msg-user .msg-body')]"
        "        .some(e => e.textContent === 'Now say goodbye in French.')", timeout=30_000)
    two.page.wait_for_function(f"() => document.querySelector('.msg[data-id=\"{second_reply}\"]')")
    _, state_one, text_one = one.wait_reply_done(second_reply)
    _, state_two, text_two = two.wait_reply_done(second_reply)
    assert (state_two, text_two) == (state_one, text_one)
    assert two.users().count() == 2 and two.assistants().count() == 2

    # A rating and a comment given in tab two show in tab one (`rated` goes to every tab).
    reply_two = two.page.locator(f'.msg[data-id="{second_reply}"]')
    reply_two.get_by_role("button", name="Good reply").click()
    reply_one = one.page.locator(f'.msg[data-id="{second_reply}"]')
    one.page.wait_for_function(
        f"() => document.querySelector('.msg[data-id=\"{second_reply}\"] .rate-up')"
        ".getAttribute('aria-pressed') === 'true'")
    assert reply_one.get_by_role("button", name="Bad reply").get_attribute("aria-pressed") == "false"
    reply_two.get_by_role("button", name="Comment on this reply").click()
    comment = two.page.get_by_role("textbox", name="Comment on this reply (optional)")
    comment.fill("Short and correct.")
    two.page.get_by_role("button", name="Save comment").click()
    one.page.wait_for_function(
        f"() => document.querySelector('.msg[data-id=\"{second_reply}\"] .msg-comment').textContent"
        ".includes('Short and correct.')")
    assert reply_one.locator(".rate-up").get_attribute("aria-pressed") == "true"  # the comment kept the rating
    # The stored rating comes back with `history` after a reload.
    one.reload()
    assert one.page.locator(f'.msg[data-id="{second_reply}"] .rate-up').get_attribute("aria-pressed") == "true"

    # Renaming in one tab updates the other's sidebar (`changed`).
    two.page.get_by_role("button", name="Rename “Say hello in French.”").click()
    title = two.page.get_by_role("textbox", name="New title")
    title.fill("French lesson")
    title.press("Enter")
    one.page.wait_for_function(
        "() => [...document.querySelectorAll('#conversation-list .conversation-title')]"
        "        .some(e => e.textContent === 'French lesson')")
    one.page.wait_for_function("() => document.title.startsWith('French lesson')")
