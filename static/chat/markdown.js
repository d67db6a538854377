// Model output -> safe HTML: Markdown (marked), code highlighted (highlight.js), math typeset
// (KaTeX, math.js), always sanitized (DOMPurify).
//
// Nothing a model prints may run or load anything: raw HTML in the reply is shown as text, images
// become plain links (no request leaves the page), and DOMPurify sanitizes the final HTML anyway.
// KaTeX's output needs inline styles, a few SVG paths and MathML: the sanitizer lets exactly those
// through (styles only inside `.katex`, and only sizes, offsets and colours; see keepKatexStyle).

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import hljs from "../vendor/highlight.js/highlight.min.js";
import { mathExtensions } from "./math.js";

const AUTO_DETECT_LIMIT = 20000; // characters; longer unlabelled blocks stay plain

export function escapeHtml(text) {
  return String(text)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

function highlight(code, lang) {
  const language = (lang || "").trim().split(/\s+/)[0].toLowerCase();
  try {
    if (language && hljs.getLanguage(language)) {
      return { html: hljs.highlight(code, { language, ignoreIllegals: true }).value, language };
    }
    if (code.length <= AUTO_DETECT_LIMIT) {
      const result = hljs.highlightAuto(code);
      return { html: result.value, language: result.language || "plaintext" };
    }
  } catch {
    // fall through to plain text
  }
  return { html: escapeHtml(code), language: "plaintext" };
}

const MARKED_OPTIONS = {
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    html({ text, block }) {
      // The model printed raw HTML: show it, never interpret it.
      const shown = escapeHtml(block ? text.replace(/\n+$/, "") : text);
      return block ? `<p class="raw-html">${shown}</p>\n` : shown;
    },
    code({ text, lang }) {
      const { html, language } = highlight(text, lang);
      const label = escapeHtml(language);
      return `<pre data-language="${label}"><code class="hljs language-${label}">${html}</code></pre>\n`;
    },
    image({ href, text }) {
      const label = escapeHtml(text || href || "image");
      return href ? `<a href="${escapeHtml(href)}">[image: ${label}]</a>` : `[image: ${label}]`;
    },
  },
};
const marked = new Marked(MARKED_OPTIONS, { extensions: mathExtensions() });
// While a reply streams: a formula that has not closed yet is shown as its source (math.js).
const markedStreaming = new Marked(MARKED_OPTIONS, { extensions: mathExtensions({ streaming: true }) });

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true, mathMl: true }, // MathML: KaTeX's, for screen readers
  FORBID_TAGS: [
    "style", "form", "input", "button", "textarea", "select", "option", "img", "picture", "source",
    "video", "audio", "track", "iframe", "object", "embed", "link", "meta", "base",
  ],
  FORBID_ATTR: ["style", "id", "name", "srcset", "formaction", "action"],
  ALLOW_DATA_ATTR: false,
  ADD_TAGS: ["svg", "path", "line"], // KaTeX draws radicals, arrows and braces with these
  ADD_ATTR: ["data-language", "viewBox", "preserveAspectRatio", "d", "x1", "y1", "x2", "y2", "stroke-width"],
  ADD_FORBID_CONTENTS: ["annotation"], // KaTeX's copy of the TeX source inside the MathML
};

// KaTeX positions its boxes with inline styles. Kept only inside `.katex` (which raw HTML from a
// model can never produce: it is escaped), only these properties, and no url(), so at worst a
// formula is oddly sized; it can never load anything or lay itself over the page.
const KATEX_STYLE_PROPERTIES = new Set([
  "background-color", "border-bottom-width", "border-color", "border-right-style", "border-right-width",
  "border-style", "border-top-width", "border-width", "bottom", "color", "height", "left", "margin",
  "margin-left", "margin-right", "margin-top", "min-width", "padding-left", "position", "text-shadow", "top",
  "vertical-align", "width",
]);

function keepKatexStyle(style) {
  return style.split(";").every((declaration) => {
    if (!declaration.trim()) return true;
    const [property, ...rest] = declaration.split(":");
    const value = rest.join(":").trim().toLowerCase();
    const name = property.trim().toLowerCase();
    if (!KATEX_STYLE_PROPERTIES.has(name) || !/^[-\w.#%(), ]+$/.test(value) || /url|expression|var\(/.test(value)) {
      return false;
    }
    return name !== "position" || value === "relative";
  });
}

DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName === "style" && node.closest?.(".katex") && keepKatexStyle(data.attrValue)) {
    data.forceKeepAttr = true;
  }
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Markdown text -> sanitized HTML string; `streaming`: the text may still grow (a reply being generated). */
export function renderMarkdown(text, { streaming = false } = {}) {
  let html;
  try {
    html = (streaming ? markedStreaming : marked).parse(text || "");
  } catch {
    html = `<p>${escapeHtml(text || "")}</p>`;
  }
  return DOMPurify.sanitize(html, PURIFY_CONFIG);
}
