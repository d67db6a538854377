// The chat page: one WebSocket (docs/protocol.md, version 1), a sidebar of conversations, a
// streaming transcript and the composer. Plain ES modules, no build step:
//   conversation_state.js  the protocol and conversation state, a reducer over the server's frames
//                          (DOM-free; node --test static/chat/tests/)
//   socket.js              the WebSocket, reconnecting with backoff
//   transcript.js, sidebar.js, composer.js, notices.js, settings_dialog.js, model_status.js: the views
// This file wires them together: frames and the user's actions go into the state, and what the
// state says to do comes out to the socket and the views.

import { ChatSocket } from "./socket.js";
import {
  beginTurn, connectionLost, connectionOpened, createState, currentGenerating, findMessage, generatingConversations,
  openConversation, receive, requestEarlier, requestHistory,
} from "./conversation_state.js";
import { serverDefaults } from "./settings.js";
import { createComposer } from "./composer.js";
import { attachmentLimits } from "./attachments.js";
import { ERROR_TEXT, createNotices } from "./notices.js";
import { createSettingsDialog } from "./settings_dialog.js";
import { createSidebar } from "./sidebar.js";
import { createTranscript } from "./transcript.js";
import { createSearch } from "./search.js";
import { createConversationTools } from "./conversation_export.js";
import { createModelPicker, watchModelStatus } from "./model_status.js";

const $ = (id) => document.getElementById(id);
const input = $("composer-input");
const MAX_MESSAGE_CHARS = Number(document.body.dataset.maxMessageChars) || 32000;
const MAX_TURNS_IN_FLIGHT = Number(document.body.dataset.maxTurnsInFlight) || 1;
const DELETE_UNDO_MS = 8000;

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

const state = createState({ current: parseHash() });

const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws/chat/`;
const socket = new ChatSocket(wsUrl, {
  onFrame,
  onOpen: ({ reconnected }) => {
    notices.remove("offline");
    run(connectionOpened(state));
    settingsDialog.connected();
    if (reconnected) notices.announce("Reconnected");
  },
  onStatus: (status, detail) => {
    notices.connection(status, detail);
    if (status === "open") state.connected = true;
    else run(connectionLost(state));
    refresh();
  },
});

// --- the user's actions ------------------------------------------------------------------------

function requireConnection() {
  if (socket.isOpen) return true;
  notices.add("Not connected to the server. Your text is kept; try again when the connection is back.",
    { kind: "error", key: "offline" });
  return false;
}

function tooLarge(content) {
  if (content.length <= MAX_MESSAGE_CHARS) return false;
  notices.add(`The message has ${content.length} characters; the limit is ${MAX_MESSAGE_CHARS}.`,
    { kind: "error", key: "too_large" });
  return true;
}

/** Send a `send`, `edit`, `regenerate` or `continue` frame, then wait for its ack; false when it did not go out. */
function startTurn(frame) {
  if (state.pending || !requireConnection()) return false;
  frame = modelPicker.withModel(frame); // a new chat goes to the model picked in the header
  if (!socket.send({ ...frame, params: settingsDialog.params(), ...settingsDialog.frameFields(frame) })) {
    requireConnection(); // the socket closed just now: say so, and keep the text
    return false;
  }
  beginTurn(state, frame);
  refresh();
  return true;
}

function sendIfConnected(frame) {
  return requireConnection() && socket.send(frame);
}

function open(id) {
  if (id === state.current && id !== null) sidebar.closeIfOverlay();
  else run(openConversation(state, id));
}

/** Conversations other than the open one with a reply generating. */
function busyElsewhere() {
  return [...generatingConversations(state)].filter((id) => id !== state.current);
}

/** The user's replies are at their limit: name the chat that is replying, with a Stop for it. */
function busyNotice() {
  const [other] = busyElsewhere();
  if (other === undefined) {
    notices.add(ERROR_TEXT.busy, { kind: "error", key: "busy" });
    return;
  }
  const item = state.conversations.find((c) => c.id === other);
  const title = item ? item.title : `Conversation ${other}`;
  notices.add(`“${title}” is still replying, and one reply at a time is allowed. Stop it, or wait for it to finish.`,
    { kind: "error", key: "busy", action: { label: `Stop “${title}”`, keep: true, // the notice goes when that reply has ended
      run: () => sendIfConnected({ type: "stop", conversation: other }) } });
}

const deleting = new Map(); // conversation id -> timer: deleted in the page, sent once the undo has passed

function deleteWithUndo(id) {
  const item = state.conversations.find((c) => c.id === id);
  const title = item ? item.title : `Conversation ${id}`;
  if (!requireConnection()) return false;
  const send = () => {
    deleting.delete(id);
    sendIfConnected({ type: "delete", conversation: id });
  };
  deleting.set(id, setTimeout(send, DELETE_UNDO_MS));
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.current === id) run(openConversation(state, null));
  sidebar.render();
  notices.add(`Deleted “${title}”.`, { kind: "info", key: `deleted-${id}`, ms: DELETE_UNDO_MS, action: { label: "Undo", run: () => {
    clearTimeout(deleting.get(id));
    deleting.delete(id);
    socket.send({ type: "list" }); // it comes back in the list
    notices.announce(`Restored “${title}”`);
  } } });
  return true;
}

// Deletes still in their undo window are sent when the page goes away.
window.addEventListener("pagehide", () => {
  for (const [id, timer] of deleting) {
    clearTimeout(timer);
    socket.send({ type: "delete", conversation: id });
  }
  deleting.clear();
});

const actions = {
  submit(content, files = []) {
    if (tooLarge(content)) return false;
    if (currentGenerating(state)) {
      notices.add(ERROR_TEXT.busy, { kind: "info", key: "busy" });
      return false;
    }
    if (busyElsewhere().length >= MAX_TURNS_IN_FLIGHT) {
      busyNotice();
      return false;
    }
    return startTurn({ type: "send", conversation: state.current, content, ...(files.length ? { attachments: files } : {}) });
  },
  continueReply() {
    if (state.current !== null) startTurn({ type: "continue", conversation: state.current });
  },
  switchVersion(id) {
    if (state.current !== null) sendIfConnected({ type: "switch", conversation: state.current, message: id });
  },
  edit(id, content) {
    return !tooLarge(content) && startTurn({ type: "edit", conversation: state.current, message: id, content });
  },
  regenerate() {
    if (state.current !== null) startTurn({ type: "regenerate", conversation: state.current });
  },
  stop() {
    if (state.current !== null) sendIfConnected({ type: "stop", conversation: state.current });
  },
  rate(id, value) {
    const message = findMessage(state, id);
    if (!message) return;
    const rating = message.rating === value ? null : value; // pressing it again takes it back
    sendIfConnected({ type: "rate", message: id, rating, comment: message.comment || "" });
  },
  comment(id, comment) {
    const message = findMessage(state, id);
    return sendIfConnected({ type: "rate", message: id, rating: message ? message.rating : null, comment });
  },
  rename: (id, title) => sendIfConnected({ type: "rename", conversation: id, title }),
  remove: deleteWithUndo,
  open,
  requireConnection,
  announce: (text) => notices.announce(text),
  rendered: updateComposer,
};

// --- the views -----------------------------------------------------------------------------------

const modelPicker = createModelPicker($("model-picker"));
const notices = createNotices(
  { notices: $("notices"), liveStatus: $("live-status"), connection: $("connection-status"), input },
  { openSettings: () => settingsDialog.open() });
const settingsDialog = createSettingsDialog({
  open: $("settings-open"), dialog: $("settings-dialog"), form: $("settings-form"), system: $("setting-system"),
  temperature: $("setting-temperature"), temperatureValue: $("temperature-value"),
  maxTokens: $("setting-max-tokens"), reset: $("settings-reset"), cancel: $("settings-cancel"),
  topP: $("setting-top-p"), topK: $("setting-top-k"), minP: $("setting-min-p"),
  repetitionPenalty: $("setting-repetition-penalty"), stop: $("setting-stop"), maxTokensHint: $("max-tokens-hint"), preset: $("setting-preset"),
  presetName: $("setting-preset-name"), presetSave: $("preset-save"), presetDelete: $("preset-delete"),
  chip: $("settings-chip"), chipText: $("settings-chip-text"),
}, serverDefaults(document.body.dataset), { ...actions, send: (frame) => sendIfConnected(frame), current: () => state.current });
const transcript = createTranscript(state, {
  transcript: $("transcript"), messages: $("messages"), emptyState: $("empty-state"), input,
}, actions, { maxMessageChars: MAX_MESSAGE_CHARS });
const sidebar = createSidebar(state, {
  list: $("conversation-list"), listEmpty: $("sidebar-empty"), newChat: $("new-chat"),
  sidebarToggle: $("sidebar-toggle"), backdrop: $("backdrop"), close: $("sidebar-close"), input,
  covered: [$("main"), document.querySelector(".topbar")],
}, actions);
const composer = createComposer({
  composer: $("composer"), input, send: $("send-button"), stop: $("stop-button"), charCount: $("char-count"),
  attach: $("attach-button"), fileInput: $("attach-input"), chips: $("attachment-chips"), warning: $("context-warning"),
}, { ...actions,
  refuseFile: (text) => notices.add(text, { kind: "error", key: "attachment" }),
  context: () => {
    const active = settingsDialog.active();
    return { history: state.messages, system: active.system || document.body.dataset.defaultSystemPrompt || "",
      maxNewTokens: active.max_new_tokens };
  },
}, { maxMessageChars: MAX_MESSAGE_CHARS, attachmentLimits: attachmentLimits(document.body.dataset) });
const search = createSearch({
  input: $("search-input"), results: $("search-results"), status: $("search-status"), sidebar: $("sidebar"),
}, { send: (frame) => socket.send(frame), open, closeIfOverlay: () => sidebar.closeIfOverlay() });
const conversationTools = createConversationTools({
  tools: $("conversation-tools"), exportMenu: $("export-menu"), exportMarkdown: $("export-markdown"),
  exportJson: $("export-json"),
  shareOpen: $("share-open"), shareDialog: $("share-dialog"), shareUrl: $("share-url"), shareStatus: $("share-status"),
  shareCreate: $("share-create"), shareCopy: $("share-copy"), shareRevoke: $("share-revoke"),
  shareClose: $("share-close"), importButton: $("import-button"), importFile: $("import-file"),
}, { open, announce: (text) => notices.announce(text),
  notify: (text, kind) => notices.add(text, { kind, key: "conversation-io" }) });

const loadEarlier = $("load-earlier");
loadEarlier.addEventListener("click", () => run(requestEarlier(state)));

function updateComposer() {
  composer.update({ generating: currentGenerating(state) !== null, waiting: state.pending !== null,
    connected: state.connected });
}

function refresh() {
  modelPicker.show(state.current === null ? null : state.model);
  const title = state.current === null ? "New chat" : state.title || `Conversation ${state.current}`;
  if (document.title !== `${title} · Chat`) {
    $("conversation-title").textContent = title;
    document.title = `${title} · Chat`;
  }
  conversationTools.update(state.current);
  loadEarlier.hidden = !state.more;
  loadEarlier.disabled = state.loadingEarlier;
  settingsDialog.updateChip();
  updateComposer();
}

// --- from the state to the socket and the views ---------------------------------------------------

/** Carry out the effects the state asked for (conversation_state.js lists them). */
function run(effects) {
  let render = null;
  let sidebarChanged = false;
  for (const effect of effects) {
    if (effect.type === "send") socket.send(effect.frame);
    else if (effect.type === "announce") notices.announce(effect.text);
    else if (effect.type === "notice") notices.add(effect.text, { kind: "info", key: effect.key });
    else if (effect.type === "error" && effect.frame.code === "busy") busyNotice();
    else if (effect.type === "error") notices.error(effect.frame);
    else if (effect.type === "restore") composer.restore(effect.content);
    else if (effect.type === "navigate") {
      notices.clearErrors();
      setHash(state.current);
      sidebarChanged = true;
    } else if (effect.type === "sidebar") sidebarChanged = true;
    else if (effect.type === "render") {
      render = {
        scroll: render?.scroll === "bottom" || effect.scroll === "bottom" ? "bottom" : Boolean(render?.scroll || effect.scroll),
        rebuild: Boolean(render?.rebuild || effect.rebuild),
        soon: (render ? render.soon : true) && Boolean(effect.soon),
      };
    }
  }
  if (sidebarChanged) {
    if (busyElsewhere().length < MAX_TURNS_IN_FLIGHT && !currentGenerating(state)) notices.remove("busy");
    sidebar.render();
  }
  if (render && render.soon) transcript.renderSoon();
  else if (render) transcript.render(render);
  refresh();
}

function onFrame(frame) {
  if (frame.type === "search_results") {
    search.show(frame);
    return;
  }
  if (frame.type === "changed") search.refresh(); // titles or conversations changed: so may the results
  if (frame.type === "ack") notices.clearErrors(); // a turn went through: earlier refusals are behind us
  settingsDialog.receive(frame); // presets, a chat's settings
  if (frame.type === "conversations" && deleting.size) {
    frame = { ...frame, items: (frame.items || []).filter((c) => !deleting.has(c.id)) };
  }
  try {
    run(receive(state, frame, performance.now()));
  } catch (err) {
    // A bug in one frame's handling must not stop the page; re-sync the open conversation.
    console.warn("chat: failed to handle", frame.type, err);
    if (state.current !== null) run(requestHistory(state, state.current));
  }
  if (frame.type === "done" && frame.conversation === state.current && document.activeElement === document.body) {
    input.focus();
  }
}

// --- page events and start -----------------------------------------------------------------------

$("new-chat").addEventListener("click", () => {
  open(null);
  sidebar.closeIfOverlay();
  input.focus();
});
window.addEventListener("hashchange", () => {
  if (location.hash && !/^#c=\d+$/.test(location.hash)) return; // an in-page link, not a conversation
  const id = parseHash();
  if (id !== state.current) open(id);
});
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  input.focus();
});
window.addEventListener("online", () => socket.retryNow());

// While replies generate, refresh their live status (tokens/s) once a second.
setInterval(() => { if (state.messages.some((m) => m.generating)) transcript.render(); }, 1000);

refresh();
transcript.render();
watchModelStatus({ status: $("model-status"), name: $("model-name") }, modelPicker);
socket.connect();
if (!sidebar.overlay) input.focus();

// For tests and debugging: a read-only peek at the page's state.
window.chatApp = { state, socket };
