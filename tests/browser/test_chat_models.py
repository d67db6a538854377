"""The model picker: with two workers serving two models, the header offers both for a new chat, the
reply comes from the chosen one, and an open conversation shows its own model (disabled); at 375 px
the header still fits. The stack here is its own (two tiny models), not the session's live stack."""
import json
import shutil
import urllib.request

import pytest
from playwright.sync_api import expect

from bench.stack import Stack
from tests.browser.conftest import ChatSession, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_model_stack(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("picker-models")
    first, second = str(folder / "alpha-model"), str(folder / "beta-model")
    shutil.copytree(tiny_model_dir, first)
    shutil.copytree(tiny_model_dir, second)
    stack = Stack(tmp_path_factory.mktemp("picker-stack"), redis_db=12, CHAT_MODEL=first,
                  CHAT_MESSAGES_PER_MINUTE=1000)
    stack.migrate()
    stack.start("web")
    stack.start("worker")
    stack.start("worker", as_name="worker2", CHAT_MODEL=second)
    try:
        stack.wait_healthy()
        wait_until(lambda: served(stack) == [first, second], timeout=120, message="both models to be served")
        stack.models = (first, second)
        yield stack
    finally:
        stack.stop()


def served(stack):
    with urllib.request.urlopen(stack.base_url + "/status", timeout=5) as response:
        return json.loads(response.read()).get("models")


@pytest.fixture
def session(browser, two_model_stack):
    sessions = []

    def make(viewport=None):
        sessions.append(ChatSession(browser, two_model_stack.base_url, viewport or {"width": 1280, "height": 800}))
        return sessions[-1]

    yield make
    errors = [e for s in sessions for e in s.unexpected_errors()]
    for s in sessions:
        s.close()
    assert not errors, "console errors on the page:\n" + "\n".join(errors)


def reply_model(stack, reply_id):
    [(model,)] = stack.query("SELECT model_name FROM chat_message WHERE id = %s", reply_id)
    return model


def test_the_picker_sets_a_new_chat_s_model_and_an_open_chat_shows_its_own(session, two_model_stack):
    first, second = two_model_stack.models
    chat = session().new_page()
    page = chat.page
    picker = page.get_by_role("combobox", name="Model")
    expect(picker).to_be_visible()
    assert picker.evaluate("el => [...el.options].map(o => o.textContent)") == ["alpha-model", "beta-model"]
    assert picker.input_value() == first and picker.is_enabled()  # the default: the first served

    picker.select_option(second)
    chat.send("Hello")
    reply = chat.wait_last_reply_started()
    _, state, _ = chat.wait_reply_done(reply)
    assert state in ("stop", "length")
    assert reply_model(two_model_stack, reply) == second
    conversation = chat.current()
    expect(picker).to_be_disabled()  # an open conversation keeps its model
    assert picker.input_value() == second

    # A later turn in it goes to its model, whatever a new chat would get.
    chat.send("And again")
    later = chat.wait_last_reply_started()
    chat.wait_reply_done(later)
    assert reply_model(two_model_stack, later) == second

    page.locator("#new-chat").click()
    expect(picker).to_be_enabled()
    assert picker.input_value() == second  # the choice stays for the next new chat
    picker.select_option(first)
    chat.send("Hi there")
    other = chat.wait_last_reply_started()
    chat.wait_reply_done(other)
    assert reply_model(two_model_stack, other) == first
    assert picker.input_value() == first and picker.is_disabled()

    chat.open(conversation)  # a reload onto the first conversation: its model comes with its history
    expect(picker).to_be_disabled()
    wait_until(lambda: picker.input_value() == second, timeout=10, message="the picker to show the chat's model")


def test_the_header_with_the_picker_fits_a_375_px_screen(session, two_model_stack):
    chat = session(viewport={"width": 375, "height": 700}).new_page()
    page = chat.page
    picker = page.get_by_role("combobox", name="Model")
    expect(picker).to_be_visible()
    header = page.locator(".topbar")
    assert header.evaluate("el => el.scrollWidth <= el.clientWidth"), "the header overflows at 375 px"
    for element in (picker, page.locator("#settings-open"), page.locator("#model-status")):
        box = element.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, element
