// Math in replies, as a marked extension rendered by KaTeX: $…$ and \(…\) inline, $$…$$ and \[…\]
// displayed. DOM-free (node --test static/chat/tests/); markdown.js sanitizes what it returns.
//
// Only text tokens reach it: code blocks and inline code are tokenized by marked first and never
// seen here. A `$` is math only by pandoc's rule (the opening `$` is followed by a non-space, the
// closing one follows a non-space and is not followed by a digit), so "$5 and $10" stays text.
// While a reply streams, an opened `$$`, `\[` or `\(` that has not closed yet is shown as its plain
// source (no Markdown inside it), so the formula appears once, when it is complete.

import katex from "../vendor/katex/katex.mjs";

const KATEX_OPTIONS = {
  throwOnError: false, // a bad formula is shown as its source, in the error colour
  trust: false, // no \href, \url, \includegraphics, \htmlClass… (nothing that links, loads or styles)
  strict: "ignore", // no console warnings for unusual input
  output: "htmlAndMathml", // the MathML is what screen readers read
  maxSize: 10, // em: \rule and friends cannot cover the page
  maxExpand: 500,
};
const CACHE_LIMIT = 500;
const cache = new Map(); // "D" or "I" + TeX -> HTML; a streamed reply re-renders the same formulas

/** TeX -> KaTeX HTML (the same string for the same formula; unsanitized). */
export function renderTex(tex, displayMode) {
  const key = (displayMode ? "D" : "I") + tex;
  let html = cache.get(key);
  if (html === undefined) {
    try {
      html = katex.renderToString(tex, { ...KATEX_OPTIONS, displayMode });
    } catch {
      html = `<span class="katex-error">${escapeText(tex)}</span>`;
    }
    if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value);
    cache.set(key, html);
  }
  return html;
}

function escapeText(text) {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

// The content of a formula never holds its own closing delimiter (so "$$a$$ and $$b$$" is two).
const DOUBLE_DOLLAR_BODY = String.raw`((?:[^$\\]|\\[\s\S]|\$(?!\$))+?)`;
const BRACKET_BODY = String.raw`((?:(?!\\\])[\s\S])+?)`;
const PAREN_BODY = String.raw`((?:(?!\\\))[\s\S])+?)`;
const BLOCK_RULES = [
  new RegExp(String.raw`^ {0,3}\$\$${DOUBLE_DOLLAR_BODY}\$\$[ \t]*(?:\n+|$)`),
  new RegExp(String.raw`^ {0,3}\\\[${BRACKET_BODY}\\\][ \t]*(?:\n+|$)`),
];
const INLINE_RULES = [
  [new RegExp(String.raw`^\$\$${DOUBLE_DOLLAR_BODY}\$\$`), true],
  [new RegExp(String.raw`^\\\[${BRACKET_BODY}\\\]`), true],
  [new RegExp(String.raw`^\\\(${PAREN_BODY}\\\)`), false],
  // $…$: no space inside either end, no `$` inside unless escaped, no digit right after the end.
  [/^\$(?![\s$])((?:\\[\s\S]|[^\\$])+?)(?<!\s)\$(?!\d)/, false],
];
const CLOSERS = { "$$": "$$", "\\[": "\\]", "\\(": "\\)" };

/** The opener `src` starts with (after up to 3 spaces for a block), when nothing after it closes it. */
function unclosedOpener(src, block) {
  const match = (block ? /^ {0,3}(\$\$|\\\[)/ : /^(\$\$|\\\[|\\\()/).exec(src);
  return match && !src.slice(match[0].length).includes(CLOSERS[match[1]]) ? match[1] : null;
}

/** marked extensions for math; `streaming`: an unclosed opener shows its source as plain text. */
export function mathExtensions({ streaming = false } = {}) {
  const block = {
    name: "mathBlock",
    level: "block",
    start(src) {
      const match = /(?:^|\n) {0,3}(?:\$\$|\\\[)/.exec(src);
      return match ? match.index + (match[0].startsWith("\n") ? 1 : 0) : undefined;
    },
    tokenizer(src) {
      for (const rule of BLOCK_RULES) {
        const match = rule.exec(src);
        if (match && match[1].trim()) return { type: "mathBlock", raw: match[0], tex: match[1].trim() };
      }
      // The whole rest of the reply, still streaming, after an opener that has not closed.
      if (streaming && unclosedOpener(src, true)) return { type: "mathBlock", raw: src, pending: src.trim() };
      return undefined;
    },
    renderer(token) {
      if (token.pending !== undefined) return `<p class="math-pending">${escapeText(token.pending)}</p>\n`;
      return `<div class="math-display">${renderTex(token.tex, true)}</div>\n`;
    },
  };
  const inline = {
    name: "mathInline",
    level: "inline",
    start(src) {
      const match = /(?<!\\)\$|\\[([]/.exec(src);
      return match ? match.index : undefined;
    },
    tokenizer(src) {
      for (const [rule, display] of INLINE_RULES) {
        const match = rule.exec(src);
        if (match && match[1].trim()) return { type: "mathInline", raw: match[0], tex: match[1].trim(), display };
      }
      if (streaming && unclosedOpener(src, false)) return { type: "mathInline", raw: src, pending: src };
      return undefined;
    },
    renderer(token) {
      if (token.pending !== undefined) return `<span class="math-pending">${escapeText(token.pending)}</span>`;
      return renderTex(token.tex, token.display);
    },
  };
  return [block, inline];
}
