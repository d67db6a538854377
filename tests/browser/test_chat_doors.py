"""A brand-new visitor's page (no guest until its first send), and a long conversation's earlier
messages, a page at a time."""
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_new_visitor_sends_first_and_the_sidebar_fills_after(chat, live_stack):
    page = chat.page
    assert chat.stored_guest(live_stack) == ""  # the page view made no guest (only the session it will be in)
    chat.send("Say hi")
    chat.wait_last_reply_started()
    assert chat.stored_guest(live_stack)  # the first send made it, in the page's session
    page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation').length === 1")
    chat.wait_reply_done()
    chat.reload()  # the same guest after a reload: its conversation is still listed
    page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation').length === 1")


def test_a_long_conversation_shows_its_latest_messages_and_loads_earlier_ones(chat, db, live_stack):
    page = chat.page
    guest = chat.guest_key(live_stack)
    messages = [("user" if i % 2 == 0 else "assistant", f"message {i}", "" if i % 2 == 0 else "stop", None)
                for i in range(210)]
    conversation, _ = db.add_conversation(guest, "Long", messages)
    chat.open(conversation)
    chat.wait_history_loaded()
    earlier = page.get_by_role("button", name="Load earlier messages")
    assert earlier.is_visible()
    assert page.evaluate("() => window.chatApp.state.messages.length") == 200  # CHAT_HISTORY_PAGE_MESSAGES
    assert chat.users().first.inner_text().startswith("message 10")
    earlier.click()
    page.wait_for_function("() => window.chatApp.state.messages.length === 210")
    assert chat.users().first.inner_text().startswith("message 0")
    assert earlier.is_hidden()
