// The transcript: one view per message of `state.messages`, kept in step with it (views are
// built once and updated in place, so streaming text does not rebuild the page), plus the
// per-message editors: edit a user message, comment on a reply.

import { formatChars } from "./attachments.js";
import { el, iconButton } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { currentGenerating, findMessage, messageState } from "./conversation_state.js";

const RENDER_INTERVAL_MS = 50;
const NEAR_BOTTOM_PX = 80;
const COPIED_SHOWN_MS = 1500;

/**
 * @param {object} state the conversation state (conversation_state.js)
 * @param {{transcript, messages, emptyState, input}} els
 * @param {object} actions regenerate(), rate(id, value), comment(id, text) and edit(id, text)
 *   (true when sent), requireConnection(), announce(text), rendered() after each render
 */
export function createTranscript(state, els, actions, { maxMessageChars }) {
  const views = new Map(); // message id -> {root, body, …}
  let renderTimer = null;

  // "Jump to latest": shown while the transcript is scrolled away from its end. A render follows
  // the reply whenever the end is in view, so jumping there also resumes following.
  const jump = el("button", { type: "button", class: "jump-latest", hidden: true, onclick: () => {
    els.transcript.scrollTop = els.transcript.scrollHeight;
    updateJump();
    els.input.focus(); // the button is gone; the message box is where the user goes next
  } }, el("span", { "aria-hidden": "true", text: "↓" }), "Jump to latest");
  els.transcript.after(el("div", { class: "jump-dock" }, jump));
  els.transcript.addEventListener("scroll", () => updateJump(), { passive: true });

  function updateJump() {
    jump.hidden = state.messages.length === 0 || nearBottom();
  }

  // Example prompts in the empty state fill the message box (and go nowhere until sent).
  els.emptyState.addEventListener("click", (event) => {
    const example = event.target.closest("[data-prompt]");
    if (!example) return;
    els.input.value = example.dataset.prompt;
    els.input.dispatchEvent(new Event("input", { bubbles: true })); // the composer resizes and counts
    els.input.focus();
  });

  function nearBottom() {
    const t = els.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < NEAR_BOTTOM_PX;
  }

  /** scroll: true keeps the end in view, "bottom" jumps there; rebuild: new views for every message. */
  function render({ scroll = false, rebuild = false } = {}) {
    clearTimeout(renderTimer);
    renderTimer = null;
    const stick = scroll === "bottom" || scroll || nearBottom();
    const focusWasInside = els.messages.contains(document.activeElement);
    const wanted = new Set(state.messages.map((m) => m.id));
    for (const [id, view] of views) {
      if (rebuild || !wanted.has(id)) {
        view.root.remove();
        views.delete(id);
      }
    }
    const lastId = state.messages.length ? state.messages[state.messages.length - 1].id : null;
    const busy = currentGenerating(state) !== null;
    let previous = null;
    for (const message of state.messages) {
      let view = views.get(message.id);
      if (!view) {
        view = message.role === "user" ? buildUserView(message) : buildAssistantView(message);
        views.set(message.id, view);
      }
      const expectedNext = previous ? previous.nextSibling : els.messages.firstChild;
      if (expectedNext !== view.root) els.messages.insertBefore(view.root, expectedNext);
      previous = view.root;
      if (message.role === "user") updateUserView(view, message, busy);
      else updateAssistantView(view, message, { isLast: message.id === lastId, busy });
    }
    els.emptyState.hidden = state.messages.length > 0 || state.historyPending !== null;
    els.transcript.setAttribute("aria-busy", state.historyPending !== null ? "true" : "false");
    if (stick) els.transcript.scrollTop = els.transcript.scrollHeight;
    updateJump();
    if (focusWasInside && !els.messages.contains(document.activeElement)) els.input.focus();
    actions.rendered();
  }

  /** Streaming text is drawn at most every RENDER_INTERVAL_MS. */
  function renderSoon() {
    if (renderTimer === null) renderTimer = setTimeout(render, RENDER_INTERVAL_MS);
  }

  function buildUserView(message) {
    const body = el("div", { class: "msg-body user-text" });
    const copy = iconButton("copy", "Copy message", { onclick: (e) => copyMessage(message.id, e.currentTarget) });
    const edit = iconButton("edit", "Edit message", { onclick: () => startEdit(message.id) });
    const actionsRow = el("div", { class: "msg-actions" }, copy, edit);
    const versions = buildVersionSwitch(message.id, "message");
    const files = message.attachments?.length
      ? el("ul", { class: "msg-attachments", "aria-label": "Attached files" }, ...message.attachments.map((file) =>
        el("li", { class: "attachment-chip", "data-name": file.name, title: file.name },
          el("span", { class: "chip-name" }, file.name), el("span", { class: "chip-size" }, formatChars(file.size)))))
      : null;
    const root = el("article", { class: "msg msg-user", "data-role": "user", "data-id": message.id, "aria-label": "You" },
      files, body, versions.root, actionsRow);
    return { root, body, actions: actionsRow, copy, edit, versions, renderedContent: null, editing: false };
  }

  function buildAssistantView(message) {
    const body = el("div", { class: "msg-body markdown" });
    const status = el("div", { class: "msg-status" });
    const statusLine = el("span", { class: "status-text" });
    const retry = el("button", { type: "button", class: "button small retry-button", text: "Retry",
      onclick: () => actions.regenerate() });
    status.append(statusLine, retry);
    const copy = iconButton("copy", "Copy reply", { onclick: (e) => copyMessage(message.id, e.currentTarget) });
    const up = iconButton("thumbUp", "Good reply", { className: "rate-up", onclick: () => actions.rate(message.id, 1) });
    const down = iconButton("thumbDown", "Bad reply", { className: "rate-down", onclick: () => actions.rate(message.id, -1) });
    const comment = iconButton("comment", "Comment on this reply", { onclick: () => toggleComment(message.id) });
    const regen = iconButton("regenerate", "Regenerate reply", { className: "regenerate", text: "Regenerate",
      onclick: () => actions.regenerate() });
    const more = iconButton("continue", "Continue this reply", { className: "continue", text: "Continue",
      onclick: () => actions.continueReply() });
    const actionsRow = el("div", { class: "msg-actions" }, copy, up, down, comment, more, regen);
    const commentShown = el("p", { class: "msg-comment" });
    const versions = buildVersionSwitch(message.id, "reply");
    const root = el("article", { class: "msg msg-assistant", "data-role": "assistant", "data-id": message.id,
      "aria-label": "Assistant" }, body, status, commentShown, versions.root, actionsRow);
    return { root, body, status, statusLine, retry, actions: actionsRow, copy, up, down, comment, regen, more,
      versions, commentShown, renderedContent: null, commentForm: null };
  }

  /** `‹ 2/3 ›` under a message with several versions (regenerated or edited); always visible. */
  function buildVersionSwitch(id, noun) {
    const go = (step) => {
      const message = findMessage(state, id);
      const index = message && message.versions ? message.versions.indexOf(id) : -1;
      const target = index >= 0 ? message.versions[index + step] : undefined;
      if (target !== undefined) actions.switchVersion(target);
    };
    const previous = iconButton("chevronLeft", `Previous version of this ${noun}`, { className: "small", onclick: () => go(-1) });
    const label = el("span", { class: "version-label" });
    const next = iconButton("chevronRight", `Next version of this ${noun}`, { className: "small", onclick: () => go(1) });
    const root = el("div", { class: "version-switch", role: "group", "aria-label": `Versions of this ${noun}` }, previous, label, next);
    return { root, previous, label, next };
  }

  function updateVersionSwitch(view, message, busy) {
    const versions = message.versions || null;
    const index = versions ? versions.indexOf(message.id) : -1;
    view.versions.root.hidden = index < 0;
    if (index < 0) return;
    view.versions.label.textContent = `${index + 1}/${versions.length}`;
    view.versions.label.setAttribute("aria-label", `Version ${index + 1} of ${versions.length}`);
    view.versions.previous.disabled = busy || !state.connected || index === 0;
    view.versions.next.disabled = busy || !state.connected || index === versions.length - 1;
  }

  function updateUserView(view, message, busy) {
    if (view.renderedContent !== message.content && !view.editing) {
      view.body.textContent = message.content;
      view.renderedContent = message.content;
    }
    view.edit.disabled = busy || !state.connected;
    updateVersionSwitch(view, message, busy);
  }

  function updateAssistantView(view, message, { isLast, busy }) {
    const stateName = messageState(message);
    view.root.dataset.state = stateName;
    view.root.setAttribute("aria-busy", message.generating ? "true" : "false");
    const streaming = Boolean(message.generating); // an unclosed formula stays text until it closes
    if (view.renderedContent !== message.content || view.renderedStreaming !== streaming) {
      view.body.innerHTML = renderMarkdown(message.content, { streaming });
      decorateCodeBlocks(view.body);
      view.renderedContent = message.content;
      view.renderedStreaming = streaming;
    }
    view.statusLine.textContent = statusText(message, stateName);
    // what the engine reused is known to the tab that saw `done` only (it is not stored): a hover, not
    // the line itself, which a reload shows the same
    view.statusLine.title = message.stats?.cached ? `${message.stats.cached.toLocaleString("en")} prompt tokens read from the engine's cache` : "";
    view.retry.hidden = !(stateName === "error" && isLast);
    view.retry.disabled = busy || !state.connected;
    view.status.hidden = !view.statusLine.textContent && view.retry.hidden;
    const finished = !message.generating;
    view.copy.hidden = !message.content;
    for (const button of [view.up, view.down, view.comment]) button.hidden = !finished;
    view.up.setAttribute("aria-pressed", message.rating === 1 ? "true" : "false");
    view.down.setAttribute("aria-pressed", message.rating === -1 ? "true" : "false");
    view.comment.setAttribute("aria-pressed", message.comment ? "true" : "false");
    view.commentShown.textContent = message.comment ? `Your comment: ${message.comment}` : "";
    view.commentShown.hidden = !message.comment;
    view.regen.hidden = !(finished && isLast && stateName !== "error");
    view.regen.disabled = busy || !state.connected;
    view.more.hidden = !(isLast && message.content && (stateName === "length" || stateName === "cancelled"));
    view.more.disabled = busy || !state.connected;
    view.actions.hidden = !finished && !message.content;
    updateVersionSwitch(view, message, busy);
  }

  function statusText(message, stateName) {
    switch (stateName) {
      case "waiting":
        if (!state.connected) return "Waiting for the connection…";
        return message.queued ? `Queued: position ${message.queued}` : "Waiting for the model…";
      case "generating": {
        if (!state.connected) return "Connection lost; the rest will follow when it is back…";
        const rate = liveRate(state.live.get(message.id));
        return rate ? `Generating… ${rate.toFixed(1)} tok/s` : "Generating…";
      }
      case "length":
        return "Stopped at the max tokens limit: Continue goes on from here." +
          statsSuffix(message);
      case "cancelled":
        return "Stopped." + statsSuffix(message);
      case "error":
        return `Error: ${message.detail || "the reply failed."}`;
      default:
        return statsSuffix(message).trim();
    }
  }

  function decorateCodeBlocks(container) {
    for (const pre of container.querySelectorAll("pre")) {
      const language = pre.dataset.language && pre.dataset.language !== "plaintext" ? pre.dataset.language : "";
      const copy = iconButton("copy", language ? `Copy ${language} code` : "Copy code", { className: "code-copy", text: "Copy" });
      copy.addEventListener("click", () => copyText(pre.textContent).then((ok) => flashCopied(copy, ok)));
      const header = el("div", { class: "code-header" }, el("span", { class: "code-language", text: language }), copy);
      const wrapper = el("div", { class: "code-block" });
      pre.replaceWith(wrapper);
      wrapper.append(header, pre);
    }
  }

  function copyMessage(id, button) {
    const message = findMessage(state, id);
    if (message) copyText(message.content).then((ok) => flashCopied(button, ok));
  }

  function flashCopied(button, ok) {
    const label = button.getAttribute("aria-label");
    button.classList.add(ok ? "copied" : "copy-failed");
    button.setAttribute("aria-label", ok ? "Copied" : "Copy failed");
    actions.announce(ok ? "Copied to the clipboard" : "Could not copy to the clipboard");
    setTimeout(() => {
      button.classList.remove("copied", "copy-failed");
      button.setAttribute("aria-label", label);
    }, COPIED_SHOWN_MS);
  }

  function toggleComment(id) {
    const view = views.get(id);
    const message = findMessage(state, id);
    if (!view || !message) return;
    const close = () => {
      view.commentForm.remove();
      view.commentForm = null;
      view.comment.focus();
    };
    if (view.commentForm) return close();
    const areaId = `comment-${id}`;
    const area = el("textarea", { id: areaId, rows: "2", maxlength: String(maxMessageChars) });
    area.value = message.comment || ""; // the stored comment, also after a reload (`history` carries it)
    const form = el("form", { class: "comment-form" },
      el("label", { for: areaId, text: "Comment on this reply (optional)" }),
      area,
      el("div", { class: "form-buttons" },
        el("button", { type: "button", class: "button", text: "Cancel", onclick: close }),
        el("button", { type: "submit", class: "button primary", text: "Save comment" })));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (actions.comment(id, area.value.trim())) close();
    });
    area.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.preventDefault(); close(); } });
    view.root.insertBefore(form, view.actions);
    view.commentForm = form;
    area.focus();
  }

  function startEdit(id) {
    const view = views.get(id);
    const message = findMessage(state, id);
    if (!view || !message || view.editing) return;
    view.editing = true;
    const areaId = `edit-${id}`;
    const area = el("textarea", { id: areaId, class: "edit-input", rows: "3" });
    area.value = message.content;
    const finish = () => {
      view.editing = false;
      view.renderedContent = null;
      form.replaceWith(view.body);
      view.actions.hidden = false;
      if (findMessage(state, id)) render();
    };
    const cancel = () => {
      finish();
      view.edit.focus();
    };
    const submit = () => {
      if (!area.value.trim() || !actions.edit(id, area.value)) return;
      finish();
      els.input.focus();
    };
    const later = state.messages.length - 1 - state.messages.indexOf(message);
    const warning = later > 1 ? el("p", { class: "edit-warning", id: `${areaId}-warning`, text:
      `Sending starts a new version from here: the ${later} messages below leave the chat and stay in ` +
      "the current version, which the ‹ › switch under this message brings back." }) : null;
    if (warning) area.setAttribute("aria-describedby", warning.id);
    const form = el("form", { class: "edit-form" },
      el("label", { class: "visually-hidden", for: areaId, text: "Edit your message" }),
      area, ...(warning ? [warning] : []),
      el("div", { class: "form-buttons" },
        el("button", { type: "button", class: "button", text: "Cancel", onclick: cancel }),
        el("button", { type: "submit", class: "button primary", text: "Send edited message" })));
    form.addEventListener("submit", (event) => { event.preventDefault(); submit(); });
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") { event.preventDefault(); cancel(); }
      else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
    });
    view.body.replaceWith(form);
    view.actions.hidden = true;
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  return { render, renderSoon };
}

function statsSuffix(message) {
  if (!message.stats) return "";
  const tokens = message.stats.tokens;
  const parts = [`${tokens} ${tokens === 1 ? "token" : "tokens"}`];
  if (message.stats.rate) parts.push(`${message.stats.rate.toFixed(1)} tok/s`);
  return " " + parts.join(" · ");
}

function liveRate(live) {
  if (!live || live.firstAt === null || live.lastAt === null) return null;
  const seconds = (performance.now() - live.firstAt) / 1000;
  if (seconds < 0.8) return null;
  // Pieces are coalesced every ~30 ms, so on fast hardware one frame holds several tokens:
  // count at least one token per frame, or about four characters per token, whichever is more.
  const tokens = Math.max(live.frames, live.chars / 4);
  return Math.max(0, tokens - 1) / seconds;
}

async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall back below (permission refused, document not focused, …)
  }
  try {
    const area = el("textarea", { class: "clipboard-helper", "aria-hidden": "true", tabindex: "-1" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  } catch {
    return false;
  }
}
