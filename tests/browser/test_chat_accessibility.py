"""Accessibility and layout: an axe-core audit of the page (light and dark), the jump-to-latest
button, example prompts in the empty state, and touch targets on a phone-sized screen."""
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AXE = "/static/vendor/axe-core/axe.min.js"  # vendored (static/vendor/README.md), served like the page's own files

REPLY = (
    "Here is a function, with its cost $O(n \\log n)$:\n\n"
    "```python\ndef greet(name):\n    \"\"\"Say hello.\"\"\"\n    return f\"Hello, {name}!\"  # a comment\n```\n\n"
    "| input | output |\n| --- | --- |\n| `1` | **2** |\n\n"
    "> A quote, a [link](https://example.com) and a list:\n\n- one\n- two\n"
)


def seed(chat, db, live_stack, messages, title="Audit"):
    conversation, ids = db.add_conversation(chat.guest_key(live_stack), title, messages)
    chat.open(conversation)
    chat.page.locator(f'.msg[data-id="{ids[-1]}"]').wait_for()
    return conversation, ids


def serious_violations(page, context="document"):
    """axe-core's serious and critical findings on the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(url=page.url.split("#")[0].rstrip("/") + AXE)
    results = page.evaluate(f"""async () => {{
        const r = await axe.run({context}, {{ resultTypes: ['violations'] }});
        return r.violations.filter(v => ['serious', 'critical'].includes(v.impact)).map(v => ({{
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary.replace(/\\s+/g, ' ')) }}));
    }}""")
    return results


def describe(violations):
    return "\n".join(f"{v['impact']} {v['id']} ({v['help']}):\n  " + "\n  ".join(v["nodes"]) for v in violations)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_serious_with_a_conversation_and_the_settings_open(chat, db, live_stack, scheme):
    page = chat.page
    page.emulate_media(color_scheme=scheme)
    seed(chat, db, live_stack, [
        ("user", "Write a greeting function, please.", "", None),
        ("assistant", REPLY, "stop", 1),
        ("user", "And a shorter one?", "", None),
        ("assistant", "Sure: `greet = lambda n: f'Hi {n}'`", "length", None),
    ])
    page.locator("#messages .katex").first.wait_for()
    page.locator("#messages pre code.hljs").first.wait_for()
    found = serious_violations(page)
    assert not found, f"axe in {scheme} mode, the conversation:\n{describe(found)}"

    page.locator("#settings-open").click()
    page.locator("#settings-dialog[open]").wait_for()
    found = serious_violations(page, "document.getElementById('settings-dialog')")
    assert not found, f"axe in {scheme} mode, the settings dialog:\n{describe(found)}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_serious_on_the_empty_page(chat, scheme):
    chat.page.emulate_media(color_scheme=scheme)
    chat.page.locator("#empty-state").wait_for()
    found = serious_violations(chat.page)
    assert not found, f"axe in {scheme} mode, the empty page:\n{describe(found)}"


def long_conversation(turns=8):
    messages = []
    for n in range(turns):
        messages.append(("user", f"Question {n}: tell me more.", "", None))
        messages.append(("assistant", "\n\n".join(f"Paragraph {p} of answer {n}, long enough to take a line." for p in range(6)),
                         "stop", None))
    return messages


def at_bottom(page):
    return page.evaluate("""() => { const t = document.getElementById('transcript');
                                    return t.scrollHeight - t.scrollTop - t.clientHeight < 80; }""")


def test_jump_to_latest_appears_when_scrolled_up_while_streaming_and_resumes_following(chat, db, live_stack):
    page = chat.page
    conversation, _ = seed(chat, db, live_stack, long_conversation(), title="Long")
    jump = page.get_by_role("button", name="Jump to latest")
    page.wait_for_function("() => window.chatApp.state.messages.length === 16")
    assert at_bottom(page)
    assert jump.is_hidden()
    # A reply streams in (fed to the page's own frame handler, as the socket would).
    message_id, sent = 10_000_001, []

    def feed(text):
        page.evaluate("(f) => window.chatApp.socket.handlers.onFrame(f)", {
            "type": "token", "conversation": conversation, "message": message_id, "text": text,
            "offset": len("".join(sent))})
        sent.append(text)
        page.wait_for_function("([id, n]) => document.querySelector(`.msg[data-id='${id}'] .msg-body`)"
                               "?.textContent.includes(`line ${n}`)", arg=[message_id, len(sent) - 1])

    feed("Streaming line 0.\n\n")
    assert at_bottom(page) and jump.is_hidden()
    # The user scrolls up to read: the page stops following, and offers the way back.
    page.evaluate("() => { document.getElementById('transcript').scrollTop = 0; }")
    jump.wait_for(state="visible")
    for n in range(1, 6):
        feed(f"Streaming line {n}.\n\n")
    assert page.evaluate("() => document.getElementById('transcript').scrollTop") == 0
    assert jump.is_visible()
    jump.click()
    page.wait_for_function("""() => { const t = document.getElementById('transcript');
                                      return t.scrollHeight - t.scrollTop - t.clientHeight < 80; }""")
    jump.wait_for(state="hidden")
    assert page.evaluate("() => document.activeElement.id") == "composer-input"
    # Following again: new text keeps the end in view.
    for n in range(6, 12):
        feed(f"Streaming line {n}.\n\n")
        assert at_bottom(page)
    assert jump.is_hidden()
    page.evaluate("(f) => window.chatApp.socket.handlers.onFrame(f)", {
        "type": "done", "conversation": conversation, "message": message_id, "finish_reason": "stop",
        "usage": {"prompt_tokens": 5, "completion_tokens": 12}})


def test_an_example_prompt_fills_the_message_box(chat):
    page = chat.page
    examples = page.locator("#empty-state .example-prompt")
    examples.first.wait_for()
    assert examples.count() >= 3
    second = examples.nth(1)
    prompt = second.get_attribute("data-prompt")
    second.click()
    assert chat.input.input_value() == prompt
    assert page.evaluate("() => document.activeElement.id") == "composer-input"
    # Nothing was sent: the user may still change it.
    assert chat.users().count() == 0
    # Reachable by keyboard too.
    examples.first.focus()
    page.keyboard.press("Enter")
    assert chat.input.input_value() == examples.first.get_attribute("data-prompt")


def test_no_gap_under_a_user_message_and_its_buttons_still_reachable_by_keyboard(chat, db, live_stack):
    page = chat.page
    seed(chat, db, live_stack, [("user", "Hello there", "", None), ("assistant", "Hi!", "stop", None)], title="Gap")
    user = chat.users().last
    bubble = user.locator(".msg-body").bounding_box()
    article = user.bounding_box()
    assert article["height"] <= bubble["height"] + 2, (article, bubble)
    copy = user.get_by_role("button", name="Copy message")
    assert copy.evaluate("b => getComputedStyle(b.parentElement).opacity") == "0"
    copy.focus()
    page.wait_for_function("() => getComputedStyle(document.activeElement.parentElement).opacity === '1'")
    box = copy.bounding_box()
    assert box["width"] >= 24 and box["height"] >= 24


def test_a_long_code_block_keeps_its_copy_header_in_view(chat, db, live_stack):
    page = chat.page
    code = "\n".join(f"line_{n} = {n}" for n in range(150))
    seed(chat, db, live_stack, [("user", "Long code", "", None), ("assistant", f"```python\n{code}\n```", "stop", None)],
         title="Long code")
    block = page.locator("#messages .code-block").first
    block.wait_for()
    page.evaluate("""() => { const t = document.getElementById('transcript');
        const b = document.querySelector('#messages .code-block');
        t.scrollTop += b.getBoundingClientRect().top - t.getBoundingClientRect().top + 800; }""")
    top = page.evaluate("() => document.getElementById('transcript').getBoundingClientRect().top")
    assert block.bounding_box()["y"] < top - 500  # the block's own top is far above
    header = block.locator(".code-header").bounding_box()
    assert abs(header["y"] - top) <= 2, (header, top)
    assert block.get_by_role("button", name="Copy python code").is_visible()


def test_touch_targets_and_the_model_name_at_375_px(chat_session, db, live_stack, artifacts):
    session = chat_session(viewport={"width": 375, "height": 740})
    chat = session.new_page()
    page = chat.page
    seed(chat, db, live_stack, [("user", "Hello", "", None), ("assistant", "Hi!", "stop", None)], title="Phone")
    # The model's name is shown in full (it may wrap), not cut to "qwen2.…".
    page.locator("#model-status[data-health='ok']").wait_for(timeout=60_000)
    name = page.locator("#model-name")
    assert name.evaluate("e => e.scrollWidth <= e.clientWidth + 1 && e.parentElement.scrollWidth <= e.parentElement.clientWidth + 1")
    assert name.bounding_box()["x"] + name.bounding_box()["width"] <= 375
    page.screenshot(path=str(artifacts / "chat-375.png"))
    # Every button on screen, and those in the opened sidebar's rows, is at least 44×44 px.
    page.locator("#sidebar-toggle").click()
    page.locator("#conversation-list .conversation").first.wait_for()
    page.locator("#sidebar").evaluate("s => new Promise(done => s.getAnimations().length ? "
                                      "Promise.all(s.getAnimations().map(a => a.finished)).then(done) : done())")
    page.screenshot(path=str(artifacts / "chat-375-sidebar.png"))
    small = page.evaluate("""() => [...document.querySelectorAll('#sidebar button, .topbar button, .topbar summary, #messages button, .composer button')]
        .filter(b => b.getClientRects().length && getComputedStyle(b).visibility !== 'hidden')
        .map(b => [b.getAttribute('aria-label') || b.textContent.trim(), b.getBoundingClientRect()])
        .filter(([, r]) => r.width < 44 || r.height < 44)
        .map(([name, r]) => `${name}: ${Math.round(r.width)}x${Math.round(r.height)}`)""")
    assert not small, "buttons smaller than 44x44 px at 375 px wide: " + ", ".join(small)
    rename = page.locator("#conversation-list .conversation").first.get_by_role("button", name="Rename “Phone”")
    box = rename.bounding_box()
    assert box["width"] >= 44 and box["height"] >= 44
