// The chat page: one WebSocket (docs/protocol.md, version 1), a sidebar of conversations,
// a streaming transcript, and the composer. Plain ES module, no build step.

import { ChatSocket } from "./socket.js";
import { renderMarkdown } from "./markdown.js";
import { ICONS } from "./icons.js";
import { DEFAULTS, loadSettings, saveSettings, toParams } from "./settings.js";

const HEALTH_INTERVAL_MS = 10000;
const RENDER_INTERVAL_MS = 50;
const NEAR_BOTTOM_PX = 80;

const $ = (id) => document.getElementById(id);
const els = {
  app: $("app"),
  sidebar: $("sidebar"),
  sidebarToggle: $("sidebar-toggle"),
  backdrop: $("backdrop"),
  newChat: $("new-chat"),
  list: $("conversation-list"),
  listEmpty: $("sidebar-empty"),
  modelStatus: $("model-status"),
  modelName: $("model-name"),
  conversationTitle: $("conversation-title"),
  notices: $("notices"),
  transcript: $("transcript"),
  emptyState: $("empty-state"),
  messages: $("messages"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send-button"),
  stop: $("stop-button"),
  charCount: $("char-count"),
  connection: $("connection-status"),
  liveStatus: $("live-status"),
  settingsOpen: $("settings-open"),
  settingsDialog: $("settings-dialog"),
  settingsForm: $("settings-form"),
  settingsSystem: $("setting-system"),
  settingsTemperature: $("setting-temperature"),
  settingsTemperatureValue: $("temperature-value"),
  settingsMaxTokens: $("setting-max-tokens"),
  settingsReset: $("settings-reset"),
};

const MAX_MESSAGE_CHARS = Number(document.body.dataset.maxMessageChars) || 32000;

const state = {
  conversations: [],
  current: null, // the open conversation id, or null for a new chat
  title: "",
  messages: [], // active messages of the open conversation
  historyPending: null, // conversation id whose `history` answer we wait for
  buffered: [], // frames of that conversation that arrived while we waited
  pending: null, // {kind, content, conversation}: a send/edit/regenerate not yet answered
  live: new Map(), // reply id -> {conversation, firstAt, lastAt, frames, chars}
  comments: new Map(), // message id -> comment (history frames carry only the rating)
  // a conversation being renamed or confirmed for deletion; draft: the title typed so far
  sidebar: { id: null, mode: null, draft: null, focused: false },
  settings: loadSettings(),
  connected: false,
};

// --- small helpers ---------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function iconButton(icon, label, { className = "", text = null, onclick } = {}) {
  const button = el("button", { type: "button", class: `icon-button ${className}`.trim(), "aria-label": label, title: label });
  button.innerHTML = ICONS[icon];
  if (text) button.append(el("span", { class: "button-text", text }));
  if (onclick) button.addEventListener("click", onclick);
  return button;
}

function codePointLength(text) {
  let n = 0;
  for (const _ of text) n += 1; // eslint-disable-line no-unused-vars
  return n;
}

/** The part of `text` after its first `skip` code points (offsets count characters, not UTF-16 units). */
function dropCodePoints(text, skip) {
  if (skip <= 0) return text;
  let index = 0;
  for (const ch of text) {
    if (skip === 0) break;
    index += ch.length;
    skip -= 1;
  }
  return text.slice(index);
}

function announce(text) {
  els.liveStatus.textContent = "";
  // A fresh text node makes screen readers announce repeated messages too.
  setTimeout(() => { els.liveStatus.textContent = text; }, 30);
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

function flashCopied(button, ok) {
  const label = button.getAttribute("aria-label");
  button.classList.add(ok ? "copied" : "copy-failed");
  button.setAttribute("aria-label", ok ? "Copied" : "Copy failed");
  announce(ok ? "Copied to the clipboard" : "Could not copy to the clipboard");
  setTimeout(() => {
    button.classList.remove("copied", "copy-failed");
    button.setAttribute("aria-label", label);
  }, 1500);
}

// --- the socket --------------------------------------------------------------------------

const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws/chat/`;
const socket = new ChatSocket(wsUrl, {
  onFrame: handleFrame,
  onOpen: ({ reconnected }) => {
    state.connected = true;
    // Whatever streamed while we were away is re-read: the list, and the open conversation's history.
    state.live.clear();
    send({ type: "list" });
    if (state.current !== null) requestHistory(state.current);
    if (reconnected) announce("Reconnected");
    updateComposer();
  },
  onStatus: showConnection,
});

let connectionClearTimer = null;
function showConnection(status, detail) {
  clearTimeout(connectionClearTimer);
  els.connection.dataset.state = status;
  if (status === "open") {
    state.connected = true;
    els.connection.textContent = detail.reconnected ? "Reconnected." : "";
    if (detail.reconnected) connectionClearTimer = setTimeout(() => { els.connection.textContent = ""; }, 4000);
  } else {
    const wasConnected = state.connected;
    state.connected = false;
    if (status === "connecting") {
      els.connection.textContent = detail.reconnect ? "Reconnecting…" : "Connecting…";
    } else if (status === "waiting") {
      els.connection.textContent = `Connection lost. Reconnecting in ${detail.seconds} s…`;
    } else if (status === "refused") {
      els.connection.textContent = "Sign in to chat.";
    }
    if (wasConnected) {
      // Nothing more will arrive for replies in flight until we are back.
      for (const message of state.messages) if (message.generating) message.dirty = true;
      scheduleRender();
    }
  }
  updateComposer();
}

function send(frame) {
  return socket.send(frame);
}

function requestHistory(id) {
  state.historyPending = id;
  state.buffered = [];
  send({ type: "history", conversation: id });
}

// --- frames from the server ---------------------------------------------------------------

const HANDLERS = {
  ack: onAck,
  turn: onTurn,
  queued: onQueued,
  token: onToken,
  done: onDone,
  history: onHistory,
  conversations: onConversations,
  changed: onChanged,
  rated: onRated,
  error: onError,
};

function handleFrame(frame) {
  const handler = HANDLERS[frame.type];
  if (!handler) return; // unknown frame types are ignored, as the protocol asks
  try {
    handler(frame);
  } catch (err) {
    // A bug in one frame's handling must not stop the page; re-sync the open conversation.
    console.warn("chat: failed to handle", frame.type, err);
    if (state.current !== null) requestHistory(state.current);
  }
}

/** Frames of the open conversation wait while its history is on the way, then replay on top of it. */
function bufferIfLoading(frame) {
  if (state.historyPending !== null && frame.conversation === state.historyPending) {
    state.buffered.push(frame);
    return true;
  }
  return false;
}

function onAck(frame) {
  const pending = state.pending;
  state.pending = null;
  if (pending && pending.kind === "send" && pending.conversation === null && state.current === null) {
    openConversation(frame.conversation, { loadHistory: false });
  }
  send({ type: "list" });
  updateComposer();
}

function liveEntry(replyId, conversation) {
  let entry = state.live.get(replyId);
  if (!entry) {
    entry = { conversation, firstAt: null, lastAt: null, frames: 0, chars: 0, startedAt: performance.now() };
    state.live.set(replyId, entry);
    renderSidebar();
  }
  return entry;
}

function onTurn(frame) {
  liveEntry(frame.reply, frame.conversation);
  if (state.pending && state.pending.kind === "regenerate" && state.pending.conversation === frame.conversation) {
    state.pending = null;
  }
  send({ type: "list" });
  if (frame.conversation !== state.current || bufferIfLoading(frame)) return;
  applyTurn(frame);
}

function applyTurn(frame) {
  if (findMessage(frame.reply)) return; // already shown (history came first)
  if (frame.replaces !== undefined && frame.replaces !== null) {
    const index = state.messages.findIndex((m) => m.id === frame.replaces);
    if (index >= 0) state.messages.splice(index);
  } else if (!frame.user) {
    const last = state.messages[state.messages.length - 1];
    if (last && last.role === "assistant") state.messages.pop(); // regenerate: the old reply is superseded
  }
  if (frame.user && !findMessage(frame.user.id)) {
    state.messages.push(userMessage(frame.user.id, frame.user.content));
  }
  state.messages.push(assistantMessage({ id: frame.reply, content: "", finish_reason: null, generating: true }));
  announce("The model is replying");
  renderTranscript({ scroll: true });
}

function onQueued(frame) {
  if (frame.conversation !== state.current || bufferIfLoading(frame)) return;
  const message = findMessage(frame.message);
  if (message && message.generating) {
    if (message.queued !== frame.position) announce(`Queued: position ${frame.position}`);
    message.queued = frame.position;
    message.dirty = true;
    scheduleRender();
  }
}

function onToken(frame) {
  const entry = liveEntry(frame.message, frame.conversation);
  const now = performance.now();
  if (entry.firstAt === null) entry.firstAt = now;
  entry.lastAt = now;
  entry.frames += 1;
  entry.chars += codePointLength(frame.text || "");
  if (frame.conversation !== state.current || bufferIfLoading(frame)) return;
  applyToken(frame);
}

function applyToken(frame) {
  let message = findMessage(frame.message);
  const offset = Number.isInteger(frame.offset) ? frame.offset : null;
  if (!message) {
    if (offset === null || offset === 0) {
      // A reply we have not been told about (its turn was missed): show it from here.
      message = assistantMessage({ id: frame.message, content: "", finish_reason: null, generating: true });
      state.messages.push(message);
      renderTranscript({ scroll: true });
    } else {
      requestHistory(state.current);
      state.buffered.push(frame);
      return;
    }
  }
  if (!message.generating) return; // late piece of a reply that already ended
  let text = frame.text || "";
  if (offset !== null) {
    if (offset > message.length) {
      // We missed a piece: fetch the text so far, then continue from there.
      requestHistory(state.current);
      state.buffered.push(frame);
      return;
    }
    text = dropCodePoints(text, message.length - offset);
  }
  if (!text) return;
  message.content += text;
  message.length += codePointLength(text);
  message.queued = null;
  message.dirty = true;
  scheduleRender();
}

function onDone(frame) {
  const entry = state.live.get(frame.message);
  state.live.delete(frame.message);
  renderSidebar();
  send({ type: "list" });
  if (frame.conversation !== state.current || bufferIfLoading(frame)) return;
  applyDone(frame, entry);
}

function applyDone(frame, entry) {
  const message = findMessage(frame.message);
  if (!message) {
    requestHistory(state.current);
    return;
  }
  const wasGenerating = message.generating;
  message.generating = false;
  message.queued = null;
  message.finish_reason = frame.finish_reason;
  if (frame.detail) message.detail = frame.detail;
  const tokens = frame.usage && frame.usage.completion_tokens;
  if (tokens) {
    message.stats = { tokens };
    if (entry && entry.firstAt !== null && entry.lastAt > entry.firstAt && tokens > 1) {
      message.stats.rate = (tokens - 1) / ((entry.lastAt - entry.firstAt) / 1000);
    }
  }
  message.dirty = true;
  renderTranscript();
  if (tokens && message.length === 0 && frame.finish_reason !== "error") {
    requestHistory(state.current); // the text went missing in a race with a reload: read it back
  }
  if (wasGenerating) {
    const words = {
      stop: "Reply finished",
      length: "Reply finished: it reached the max tokens limit",
      cancelled: "Reply stopped",
      error: `Reply failed${frame.detail ? `: ${frame.detail}` : ""}`,
    };
    announce(words[frame.finish_reason] || "Reply finished");
  }
  if (document.activeElement === document.body) els.input.focus();
}

function onHistory(frame) {
  if (frame.conversation !== state.current) return; // an answer for a conversation we left
  if (state.historyPending === frame.conversation) state.historyPending = null;
  state.title = frame.title || "";
  state.messages = (frame.messages || []).map((item) =>
    item.role === "user" ? userMessage(item.id, item.content) : assistantMessage(item)
  );
  for (const message of state.messages) if (message.generating) liveEntry(message.id, frame.conversation);
  for (const view of messageViews.values()) view.stale = true; // rebuild everything from the history
  renderTranscript({ scroll: "bottom" });
  updateTitle();
  if (!state.conversations.some((c) => c.id === frame.conversation)) send({ type: "list" });
  const replay = state.buffered;
  state.buffered = [];
  for (const buffered of replay) {
    if (buffered.type === "turn") applyTurn(buffered);
    else if (buffered.type === "token") applyToken(buffered);
    else if (buffered.type === "done") applyDone(buffered, null);
    else if (buffered.type === "queued") onQueued(buffered);
    else if (buffered.type === "rated") applyRated(buffered);
  }
}

function onConversations(frame) {
  state.conversations = Array.isArray(frame.items) ? frame.items : [];
  const current = state.conversations.find((c) => c.id === state.current);
  if (current) state.title = current.title;
  updateTitle();
  renderSidebar();
}

function onChanged(frame) {
  send({ type: "list" });
  if (frame.deleted !== undefined && frame.deleted === state.current) {
    openConversation(null);
    addNotice("This conversation was deleted.", { kind: "info", key: "deleted" });
  }
}

function onRated(frame) {
  state.comments.set(frame.message, frame.comment || "");
  if (bufferIfLoading(frame)) return;
  applyRated(frame);
}

function applyRated(frame) {
  const message = findMessage(frame.message);
  if (!message) return;
  message.rating = frame.rating;
  message.comment = frame.comment || "";
  message.dirty = true;
  renderTranscript();
  announce(frame.rating === 1 ? "Rated helpful" : frame.rating === -1 ? "Rated not helpful" : "Rating saved");
}

const ERROR_TEXT = {
  busy: "A reply is still being generated. Wait for it to finish, or press Stop first.",
  no_worker: "No inference worker is running, so the model cannot reply. Start one " +
    "(python manage.py inference_worker), then press Retry on the reply.",
  not_found: "That conversation or message no longer exists.",
  auth_required: "Sign in to chat.",
  internal: "The server failed to handle that. Please try again.",
};

function onError(frame) {
  const pending = state.pending;
  if (frame.code === "not_found" && state.historyPending !== null && frame.conversation === state.historyPending) {
    state.historyPending = null;
    addNotice("That conversation no longer exists.", { kind: "info", key: "not_found" });
    openConversation(null);
    return;
  }
  if (frame.code === "not_generating") {
    updateComposer();
    return; // stop raced with the end of the reply: nothing to say
  }
  if (pending && frame.code !== "no_worker") {
    state.pending = null;
    if (pending.content && !els.input.value.trim()) {
      els.input.value = pending.content; // give the user their text back
      autosize();
    }
  }
  let text = ERROR_TEXT[frame.code] || frame.detail || "Something went wrong.";
  if (frame.code === "bad_params" || frame.code === "too_large" || frame.code === "bad_field") {
    text = frame.detail || text;
  }
  const options = { kind: "error", key: frame.code };
  if (frame.code === "bad_params") options.action = { label: "Open settings", run: openSettings };
  addNotice(text, options);
  updateComposer();
}

// --- messages ----------------------------------------------------------------------------

function userMessage(id, content) {
  return { id, role: "user", content: content || "", dirty: true };
}

function assistantMessage(item) {
  const content = item.content || "";
  return {
    id: item.id,
    role: "assistant",
    content,
    length: codePointLength(content),
    finish_reason: item.finish_reason || null,
    generating: Boolean(item.generating),
    rating: item.rating === undefined ? null : item.rating,
    comment: state.comments.get(item.id) || "",
    queued: null,
    detail: item.detail || null,
    stats: null,
    dirty: true,
  };
}

function findMessage(id) {
  return state.messages.find((m) => m.id === id) || null;
}

function currentGenerating() {
  return state.messages.find((m) => m.role === "assistant" && m.generating) || null;
}

function messageState(message) {
  if (message.generating) return message.length > 0 ? "generating" : "waiting";
  return message.finish_reason || "stop";
}

const messageViews = new Map(); // message id -> {root, body, status, actions, …}
let renderTimer = null;

function scheduleRender() {
  if (renderTimer !== null) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    renderTranscript();
  }, RENDER_INTERVAL_MS);
}

function nearBottom() {
  const t = els.transcript;
  return t.scrollHeight - t.scrollTop - t.clientHeight < NEAR_BOTTOM_PX;
}

function renderTranscript({ scroll = false } = {}) {
  const stick = scroll === "bottom" || nearBottom() || scroll;
  const focusWasInside = els.messages.contains(document.activeElement);
  const wanted = new Set(state.messages.map((m) => m.id));
  for (const [id, view] of messageViews) {
    if (!wanted.has(id) || view.stale) {
      view.root.remove();
      messageViews.delete(id);
    }
  }
  const lastId = state.messages.length ? state.messages[state.messages.length - 1].id : null;
  const busy = currentGenerating() !== null;
  let previous = null;
  for (const message of state.messages) {
    let view = messageViews.get(message.id);
    if (!view) {
      view = message.role === "user" ? buildUserView(message) : buildAssistantView(message);
      messageViews.set(message.id, view);
      message.dirty = true;
    }
    const expectedNext = previous ? previous.nextSibling : els.messages.firstChild;
    if (expectedNext !== view.root) els.messages.insertBefore(view.root, expectedNext);
    previous = view.root;
    updateView(view, message, { isLast: message.id === lastId, busy });
  }
  els.emptyState.hidden = state.messages.length > 0 || state.historyPending !== null;
  els.transcript.setAttribute("aria-busy", state.historyPending !== null ? "true" : "false");
  if (stick) els.transcript.scrollTop = els.transcript.scrollHeight;
  if (focusWasInside && !els.messages.contains(document.activeElement)) els.input.focus();
  updateComposer();
}

function buildUserView(message) {
  const body = el("div", { class: "msg-body user-text" });
  const copy = iconButton("copy", "Copy message", { onclick: (e) => copyMessage(message.id, e.currentTarget) });
  const edit = iconButton("edit", "Edit message", { onclick: () => startEdit(message.id) });
  const actions = el("div", { class: "msg-actions" }, copy, edit);
  const root = el("article", { class: "msg msg-user", "data-role": "user", "data-id": message.id, "aria-label": "You" },
    body, actions);
  return { root, body, actions, copy, edit, renderedContent: null, editing: false };
}

function buildAssistantView(message) {
  const body = el("div", { class: "msg-body markdown" });
  const status = el("div", { class: "msg-status" });
  const statusText = el("span", { class: "status-text" });
  const retry = el("button", { type: "button", class: "button small retry-button", text: "Retry",
    onclick: () => regenerate() });
  status.append(statusText, retry);
  const copy = iconButton("copy", "Copy reply", { onclick: (e) => copyMessage(message.id, e.currentTarget) });
  const up = iconButton("thumbUp", "Good reply", { className: "rate-up", onclick: () => rate(message.id, 1) });
  const down = iconButton("thumbDown", "Bad reply", { className: "rate-down", onclick: () => rate(message.id, -1) });
  const comment = iconButton("comment", "Comment on this reply", { onclick: () => toggleComment(message.id) });
  const regen = iconButton("regenerate", "Regenerate reply", { className: "regenerate", text: "Regenerate",
    onclick: () => regenerate() });
  const actions = el("div", { class: "msg-actions" }, copy, up, down, comment, regen);
  const commentShown = el("p", { class: "msg-comment" });
  const root = el("article", { class: "msg msg-assistant", "data-role": "assistant", "data-id": message.id,
    "aria-label": "Assistant" }, body, status, commentShown, actions);
  return { root, body, status, statusText, retry, actions, copy, up, down, comment, regen, commentShown,
    renderedContent: null, commentForm: null };
}

function updateView(view, message, { isLast, busy }) {
  if (message.role === "user") {
    if (view.renderedContent !== message.content && !view.editing) {
      view.body.textContent = message.content;
      view.renderedContent = message.content;
    }
    view.edit.disabled = busy || !state.connected;
    message.dirty = false;
    return;
  }
  const stateName = messageState(message);
  view.root.dataset.state = stateName;
  view.root.setAttribute("aria-busy", message.generating ? "true" : "false");
  if (view.renderedContent !== message.content) {
    view.body.innerHTML = renderMarkdown(message.content);
    decorateCodeBlocks(view.body);
    view.renderedContent = message.content;
  }
  view.statusText.textContent = statusText(message, stateName);
  view.retry.hidden = !(stateName === "error" && isLast);
  view.retry.disabled = busy || !state.connected;
  view.status.hidden = !view.statusText.textContent && view.retry.hidden;
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
  view.actions.hidden = !finished && !message.content;
  message.dirty = false;
}

function statusText(message, stateName) {
  const live = state.live.get(message.id);
  switch (stateName) {
    case "waiting":
      if (!state.connected) return "Waiting for the connection…";
      return message.queued ? `Queued: position ${message.queued}` : "Waiting for the model…";
    case "generating": {
      if (!state.connected) return "Connection lost; the rest will follow when it is back…";
      const rate = liveRate(live);
      return rate ? `Generating… ${rate.toFixed(1)} tok/s` : "Generating…";
    }
    case "length":
      return "Stopped at the max tokens limit. Raise “Max tokens” in Settings for longer replies." +
        statsSuffix(message);
    case "cancelled":
      return "Stopped." + statsSuffix(message);
    case "error":
      return `Error: ${message.detail || "the reply failed."}`;
    default:
      return statsSuffix(message).trim();
  }
}

function statsSuffix(message) {
  if (!message.stats) return "";
  const parts = [`${message.stats.tokens} tokens`];
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
  const message = findMessage(id);
  if (message) copyText(message.content).then((ok) => flashCopied(button, ok));
}

// --- actions -----------------------------------------------------------------------------

function params() {
  return toParams(state.settings);
}

function requireConnection() {
  if (socket.isOpen) return true;
  addNotice("Not connected to the server. Your text is kept; try again when the connection is back.",
    { kind: "error", key: "offline" });
  return false;
}

function submitComposer() {
  const content = els.input.value;
  if (!content.trim()) return;
  if (content.length > MAX_MESSAGE_CHARS) {
    addNotice(`The message has ${content.length} characters; the limit is ${MAX_MESSAGE_CHARS}.`,
      { kind: "error", key: "too_large" });
    return;
  }
  if (currentGenerating()) {
    addNotice(ERROR_TEXT.busy, { kind: "info", key: "busy" });
    return;
  }
  if (state.pending || !requireConnection()) return;
  if (!send({ type: "send", conversation: state.current, content, params: params() })) {
    requireConnection(); // the socket closed just now: say so, and keep the text
    return;
  }
  state.pending = { kind: "send", content, conversation: state.current };
  els.input.value = "";
  autosize();
  updateComposer();
}

function stopReply() {
  if (state.current === null) return;
  if (requireConnection()) send({ type: "stop", conversation: state.current });
}

function regenerate() {
  if (state.current === null || state.pending || !requireConnection()) return;
  state.pending = { kind: "regenerate", conversation: state.current };
  send({ type: "regenerate", conversation: state.current, params: params() });
  // No ack comes for a regenerate: the `turn` (or an error) ends the wait.
  setTimeout(() => { if (state.pending && state.pending.kind === "regenerate") { state.pending = null; updateComposer(); } }, 3000);
}

function rate(id, value) {
  const message = findMessage(id);
  if (!message || !requireConnection()) return;
  const rating = message.rating === value ? null : value;
  send({ type: "rate", message: id, rating, comment: message.comment || "" });
}

function toggleComment(id) {
  const view = messageViews.get(id);
  const message = findMessage(id);
  if (!view || !message) return;
  if (view.commentForm) {
    view.commentForm.remove();
    view.commentForm = null;
    view.comment.focus();
    return;
  }
  const areaId = `comment-${id}`;
  const area = el("textarea", { id: areaId, rows: "2", maxlength: String(MAX_MESSAGE_CHARS) });
  area.value = message.comment || "";
  const close = () => {
    form.remove();
    view.commentForm = null;
    view.comment.focus();
  };
  const form = el("form", { class: "comment-form" },
    el("label", { for: areaId, text: "Comment on this reply (optional)" }),
    area,
    el("div", { class: "form-buttons" },
      el("button", { type: "button", class: "button", text: "Cancel", onclick: close }),
      el("button", { type: "submit", class: "button primary", text: "Save comment" })));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!requireConnection()) return;
    const current = findMessage(id);
    send({ type: "rate", message: id, rating: current ? current.rating : null, comment: area.value.trim() });
    close();
  });
  area.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.preventDefault(); close(); } });
  view.root.insertBefore(form, view.actions);
  view.commentForm = form;
  area.focus();
}

function startEdit(id) {
  const view = messageViews.get(id);
  const message = findMessage(id);
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
    const current = findMessage(id);
    if (current) renderTranscript();
  };
  const cancel = () => {
    finish();
    view.edit.focus();
  };
  const submit = () => {
    const content = area.value;
    if (!content.trim()) return;
    if (content.length > MAX_MESSAGE_CHARS) {
      addNotice(`The message has ${content.length} characters; the limit is ${MAX_MESSAGE_CHARS}.`,
        { kind: "error", key: "too_large" });
      return;
    }
    if (state.pending || !requireConnection()) return;
    state.pending = { kind: "edit", conversation: state.current };
    send({ type: "edit", conversation: state.current, message: id, content, params: params() });
    finish();
    els.input.focus();
  };
  const form = el("form", { class: "edit-form" },
    el("label", { class: "visually-hidden", for: areaId, text: "Edit your message" }),
    area,
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

// --- conversations and the sidebar ---------------------------------------------------------

function parseHash() {
  const match = /^#c=(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

function setHash(id) {
  const url = id === null ? location.pathname + location.search : `#c=${id}`;
  if ((id === null && location.hash) || (id !== null && location.hash !== `#c=${id}`)) {
    history.replaceState(null, "", url);
  }
}

function openConversation(id, { loadHistory = true } = {}) {
  if (id === state.current && id !== null) {
    closeSidebarIfOverlay();
    return;
  }
  state.current = id;
  state.messages = [];
  state.buffered = [];
  state.historyPending = null;
  state.pending = state.pending && state.pending.conversation === id ? state.pending : null;
  const item = state.conversations.find((c) => c.id === id);
  state.title = item ? item.title : "";
  setHash(id);
  if (id !== null && loadHistory) requestHistory(id);
  renderTranscript();
  renderSidebar();
  updateTitle();
}

function updateTitle() {
  const title = state.current === null ? "New chat" : state.title || `Conversation ${state.current}`;
  els.conversationTitle.textContent = title;
  document.title = `${title} · Chat`;
}

let sidebarRendering = false;
function renderSidebar() {
  const focused = document.activeElement;
  const focusKey = focused && els.list.contains(focused) ? focused.dataset.focusKey : null;
  sidebarRendering = true;
  try {
    els.list.replaceChildren();
    for (const item of state.conversations) els.list.append(conversationItem(item));
  } finally {
    sidebarRendering = false;
  }
  els.listEmpty.hidden = state.conversations.length > 0;
  els.newChat.setAttribute("aria-current", state.current === null ? "page" : "false");
  if (focusKey) {
    const again = els.list.querySelector(`[data-focus-key="${focusKey}"]`);
    if (again) again.focus();
  }
}

function conversationItem(item) {
  const isCurrent = item.id === state.current;
  const generating = [...state.live.values()].some((entry) => entry.conversation === item.id);
  const li = el("li", { class: `conversation${isCurrent ? " current" : ""}`, "data-id": item.id });
  const mode = state.sidebar.id === item.id ? state.sidebar.mode : null;
  if (mode === "rename") {
    const input = el("input", { type: "text", class: "rename-input", maxlength: "200",
      "aria-label": "New title", "data-focus-key": `rename-input-${item.id}` });
    input.value = state.sidebar.draft ?? item.title;
    input.addEventListener("input", () => { state.sidebar.draft = input.value; });
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      state.sidebar = { id: null, mode: null, draft: null, focused: false };
      if (save && title && title !== item.title && requireConnection()) {
        send({ type: "rename", conversation: item.id, title });
        item.title = title; // shown at once; the `changed` answer confirms it
      }
      renderSidebar();
      const button = els.list.querySelector(`[data-focus-key="rename-${item.id}"]`);
      if (button) button.focus();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      else if (event.key === "Escape") { event.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", () => { if (!sidebarRendering && input.isConnected) finish(true); });
    li.append(input);
    if (!state.sidebar.focused) {
      state.sidebar.focused = true;
      queueMicrotask(() => { input.focus(); input.select(); });
    }
    return li;
  }
  if (mode === "delete") {
    const confirmText = el("span", { class: "confirm-text", text: `Delete “${item.title}”?` });
    const yes = el("button", { type: "button", class: "button small danger", text: "Delete",
      "data-focus-key": `confirm-delete-${item.id}`,
      onclick: () => {
        state.sidebar = { id: null, mode: null, draft: null, focused: false };
        if (requireConnection()) send({ type: "delete", conversation: item.id });
        renderSidebar();
        els.newChat.focus();
      } });
    const no = el("button", { type: "button", class: "button small", text: "Cancel",
      "data-focus-key": `cancel-delete-${item.id}`,
      onclick: () => {
        state.sidebar = { id: null, mode: null, draft: null, focused: false };
        renderSidebar();
        const button = els.list.querySelector(`[data-focus-key="delete-${item.id}"]`);
        if (button) button.focus();
      } });
    li.classList.add("confirming");
    li.append(confirmText, el("span", { class: "confirm-buttons" }, yes, no));
    if (!state.sidebar.focused) {
      state.sidebar.focused = true;
      queueMicrotask(() => no.focus());
    }
    return li;
  }
  const open = el("button", { type: "button", class: "conversation-open", "data-focus-key": `open-${item.id}`,
    "aria-current": isCurrent ? "page" : null, title: item.title,
    onclick: () => { openConversation(item.id); closeSidebarIfOverlay(); } },
  el("span", { class: "conversation-title", text: item.title }));
  if (generating) open.append(el("span", { class: "generating-dot", title: "Generating" },
    el("span", { class: "visually-hidden", text: " (generating)" })));
  const rename = iconButton("edit", `Rename “${item.title}”`, { className: "small" });
  rename.dataset.focusKey = `rename-${item.id}`;
  rename.addEventListener("click", () => {
    state.sidebar = { id: item.id, mode: "rename", draft: null, focused: false };
    renderSidebar();
  });
  const remove = iconButton("trash", `Delete “${item.title}”`, { className: "small" });
  remove.dataset.focusKey = `delete-${item.id}`;
  remove.addEventListener("click", () => {
    state.sidebar = { id: item.id, mode: "delete", draft: null, focused: false };
    renderSidebar();
  });
  li.append(open, el("span", { class: "conversation-actions" }, rename, remove));
  return li;
}

const overlayQuery = window.matchMedia("(max-width: 800px)");

function setSidebar(open, { focus = true } = {}) {
  document.body.classList.toggle("sidebar-open", open);
  els.sidebarToggle.setAttribute("aria-expanded", String(open));
  els.sidebarToggle.setAttribute("aria-label", open ? "Hide conversations" : "Show conversations");
  const overlay = open && overlayQuery.matches;
  els.backdrop.hidden = !overlay;
  // While the panel covers the page, the rest of the page is out of reach (keyboard and screen readers).
  for (const region of [document.getElementById("main"), document.querySelector(".topbar")]) region.inert = overlay;
  if (!focus) return;
  if (open) els.newChat.focus();
  else els.sidebarToggle.focus();
}

function closeSidebarIfOverlay() {
  if (overlayQuery.matches && document.body.classList.contains("sidebar-open")) {
    setSidebar(false, { focus: false });
    els.input.focus();
  }
}

// --- notices -------------------------------------------------------------------------------

function addNotice(text, { kind = "error", key = null, action = null } = {}) {
  if (key) {
    const existing = els.notices.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (existing) existing.remove();
  }
  const notice = el("div", { class: `notice notice-${kind}`, "data-key": key, role: kind === "error" ? "alert" : "status" },
    el("p", { class: "notice-text", text }));
  if (action) {
    notice.append(el("button", { type: "button", class: "button small", text: action.label,
      onclick: () => { notice.remove(); action.run(); } }));
  }
  const dismiss = iconButton("close", "Dismiss notice", { className: "small notice-dismiss",
    onclick: () => { notice.remove(); els.input.focus(); } });
  notice.append(dismiss);
  els.notices.append(notice);
  if (kind === "info") setTimeout(() => notice.remove(), 8000);
}

// --- composer ------------------------------------------------------------------------------

function autosize() {
  els.input.style.height = "auto";
  els.input.style.height = `${Math.min(els.input.scrollHeight, window.innerHeight * 0.4)}px`;
  const length = els.input.value.length;
  const over = length > MAX_MESSAGE_CHARS;
  els.charCount.textContent = length > MAX_MESSAGE_CHARS * 0.8 ? `${length} / ${MAX_MESSAGE_CHARS}` : "";
  els.charCount.classList.toggle("over", over);
}

function updateComposer() {
  const generating = currentGenerating() !== null;
  els.stop.hidden = !generating;
  els.stop.disabled = !state.connected;
  els.send.disabled = generating || state.pending !== null || !state.connected;
  els.composer.dataset.state = generating ? "generating" : "idle";
}

els.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  submitComposer();
});
els.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    submitComposer();
  }
});
els.input.addEventListener("input", autosize);
els.stop.addEventListener("click", stopReply);
els.newChat.addEventListener("click", () => {
  openConversation(null);
  closeSidebarIfOverlay();
  els.input.focus();
});
els.sidebarToggle.addEventListener("click", () => setSidebar(!document.body.classList.contains("sidebar-open")));
els.backdrop.addEventListener("click", () => setSidebar(false));
$("sidebar-close").addEventListener("click", () => setSidebar(false));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && overlayQuery.matches && document.body.classList.contains("sidebar-open")) {
    setSidebar(false);
  }
});
overlayQuery.addEventListener("change", () => setSidebar(!overlayQuery.matches, { focus: false }));
window.addEventListener("hashchange", () => {
  if (location.hash && !/^#c=\d+$/.test(location.hash)) return; // an in-page link, not a conversation
  const id = parseHash();
  if (id !== state.current) openConversation(id);
});
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  els.input.focus();
});
window.addEventListener("online", () => socket.retryNow());

// --- settings ------------------------------------------------------------------------------

function fillSettingsForm(settings) {
  els.settingsSystem.value = settings.system;
  els.settingsTemperature.value = String(settings.temperature);
  els.settingsTemperatureValue.textContent = Number(settings.temperature).toFixed(2);
  els.settingsMaxTokens.value = String(settings.max_new_tokens);
}

function openSettings() {
  state.settings = loadSettings(); // another tab may have changed them
  fillSettingsForm(state.settings);
  els.settingsDialog.showModal();
  els.settingsSystem.focus();
}

els.settingsOpen.addEventListener("click", openSettings);
els.settingsTemperature.addEventListener("input", () => {
  els.settingsTemperatureValue.textContent = Number(els.settingsTemperature.value).toFixed(2);
});
els.settingsReset.addEventListener("click", () => fillSettingsForm(DEFAULTS));
$("settings-cancel").addEventListener("click", () => els.settingsDialog.close("cancel"));
// Saved in the form's submit (Save, or Enter in a field), which runs before the dialog closes:
// the dialog's "close" event comes a task later, so anything reading the settings right after
// the dialog disappears would race a save made there.
els.settingsForm.addEventListener("submit", () => {
  state.settings = saveSettings({
    system: els.settingsSystem.value,
    temperature: Number(els.settingsTemperature.value),
    max_new_tokens: Number(els.settingsMaxTokens.value),
  });
  announce("Settings saved");
});
els.settingsDialog.addEventListener("close", () => {
  els.settingsOpen.focus();
});
window.addEventListener("storage", (event) => {
  if (event.key === "chat.settings") state.settings = loadSettings();
});

// --- model health --------------------------------------------------------------------------

let healthTimer = null;
async function pollHealth() {
  clearTimeout(healthTimer);
  let health = "down";
  let label = "Server unreachable";
  let title = "";
  try {
    const response = await fetch("/status", { cache: "no-store", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (response.ok && body.ready) {
      const model = String(body.model || "model");
      const short = model.replace(/\/+$/, "").split("/").pop();
      health = "ok";
      label = `${short} · ready`;
      title = `${model}${Array.isArray(body.workers) ? ` (${body.workers.length} worker${body.workers.length === 1 ? "" : "s"})` : ""}`;
    } else {
      health = "starting";
      label = "Model not ready";
      title = body.detail || body.status || `HTTP ${response.status}`;
    }
  } catch {
    // the server is down or restarting; the socket's status line says more
  }
  els.modelStatus.dataset.health = health;
  els.modelName.textContent = label;
  els.modelStatus.title = title;
  els.modelStatus.setAttribute("aria-label", title ? `${label}: ${title}` : label);
  healthTimer = setTimeout(pollHealth, HEALTH_INTERVAL_MS);
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) pollHealth(); });

// --- start ---------------------------------------------------------------------------------

// While replies generate, refresh their live status (tokens/s) once a second.
setInterval(() => {
  if (state.messages.some((m) => m.generating)) {
    for (const message of state.messages) if (message.generating) message.dirty = true;
    renderTranscript();
  }
}, 1000);

state.current = parseHash();
if (overlayQuery.matches) setSidebar(false, { focus: false });
else setSidebar(true, { focus: false });
updateTitle();
renderTranscript();
autosize();
pollHealth();
socket.connect();
if (!overlayQuery.matches) els.input.focus();

// For tests and debugging: a read-only peek at the page's state.
window.chatApp = { state, socket };
