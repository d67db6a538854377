"""Search in the sidebar, export/import of a conversation, and read-only share links, in the page."""
import json

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRIP = [
    ("user", "Where do quokkas live?", "", None),
    ("assistant", "Quokkas live on **Rottnest Island**, off Perth.\n\n```py\nprint('<b>hi</b>')\n```", "stop", None),
    ("user", "And what do they eat — grass? ✓", "", None),
    ("assistant", "Mostly grasses and leaves.", "stop", None),
]


def active_messages(chat):
    return [tuple(pair) for pair in chat.page.evaluate(
        "() => window.chatApp.state.messages.map(m => [m.role, m.content])")]


def test_search_finds_a_word_from_a_message_body_and_opens_it(chat, db, live_stack):
    page = chat.page
    guest = chat.guest_key(live_stack)
    trip, _ = db.add_conversation(guest, "Trip planning", TRIP)
    db.add_conversation(guest, "Cooking", [("user", "How long to boil an egg?", "", None),
                                           ("assistant", "About nine minutes.", "stop", None)])
    db.add_conversation("someone-else", "Their trip", [("user", "Rottnest ferry times", "", None),
                                                       ("assistant", "Hourly.", "stop", None)])
    chat.reload()
    page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation').length === 2")

    search = page.get_by_role("searchbox", name="Search conversations")
    search.press_sequentially("rottn", delay=40)  # results as one types
    page.wait_for_function("() => document.querySelectorAll('#search-results .search-result').length === 1 && "
                           "document.getElementById('search-status').textContent.includes('1 conversation')")
    result = page.locator("#search-results .search-result")
    assert result.locator(".search-result-title").inner_text() == "Trip planning"
    assert result.locator("mark").all_inner_texts() == ["Rottnest"]
    assert page.locator("#conversation-list").is_hidden()  # results stand in for the list

    result.get_by_role("button").click()
    page.wait_for_function(f"() => window.chatApp.state.current === {trip}")
    chat.wait_history_loaded()
    assert chat.users().first.inner_text().startswith("Where do quokkas live?")

    search.fill("nomatchword")
    page.wait_for_function("() => document.getElementById('search-status').textContent.startsWith('No conversations')")
    assert page.locator("#search-results .search-result").count() == 0
    search.press("Escape")
    assert page.locator("#conversation-list").is_visible() and search.input_value() == ""


def test_export_then_import_gives_the_same_messages(chat, db, live_stack, tmp_path):
    page = chat.page
    guest = chat.guest_key(live_stack)
    original, _ = db.add_conversation(guest, "Trip planning", TRIP)
    chat.open(original)
    before = active_messages(chat)
    assert [content for _, content in before] == [content for _, content, _, _ in TRIP]

    page.locator("#export-menu summary").click()
    with page.expect_download() as markdown_download:
        page.get_by_role("link", name="Markdown (.md)").click()
    markdown = (tmp_path / "export.md")
    markdown_download.value.save_as(markdown)
    assert markdown.read_text().startswith("# Trip planning\n\n## User\n\nWhere do quokkas live?")

    menu = page.locator("#export-menu")
    expect(menu).not_to_have_attribute("open", "")  # a choice closes the menu
    page.locator("#export-menu summary").click()
    with page.expect_download() as json_download:
        page.get_by_role("link", name="JSON (.json)").click()
    exported = tmp_path / "export.json"
    json_download.value.save_as(exported)
    data = json.loads(exported.read_text())
    assert [(m["role"], m["content"]) for m in data["messages"]] == before

    page.locator("#import-file").set_input_files(str(exported))
    page.wait_for_function(f"() => window.chatApp.state.current !== null && window.chatApp.state.current !== {original}")
    chat.wait_history_loaded()
    copy = chat.current()
    assert active_messages(chat) == before
    page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation').length === 2")
    # ... and the copy exports the same messages again
    again = page.evaluate(f"() => fetch('/conversations/{copy}/export.json').then(r => r.json())")
    assert again["messages"] == data["messages"]
    assert [(m["role"], m["content"]) for m in db.messages(copy)] == before

    # A file that is not an export is refused with the reason, and nothing is created.
    page.locator("#import-file").set_input_files(
        files=[{"name": "notes.json", "mimeType": "application/json", "buffer": b'{"messages": "nope"}'}])
    notice = page.locator("#notices .notice-error")
    notice.wait_for()
    assert "Could not import “notes.json”" in notice.inner_text() and "not a conversation export" in notice.inner_text()
    chat.session.allow_console(r"Failed to load resource: the server responded with a status of 400")
    assert page.evaluate("() => window.chatApp.state.conversations.length") == 2
    assert chat.current() == copy


def test_a_shared_link_opens_read_only_elsewhere_and_stops_after_revoke(chat, db, live_stack, browser):
    page = chat.page
    guest = chat.guest_key(live_stack)
    conversation, _ = db.add_conversation(guest, "Trip planning", TRIP)
    chat.open(conversation)

    page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share a read-only link")
    dialog.get_by_role("button", name="Create link").click()
    url_box = dialog.locator("#share-url")
    url_box.wait_for()
    url = url_box.input_value()
    assert f"{live_stack.base_url}/shared/" in url

    stranger = browser.new_context()  # no cookies: not the owner, not signed in
    try:
        other = stranger.new_page()
        response = other.goto(url)
        assert response.status == 200
        assert other.locator("h1").inner_text().endswith("Trip planning")
        assert other.locator(".msg-assistant strong").first.inner_text() == "Rottnest Island"
        assert "print('<b>hi</b>')" in other.locator(".msg-assistant pre").inner_text()  # code shown as text
        assert other.locator(".msg-user").count() == 2 and other.locator(".msg-assistant").count() == 2
        # no way to write: no form, no text box, no button, no script
        assert other.locator("form, textarea, input, button, script").count() == 0
        assert "read-only" in other.locator("#shared-badge").inner_text()

        dialog.get_by_role("button", name="Revoke link").click()
        dialog.get_by_role("button", name="Create link").wait_for()
        assert "revoked" in dialog.locator("#share-status").inner_text()
        response = other.reload()
        assert response.status == 404
        assert other.locator(".msg").count() == 0
    finally:
        stranger.close()
    dialog.get_by_role("button", name="Close").click()
    assert not dialog.is_visible()


def test_the_export_menu_closes_on_escape_a_click_elsewhere_and_a_change_of_chat(chat, db, live_stack):
    page = chat.page
    guest = chat.guest_key(live_stack)
    first, _ = db.add_conversation(guest, "First", TRIP)
    second, _ = db.add_conversation(guest, "Second", TRIP)
    chat.open(first)
    menu, summary = page.locator("#export-menu"), page.locator("#export-menu summary")
    summary.click()
    expect(menu).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(menu).not_to_have_attribute("open", "")
    expect(summary).to_be_focused()
    summary.click()
    page.locator("#transcript").click()
    expect(menu).not_to_have_attribute("open", "")
    summary.click()
    page.evaluate("(id) => { location.hash = `#c=${id}`; }", second)  # another chat, as a link to it opens it
    page.wait_for_function("(id) => window.chatApp.state.current === id", arg=second)
    expect(menu).not_to_have_attribute("open", "")
