"""The review's problems, fixed: versions of regenerated and edited messages, the warning before an
edit leaves later turns behind, the chat that is replying named and stoppable from another chat
(and its notice gone when it ends), rename keeping the list's order, undo after delete, and the
reply statistics still shown after a reload."""
import re

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.browser


def version_label(message):
    return message.locator(".version-switch .version-label")


def test_a_regenerated_reply_has_versions_to_switch_between(chat):
    chat.send("Name a colour")
    first_id, _, first_text = chat.wait_reply_done(chat.wait_last_reply_started())
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    chat.page.wait_for_function("(id) => !document.querySelector(`.msg[data-id=\"${id}\"]`)", arg=first_id)
    second_id, _, second_text = chat.wait_reply_done(chat.wait_last_reply_started())
    reply = chat.last_reply()
    assert version_label(reply).inner_text() == "2/2"
    reply.get_by_role("button", name="Previous version of this reply").click()
    chat.page.wait_for_selector(f'#messages .msg-assistant[data-id="{first_id}"]')
    assert chat.reply_text(first_id) == first_text
    reply = chat.last_reply()
    assert version_label(reply).inner_text() == "1/2"
    assert reply.get_by_role("button", name="Previous version of this reply").is_disabled()
    reply.get_by_role("button", name="Next version of this reply").click()
    chat.page.wait_for_selector(f'#messages .msg-assistant[data-id="{second_id}"]')
    assert chat.reply_text(second_id) == second_text
    chat.reload()  # the versions are the server's, not the page's memory
    assert version_label(chat.last_reply()).inner_text() == "2/2"


def test_an_edit_warns_before_later_turns_leave_and_the_earlier_version_brings_them_back(chat):
    chat.send("First question")
    chat.wait_reply_done(chat.wait_last_reply_started())
    chat.send("Second question")
    chat.wait_reply_done(chat.wait_last_reply_started())
    first = chat.users().first
    first.hover()
    first.get_by_role("button", name="Edit message").click()
    warning = chat.page.locator(".edit-warning")
    assert "the 3 messages below leave the chat" in warning.inner_text()
    assert chat.page.locator(".edit-input").get_attribute("aria-describedby") == warning.get_attribute("id")
    chat.page.locator(".edit-input").fill("First question, edited")
    chat.page.locator(".edit-input").press("Enter")
    chat.page.wait_for_function("() => document.querySelectorAll('#messages .msg').length === 2")
    chat.wait_reply_done()
    assert version_label(chat.users().first).inner_text() == "2/2"
    chat.users().first.get_by_role("button", name="Previous version of this message").click()
    chat.page.wait_for_function("() => document.querySelectorAll('#messages .msg-user').length === 2")
    assert chat.users().all_inner_texts()[0].startswith("First question")
    assert "Second question" in chat.users().all_inner_texts()[1]
    assert chat.page.locator(".edit-warning").count() == 0


def test_the_chat_that_is_replying_is_named_and_can_be_stopped_from_another(chat):
    chat.set_settings(max_new_tokens=400)
    chat.send("Write a long story about a lighthouse keeper")
    busy_reply = chat.wait_last_reply_started()
    busy_conversation = chat.current()
    chat.wait_reply_text(busy_reply, 1)
    chat.page.get_by_role("button", name="New chat").click()
    chat.input.fill("Another question")
    chat.input.press("Enter")
    notice = chat.page.locator('#notices [data-key="busy"]')
    notice.wait_for()
    title = "Write a long story about a lighthouse keeper"  # the busy chat's title: its first prompt
    assert f"“{title}” is still replying" in notice.inner_text()
    assert chat.input.input_value() == "Another question"  # kept for later
    notice.get_by_role("button", name=f"Stop “{title}”").click()
    notice.wait_for(state="detached")  # its cause ended: the notice goes by itself
    chat.page.locator(".generating-dot").wait_for(state="detached")
    chat.page.locator("#send-button").click()
    chat.wait_reply_done(chat.wait_last_reply_started())
    chat.page.locator(f'#conversation-list .conversation[data-id="{busy_conversation}"] .conversation-open').click()
    chat.wait_history_loaded()
    assert chat.wait_reply_done(busy_reply)[1] == "cancelled"


def test_rename_keeps_the_order_and_a_delete_can_be_undone(chat):
    for text in ("Older chat", "Newer chat"):
        chat.page.get_by_role("button", name="New chat").click()
        chat.send(text)
        chat.wait_reply_done(chat.wait_last_reply_started())
    titles = lambda: chat.page.locator("#conversation-list .conversation-title").all_inner_texts()  # noqa: E731
    wait_until(lambda: titles()[:2] == ["Newer chat", "Older chat"], message="both chats listed")
    chat.page.get_by_role("button", name="Rename “Older chat”").click()
    rename = chat.page.locator(".rename-input")
    rename.fill("Renamed older chat")
    rename.press("Enter")
    chat.page.reload()
    chat.wait_connected()
    wait_until(lambda: titles()[:2] == ["Newer chat", "Renamed older chat"], message="the order kept after rename")

    chat.page.get_by_role("button", name="Delete “Newer chat”").click()
    chat.page.get_by_role("button", name="Delete", exact=True).click()
    wait_until(lambda: titles()[0] == "Renamed older chat", message="the chat gone from the list")
    chat.page.locator('#notices .notice:has-text("Deleted “Newer chat”")').get_by_role("button", name="Undo").click()
    wait_until(lambda: titles()[:2] == ["Newer chat", "Renamed older chat"], message="the chat back after undo")
    chat.page.reload()
    chat.wait_connected()
    wait_until(lambda: titles()[:2] == ["Newer chat", "Renamed older chat"], message="still there after a reload")


def test_reply_statistics_are_the_servers_and_survive_a_reload(chat):
    chat.send("Say hello")
    reply_id, _, _ = chat.wait_reply_done(chat.wait_last_reply_started())
    status = chat.page.locator(f'.msg[data-id="{reply_id}"] .status-text')
    before = status.inner_text()
    assert re.fullmatch(r"\d+ tokens? · \d+\.\d tok/s", before), before
    chat.reload()
    assert chat.page.locator(f'.msg[data-id="{reply_id}"] .status-text').inner_text() == before


def test_a_reply_cut_by_its_limit_continues_from_where_it_stopped(chat):
    chat.set_settings(max_new_tokens=3)
    chat.send("List ten fruits, one per line")
    reply_id, state, cut = chat.wait_reply_done(chat.wait_last_reply_started())
    assert state == "length" and cut
    reply = chat.last_reply()
    assert "Continue goes on from here" in reply.locator(".status-text").inner_text()
    reply.get_by_role("button", name="Continue this reply").click()
    chat.page.wait_for_function("([id, n]) => { const m = window.chatApp.state.messages.find(m => m.id === id);"
                                "return m.content.length > n && !m.generating; }", arg=[reply_id, len(cut)],
                                timeout=120_000)
    _, _, text = chat.wait_reply_done(reply_id)
    assert text.startswith(cut) and len(text) > len(cut)
    assert chat.assistants().count() == 1  # the same reply went on, no new one
    chat.reload()
    assert chat.reply_text(reply_id) == text
