// Model output -> safe HTML: Markdown (marked), code highlighted (highlight.js), always sanitized (DOMPurify).
//
// Nothing a model prints may run or load anything: raw HTML in the reply is shown as text, images
// become plain links (no request leaves the page), and DOMPurify sanitizes the final HTML anyway.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import hljs from "../vendor/highlight.js/highlight.min.js";

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

const marked = new Marked({
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
});

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true }, // no SVG or MathML
  FORBID_TAGS: [
    "style", "form", "input", "button", "textarea", "select", "option", "img", "picture", "source",
    "video", "audio", "track", "iframe", "object", "embed", "link", "meta", "base",
  ],
  FORBID_ATTR: ["style", "id", "name", "srcset", "formaction", "action"],
  ALLOW_DATA_ATTR: false,
  ADD_ATTR: ["data-language"],
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Markdown text -> sanitized HTML string. */
export function renderMarkdown(text) {
  let html;
  try {
    html = marked.parse(text || "");
  } catch {
    html = `<p>${escapeHtml(text || "")}</p>`;
  }
  return DOMPurify.sanitize(html, PURIFY_CONFIG);
}
