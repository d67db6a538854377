"""Nothing a model prints may run: replies are Markdown, sanitized, and raw HTML is shown as text."""
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = (
    'Here you go: <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>\n\n'
    '<svg onload="window.__pwned=3"></svg>\n\n'
    '[click me](javascript:window.__pwned=4) and <a href="javascript:window.__pwned=5">this</a>\n\n'
    '![tracker](http://127.0.0.1:9/pixel.png)\n\n'
    "```python\n"
    "def greet(name):\n"
    "    return f\"Hello, {name}!\"  # <img src=x onerror=\"window.__pwned=6\">\n"
    "```\n"
)


def assert_nothing_ran(page):
    # Give any injected handler its chance to fire: an injected image would have been fetched (and
    # failed) once the network is idle, and anything run on insertion has run by the next frames.
    page.wait_for_load_state("networkidle")
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    messages = page.locator("#messages")
    assert messages.locator(".msg-body").locator("script, img, iframe, object, embed, style, form").count() == 0
    # Our own icons are SVG inside buttons; the model's text never becomes SVG.
    assert page.evaluate("""() => [...document.querySelectorAll('#messages .msg-body svg')]
        .filter(svg => !svg.closest('button')).length""") == 0
    hrefs = messages.locator(".msg-body a").evaluate_all("els => els.map(a => a.getAttribute('href') || '')")
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")]
    handlers = page.evaluate("""() => [...document.querySelectorAll('#messages .msg-body *')]
        .flatMap(el => [...el.attributes].map(a => a.name)).filter(n => n.startsWith('on'))""")
    assert handlers == []


def test_stored_reply_with_html_and_js_is_inert_and_code_is_highlighted(chat, db, artifacts, live_stack):
    page = chat.page
    conversation, (_, reply_id) = db.add_conversation(chat.guest_key(live_stack), "Hostile reply", [
        ("user", "Show me something <b>bold</b>", "", None),
        ("assistant", HOSTILE, "stop", 1),
    ])
    chat.open(conversation)
    reply = page.locator(f'.msg[data-id="{reply_id}"]')
    reply.wait_for()
    assert reply.get_attribute("data-state") == "stop"
    # A conversation the page did not know of (it was added behind its back) joins the sidebar.
    page.locator(f'#conversation-list .conversation[data-id="{conversation}"]').wait_for()
    assert_nothing_ran(page)

    body = reply.locator(".msg-body")
    # The raw HTML is shown as text, not interpreted.
    text = body.inner_text()
    assert '<img src=x onerror="window.__pwned=1">' in text
    assert "<script>window.__pwned=2</script>" in text
    # The code block is highlighted by highlight.js, with a copy button of its own.
    code = body.locator("pre code.hljs.language-python")
    assert code.count() == 1
    assert code.locator("span.hljs-keyword").first.inner_text() == "def"
    assert code.locator('[class^="hljs-"]').count() >= 3
    # Copy buttons put the code (or the whole reply's Markdown) on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=chat.base_url)
    body.get_by_role("button", name="Copy python code").click()
    page.wait_for_function("(t) => navigator.clipboard.readText().then(c => c === t)",
                           arg='def greet(name):\n    return f"Hello, {name}!"  # <img src=x onerror="window.__pwned=6">')
    reply.get_by_role("button", name="Copy reply").click()
    page.wait_for_function("(t) => navigator.clipboard.readText().then(c => c === t)", arg=HOSTILE)
    # The image became a plain link (no request leaves the page); links open in a new tab, safely.
    tracker = body.get_by_role("link", name="[image: tracker]")
    assert tracker.get_attribute("href") == "http://127.0.0.1:9/pixel.png"
    assert tracker.get_attribute("rel") == "noopener noreferrer nofollow"
    # Clicking the javascript: link does nothing either.
    body.get_by_text("click me").click()
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    # The user's own message is plain text too; the stored rating is shown.
    assert chat.users().last.locator(".msg-body").inner_text() == "Show me something <b>bold</b>"
    assert reply.get_by_role("button", name="Good reply").get_attribute("aria-pressed") == "true"

    # Light and dark themes follow prefers-color-scheme, the code theme included.
    keyword = code.locator("span.hljs-keyword").first
    light = (keyword.evaluate("e => getComputedStyle(e).color"),
             page.evaluate("() => getComputedStyle(document.body).backgroundColor"))
    page.screenshot(path=str(artifacts / "chat-page-code.png"))
    page.emulate_media(color_scheme="dark")
    dark = (keyword.evaluate("e => getComputedStyle(e).color"),
            page.evaluate("() => getComputedStyle(document.body).backgroundColor"))
    assert dark[0] != light[0] and dark[1] != light[1]
    page.screenshot(path=str(artifacts / "chat-page-dark.png"))

    # Opened by a fresh page load (from the #c= hash) rather than a hash change: still inert.
    chat.reload()
    assert chat.current() == conversation
    assert page.locator("#conversation-list .conversation.current .conversation-title").inner_text() == "Hostile reply"
    assert_nothing_ran(page)
    assert page.locator(f'.msg[data-id="{reply_id}"] pre code.hljs span.hljs-keyword').count() >= 1


def test_model_asked_to_print_html_and_js_cannot_run_it(chat):
    page = chat.page
    chat.set_settings(max_new_tokens=40, temperature=0)
    chat.send('Repeat exactly, with no changes: <img src=x onerror="window.__pwned=1">'
              "<script>window.__pwned=2</script>")
    reply_id = chat.wait_last_reply_started()
    chat.wait_reply_done(reply_id)
    assert_nothing_ran(page)
    assert "<img src=x" in chat.users().last.locator(".msg-body").inner_text()
    # And after a reload (rendered again from `history`), still nothing.
    chat.reload()
    assert_nothing_ran(page)
