// What the page tells the user besides the transcript: notices (errors, information), the
// connection line under the composer, and announcements for screen readers.

import { el, iconButton } from "./dom.js";

const INFO_NOTICE_MS = 8000;
const RECONNECTED_SHOWN_MS = 4000;

export const ERROR_TEXT = {
  busy: "A reply is still being generated. Wait for it to finish, or press Stop first.",
  no_worker: "No inference worker is running, so the model cannot reply. Start one " +
    "(python manage.py inference_worker), then press Retry on the reply.",
  not_found: "That conversation or message no longer exists.",
  auth_required: "Sign in to chat.",
  too_many_sockets: "This chat is open in too many tabs or windows. Close some; this one connects again by itself.",
  internal: "The server failed to handle that. Please try again.",
};

// The server's own words say best what was wrong with what the user sent.
const DETAIL_FIRST = new Set(["bad_params", "too_large", "bad_field", "too_many_guests", "rate_limited"]);
const SIGN_IN_URL = "/accounts/login/";

/** What an `error` frame says to the user. */
export function errorText(frame) {
  const fallback = ERROR_TEXT[frame.code] || frame.detail || "Something went wrong.";
  // Workers run, but none for this chat's model: the server's detail names the model.
  const modelMissing = frame.code === "no_worker" && /serves the model/.test(frame.detail || "");
  return DETAIL_FIRST.has(frame.code) || modelMissing ? frame.detail || fallback : fallback;
}

/**
 * @param {{notices: Element, liveStatus: Element, connection: Element, input: Element}} els
 * @param {{openSettings: Function}} actions
 */
export function createNotices(els, { openSettings }) {
  let connectionClearTimer = null;

  function announce(text) {
    els.liveStatus.textContent = "";
    // A fresh text node makes screen readers announce repeated messages too.
    setTimeout(() => { els.liveStatus.textContent = text; }, 30);
  }

  function add(text, { kind = "error", key = null, action = null, ms = INFO_NOTICE_MS, link = null } = {}) {
    if (key) {
      const existing = els.notices.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (existing) existing.remove();
    }
    const paragraph = el("p", { class: "notice-text", text });
    if (link) paragraph.append(" ", el("a", { href: link.href, text: link.label }));
    const notice = el("div", { class: `notice notice-${kind}`, "data-key": key, role: kind === "error" ? "alert" : "status" },
      paragraph);
    if (action) {
      notice.append(el("button", { type: "button", class: "button small", text: action.label,
        onclick: () => { if (!action.keep) notice.remove(); action.run(); } }));
    }
    notice.append(iconButton("close", "Dismiss notice", { className: "small notice-dismiss",
      onclick: () => { notice.remove(); els.input.focus(); } }));
    els.notices.append(notice);
    if (kind === "info") setTimeout(() => notice.remove(), ms);
  }

  /** An `error` frame, in words. */
  function error(frame) {
    const text = errorText(frame);
    const action = frame.code === "bad_params" ? { label: "Open settings", run: openSettings } : null;
    // No more guests from this address for now: signing in is the way in.
    const link = frame.code === "too_many_guests" ? { href: frame.signin || SIGN_IN_URL, label: "Sign in" } : null;
    add(text, { kind: "error", key: frame.code, action, link });
  }

  /** The socket's state (socket.js onStatus), on the line under the composer. */
  function connection(status, detail) {
    clearTimeout(connectionClearTimer);
    els.connection.dataset.state = status;
    if (status === "open") {
      els.connection.textContent = detail.reconnected ? "Reconnected." : "";
      if (detail.reconnected) connectionClearTimer = setTimeout(() => { els.connection.textContent = ""; }, RECONNECTED_SHOWN_MS);
    } else if (status === "connecting") {
      els.connection.textContent = detail.reconnect ? "Reconnecting…" : "Connecting…";
    } else if (status === "waiting") {
      els.connection.textContent = `Connection lost. Reconnecting in ${detail.seconds} s…`;
    } else if (status === "refused") {
      els.connection.textContent = "Sign in to chat.";
    }
  }

  /** Take a notice down when its cause has ended (a reply finished, the connection is back). */
  function remove(key) {
    const existing = els.notices.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (existing) existing.remove();
  }

  /** Errors are about what the user just did: they go once the user moves on (another chat, a sent turn). */
  function clearErrors() {
    for (const notice of els.notices.querySelectorAll(".notice-error")) notice.remove();
  }

  return { announce, add, error, connection, remove, clearErrors };
}
