"""Presets and per-chat settings, and files attached as context, in a real browser against the live stack."""
import json

import pytest
from playwright.sync_api import expect

from tests.browser.test_admin_pages import admin_page, staff_user  # noqa: F401 - fixtures used here

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CODE_REVIEWER_START = "You are a careful senior code reviewer."
SOURCE = "def checksum(data):\n    return sum(data) % 251  # marker-7f3a\n"


def open_settings(page):
    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    expect(dialog).to_be_visible()
    return dialog


def stored_params(db, message_id):
    row = db.connection.execute("SELECT params FROM chat_message WHERE id = ?", (message_id,)).fetchone()
    return json.loads(row[0])


def test_a_preset_is_used_remembered_per_chat_and_shown_above_the_composer(chat, db):
    page = chat.page
    chip = page.locator("#settings-chip")
    dialog = open_settings(page)
    # The form shows the server's limits and default system prompt.
    assert "1–4096" in dialog.locator("#max-tokens-hint").inner_text()
    assert "You are a helpful assistant." in dialog.get_by_label("System prompt").get_attribute("placeholder")
    dialog.get_by_label("Preset", exact=True).select_option(label="Code reviewer")
    assert dialog.get_by_label("System prompt").input_value().startswith(CODE_REVIEWER_START)
    dialog.get_by_label("Max tokens").fill("5")
    dialog.get_by_role("button", name="Save", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(chip).to_have_text("This chat's settings: Preset: Code reviewer · max 5 tokens")

    chat.send("Say hi.")
    reply = chat.wait_last_reply_started()
    chat.wait_reply_done(reply)
    params = stored_params(db, reply)
    assert params["system"].startswith(CODE_REVIEWER_START) and params["max_new_tokens"] == 5
    first = chat.current()

    # A new chat starts from the last choice; given other settings, it keeps its own.
    page.locator("#new-chat").click()
    expect(chip).to_contain_text("Preset: Code reviewer")
    dialog = open_settings(page)
    dialog.get_by_label("Preset", exact=True).select_option(label="Concise")
    dialog.get_by_label("Max tokens").fill("4")
    dialog.get_by_role("button", name="Save", exact=True).click()
    expect(chip).to_contain_text("Preset: Concise · max 4 tokens")
    chat.send("Say bye.")
    second_reply = chat.wait_last_reply_started()
    chat.wait_reply_done(second_reply)
    assert stored_params(db, second_reply)["system"].startswith("Answer as briefly")

    # The first chat still uses its own settings, also after a reload (the server keeps them).
    chat.open(first)
    expect(chip).to_contain_text("Preset: Code reviewer · max 5 tokens")
    chat.reload()
    expect(chip).to_contain_text("Preset: Code reviewer · max 5 tokens")
    page.get_by_role("button", name="Regenerate reply").click()
    page.wait_for_function(
        "(old) => { const m = window.chatApp.state.messages.filter(m => m.role === 'assistant');"
        "           return m.length === 1 && m[0].id !== old; }", arg=reply, timeout=30_000)
    regenerated = chat.wait_reply_done()[0]
    assert stored_params(db, regenerated)["system"].startswith(CODE_REVIEWER_START)


def test_a_preset_of_ones_own_is_saved_and_deleted(chat):
    page = chat.page
    dialog = open_settings(page)
    dialog.get_by_label("System prompt").fill("Talk like a pirate.")
    dialog.get_by_label("Preset name").fill("Pirate")
    dialog.get_by_role("button", name="Save as preset").click()
    select = dialog.get_by_label("Preset", exact=True)
    expect(select.locator("option:checked")).to_have_text("Pirate")
    dialog.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#settings-chip")).to_contain_text("Preset: Pirate")
    chat.reload()  # kept on the server
    dialog = open_settings(page)
    expect(dialog.get_by_label("Preset", exact=True).locator("option:checked")).to_have_text("Pirate")
    dialog.get_by_role("button", name="Delete preset").click()
    expect(dialog.get_by_label("Preset", exact=True).locator("option", has_text="Pirate")).to_have_count(0)


def test_an_attached_file_reaches_the_prompt_and_a_binary_one_is_refused(chat, admin_page, live_stack):
    page = chat.page
    chat.set_settings(max_new_tokens=4, temperature=0)
    file_input = page.locator("#attach-input")

    file_input.set_input_files({"name": "photo.png", "mimeType": "image/png",
                                "buffer": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"})
    expect(page.locator("#notices")).to_contain_text("“photo.png” looks like a binary file")
    expect(page.locator("#attachment-chips .attachment-chip")).to_have_count(0)

    # A file too large for the context window is announced before sending.
    file_input.set_input_files({"name": "huge.txt", "mimeType": "text/plain", "buffer": b"word " * 19_000})
    chips = page.locator("#attachment-chips .attachment-chip")
    expect(chips).to_have_count(1)
    expect(page.locator("#context-warning")).to_contain_text("context window")
    chips.first.get_by_role("button", name="Remove huge.txt").click()
    expect(chips).to_have_count(0)
    expect(page.locator("#context-warning")).to_be_hidden()

    file_input.set_input_files({"name": "checksum.py", "mimeType": "text/x-python", "buffer": SOURCE.encode()})
    expect(chips).to_have_count(1)
    expect(chips.first).to_contain_text("checksum.py")
    chat.send("What does this function return?")
    expect(chips).to_have_count(0)  # sent with the message
    reply = chat.wait_last_reply_started()
    chat.wait_reply_done(reply)
    sent_chip = page.locator("#messages .msg-user .attachment-chip")
    expect(sent_chip).to_contain_text("checksum.py")
    chat.reload()
    expect(sent_chip).to_contain_text("checksum.py")  # from the history

    # The reviewer sees the file the model read, under its name.
    admin_page.goto(f"{live_stack.base_url}/admin/chat/conversation/{chat.current()}/change/")
    attachment = admin_page.locator('section.transcript article[data-role="user"] details.attachment')
    expect(attachment.locator("summary")).to_contain_text("checksum.py")
    assert "marker-7f3a" in attachment.locator("pre").text_content()


def test_top_k_min_p_repetition_penalty_and_stop_are_set_in_the_dialog_and_used(chat, db):
    page = chat.page
    dialog = open_settings(page)
    # The model's own recommendations are the defaults shown (its worker announces them).
    expect(dialog.get_by_label("Top-k")).to_have_value("20")
    expect(dialog.get_by_label("Repetition penalty")).to_have_value("1.1")
    dialog.get_by_label("Top-k").fill("1")
    dialog.get_by_label("Min-p").fill("0.05")
    dialog.get_by_label("Repetition penalty").fill("1.2")
    dialog.get_by_label("Stop sequences").fill("zzz\nqqq")
    dialog.get_by_label("Max tokens").fill("6")
    dialog.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#settings-chip")).to_have_text(
        "This chat's settings: max 6 tokens · top-k 1 · min-p 0.05 · repetition penalty 1.2 · 2 stop sequences")
    chat.send("Say hi.")
    reply = chat.wait_last_reply_started()
    chat.wait_reply_done(reply)
    params = stored_params(db, reply)
    assert (params["top_k"], params["min_p"], params["repetition_penalty"], params["stop"]) == (1, 0.05, 1.2,
                                                                                              ["zzz", "qqq"])
    chat.reload()  # the chat keeps them (the server's `settings`), and the dialog shows them
    dialog = open_settings(page)
    expect(dialog.get_by_label("Top-k")).to_have_value("1")
    expect(dialog.get_by_label("Stop sequences")).to_have_value("zzz\nqqq")
