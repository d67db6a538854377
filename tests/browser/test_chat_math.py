"""Math in replies: $…$, \\(…\\), $$…$$ and \\[…\\] typeset by KaTeX, safely, and while streaming.

The replies are stored in the database (a 0.5B model does not print formulas on request reliably)
and reach the page the way every reply does, through the server's `history`; the streaming test
feeds `token` frames to the page's own frame handler, piece by piece.
"""
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPLY = (
    "Einstein: $E = mc^2$, and also \\(\\sqrt{2} \\approx 1.414\\).\n\n"
    "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$\n\n"
    "\\[\na^2 + b^2 = c^2\n\\]\n\n"
    "It costs $5 and $10 a month.\n\n"
    "In code: `echo $HOME$` and\n\n"
    "```sh\necho $$x$$ and $y$\n```\n"
)

HOSTILE_MATH = (
    "A $<script>window.__pwned=1</script>$ and $<img src=x onerror=\"window.__pwned=2\">$\n\n"
    "$$\\href{javascript:window.__pwned=3}{click}$$\n\n"
    "$\\url{javascript:window.__pwned=4}$ $\\htmlStyle{position:fixed;inset:0;background:red}{x}$ "
    "$\\htmlId{settings-open}{y}$ $\\includegraphics{http://127.0.0.1:9/x.png}$ $\\textcolor{red}{fine}$\n"
)


def open_reply(chat, db, live_stack, content, title="Math"):
    conversation, (_, reply_id) = db.add_conversation(chat.guest_key(live_stack), title, [
        ("user", "Show me some math", "", None),
        ("assistant", content, "stop", None),
    ])
    chat.open(conversation)
    reply = chat.page.locator(f'.msg[data-id="{reply_id}"]')
    reply.wait_for()
    return conversation, reply


def test_formulas_render_as_katex_and_prices_and_code_stay_text(chat, db, live_stack, artifacts):
    page = chat.page
    _, reply = open_reply(chat, db, live_stack, REPLY)
    body = reply.locator(".msg-body")
    # Two inline formulas and two displayed ones, typeset by KaTeX.
    body.locator(".katex").first.wait_for()
    assert body.locator(".katex").count() == 4
    assert body.locator(".katex-display").count() == 2
    assert body.locator(":not(.katex-display) > .katex").count() == 2
    # KaTeX's layout survived the sanitizer: its sizing styles, the radical's SVG, and the MathML
    # that screen readers read (without the TeX source annotation).
    assert body.locator(".katex-html [style*='height']").count() > 0
    assert body.locator(".katex svg path").count() >= 1
    assert body.locator(".katex-mathml math").count() == 4
    assert body.locator(".katex-mathml annotation").count() == 0
    # The fraction is really laid out (stacked, with KaTeX's own font), not shown as source text.
    page.wait_for_function("() => document.fonts.ready.then(() => document.fonts.check('16px KaTeX_Main'))")
    assert "\\frac" not in body.inner_text()
    numerator, denominator = (body.locator(".katex-display .mfrac .mord", has_text=digit).last.bounding_box()
                              for digit in ("1", "3"))
    assert numerator["y"] + numerator["height"] <= denominator["y"] + 2  # 1 over 3
    # Prices are text, and code blocks and inline code are never touched.
    text = body.inner_text()
    assert "It costs $5 and $10 a month." in text
    assert body.locator("code").first.inner_text() == "echo $HOME$"
    assert "echo $$x$$ and $y$" in body.locator("pre code").inner_text()
    assert body.locator("pre .katex, code .katex").count() == 0
    page.screenshot(path=str(artifacts / "chat-math.png"))
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(artifacts / "chat-math-dark.png"))


def test_html_and_trusted_commands_in_a_formula_do_nothing(chat, db, live_stack):
    page = chat.page
    _, reply = open_reply(chat, db, live_stack, HOSTILE_MATH, title="Hostile math")
    body = reply.locator(".msg-body")
    body.locator(".katex").first.wait_for()
    page.wait_for_load_state("networkidle")
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert body.locator("script, img, iframe, object, embed, style, a, form").count() == 0
    handlers = page.evaluate("""() => [...document.querySelectorAll('#messages .msg-body *')]
        .flatMap(el => [...el.attributes].map(a => a.name)).filter(n => n.startsWith('on') || n === 'id')""")
    assert handlers == []
    styles = body.locator("[style]").evaluate_all("els => els.map(e => e.getAttribute('style'))")
    assert not [s for s in styles if "fixed" in s or "url" in s or "inset" in s]
    # The page's own element was not shadowed by an id from the formula.
    assert page.locator("#settings-open").count() == 1
    # The colour command is harmless and still works.
    assert "fine" in body.inner_text()


def test_a_streamed_formula_is_source_text_until_it_closes(chat, db, live_stack):
    page = chat.page
    conversation, _ = open_reply(chat, db, live_stack, "Ready.", title="Streaming math")
    message_id = 10_000_000  # a reply the page learns of from its first token, as after a missed turn
    sent = []

    def feed(text):
        page.evaluate("(f) => window.chatApp.socket.handlers.onFrame(f)", {
            "type": "token", "conversation": conversation, "message": message_id, "text": text,
            "offset": len("".join(sent))})
        sent.append(text)
        page.wait_for_function("(t) => window.chatApp.state.messages.some(m => m.content === t)", arg="".join(sent))

    reply = page.locator(f'.msg[data-id="{message_id}"] .msg-body')
    feed("The area is\n\n$$\n\\pi r")
    page.wait_for_function("(id) => document.querySelector(`.msg[data-id='${id}'] .math-pending`)", arg=message_id)
    assert reply.locator(".katex").count() == 0
    assert "$$\n\\pi r" in reply.locator(".math-pending").inner_text()
    feed("^2 + \\frac{1}{")  # a half-written formula is still just its source: no KaTeX error shown
    page.wait_for_function("(id) => document.querySelector(`.msg[data-id='${id}'] .math-pending`)"
                           ".textContent.includes('frac{1}{')", arg=message_id)
    assert reply.locator(".katex, .katex-error").count() == 0
    feed("2}\n$$\n\nand $x")
    reply.locator(".katex-display").wait_for()
    assert reply.locator(".math-pending").count() == 0
    assert reply.locator(".katex-error").count() == 0
    # An inline `$` with no closing one yet may be a price: it is plain text meanwhile.
    assert "and $x" in reply.inner_text()
    feed("^2$ costs $5.")
    page.wait_for_function("(id) => document.querySelectorAll(`.msg[data-id='${id}'] .katex`).length === 2",
                           arg=message_id)
    # The reply ends: the same formulas, now final.
    page.evaluate("(f) => window.chatApp.socket.handlers.onFrame(f)", {
        "type": "done", "conversation": conversation, "message": message_id, "finish_reason": "stop",
        "usage": {"prompt_tokens": 5, "completion_tokens": 12}})
    page.wait_for_function("(id) => document.querySelector(`.msg[data-id='${id}']`).dataset.state === 'stop'",
                           arg=message_id)
    assert reply.locator(".katex").count() == 2
    assert "costs $5." in reply.inner_text()


def test_an_unclosed_formula_in_a_finished_reply_is_plain_text(chat, db, live_stack):
    _, reply = open_reply(chat, db, live_stack, "Cut off here: $$\\frac{1}{2", title="Cut math")
    body = reply.locator(".msg-body")
    body.wait_for()
    chat.page.wait_for_function("() => document.querySelector('#messages .msg-assistant .msg-body p')")
    assert body.locator(".katex, .math-pending").count() == 0
    assert "$$\\frac{1}{2" in body.inner_text()
