// Math in Markdown (static/chat/math.js): which text is math, and what a streamed, unclosed formula shows.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Marked } from "../../vendor/marked/marked.esm.js";
import { mathExtensions, renderTex } from "../math.js";

const final = new Marked({ gfm: true, breaks: true, extensions: mathExtensions() });
const streaming = new Marked({ gfm: true, breaks: true, extensions: mathExtensions({ streaming: true }) });

const formulas = (html) => (html.match(/<span class="katex">/g) || []).length;
const displays = (html) => (html.match(/<span class="katex-display">/g) || []).length;

test("inline $…$ and \\(…\\) and displayed $$…$$ and \\[…\\] are rendered by KaTeX", () => {
  const html = final.parse("Area $\\pi r^2$, also \\(e^x\\).\n\n$$\\int_0^1 x\\,dx$$\n\n\\[\na^2 + b^2 = c^2\n\\]\n");
  assert.equal(formulas(html), 4);
  assert.equal(displays(html), 2);
  assert.match(html, /<div class="math-display">/);
});

test("a display formula can open and close inside a paragraph, across lines", () => {
  const html = final.parse("So:\n$$\nx = \\frac{1}{2}\n$$\nand done.");
  assert.equal(displays(html), 1);
  assert.match(html, /and done\./);
  assert.doesNotMatch(html, /<br>\s*\\frac/);
});

test("two display formulas on one line are two", () => {
  assert.equal(displays(final.parse("$$a$$ and $$b$$")), 2);
});

test("prices are not math", () => {
  for (const text of ["It costs $5 and $10.", "From $5-$10 a month", "$ 5 or $ 6", "US$5, US$10", "I have $3. You have $4."]) {
    const html = final.parse(text);
    assert.equal(formulas(html), 0, text);
    assert.ok(html.includes("$"), text);
  }
  assert.equal(formulas(final.parse("It costs $5, while $x$ is unknown.")), 1);
});

test("an escaped dollar is a dollar", () => {
  const html = final.parse("Pay \\$5 and \\$6 now");
  assert.equal(formulas(html), 0);
  assert.match(html, /Pay \$5 and \$6 now/);
});

test("code blocks and inline code are never math", () => {
  const html = final.parse("Run `echo $HOME$` or:\n\n```sh\necho $$x$$ $a$\n```\n\n    $$indented$$\n");
  assert.equal(formulas(html), 0);
  assert.match(html, /<code>echo \$HOME\$<\/code>/);
  assert.match(html, /echo \$\$x\$\$ \$a\$/);
});

test("Markdown inside a formula is left to TeX", () => {
  const html = final.parse("$a*b*c + d_1 + e_1$");
  assert.equal(formulas(html), 1);
  assert.doesNotMatch(html, /<em>/);
});

test("a bad formula is shown as its source, not thrown", () => {
  const html = final.parse("$$\\frac{1}{$$");
  assert.match(html, /katex-error/);
  assert.match(html, /\\frac\{1\}\{/);
});

test("HTML in a formula is text, and trust-only commands do nothing", () => {
  const html = final.parse("$<script>alert(1)</script>$ and $\\href{javascript:alert(1)}{x}$ $\\htmlClass{x}{y}$");
  assert.doesNotMatch(html, /<script/);
  assert.doesNotMatch(html, /href="javascript/);
  assert.doesNotMatch(html, /class="x"/);
});

test("while streaming, an unclosed display formula is its plain source, then a formula once closed", () => {
  const partial = "The answer:\n\n$$\n\\frac{a_1 * b_1}{c";
  const html = streaming.parse(partial);
  assert.equal(formulas(html), 0);
  assert.match(html, /<p class="math-pending">\$\$\n\\frac\{a_1 \* b_1\}\{c<\/p>/);
  assert.equal(displays(streaming.parse(partial + "}\n$$\n")), 1);
  // Once the reply has ended, an opener that never closed is ordinary text.
  assert.doesNotMatch(final.parse(partial), /math-pending/);
});

test("while streaming, an unclosed inline \\( or $$ is plain source; a lone $ is just text", () => {
  assert.match(streaming.parse("So \\(x_1 *y* "), /<span class="math-pending">\\\(x_1 \*y\* <\/span>/);
  assert.match(streaming.parse("So $$x_1 *y* "), /<span class="math-pending">\$\$x_1 \*y\* <\/span>/);
  assert.doesNotMatch(streaming.parse("It costs $5 and "), /math-pending/);
  assert.equal(formulas(streaming.parse("Done: $$x$$ and \\(y\\)")), 2);
});

test("the same formula is rendered once and reused", () => {
  assert.equal(renderTex("x^2 + 1", false), renderTex("x^2 + 1", false));
  assert.notEqual(renderTex("x^2 + 1", false), renderTex("x^2 + 1", true));
});
