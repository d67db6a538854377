// The open conversation as the page knows it, apart from the DOM: a reducer over the server's
// frames (docs/protocol.md, version 1) and the few client actions that change the same state.
// No `document` or `window` here, so Node's test runner drives it (static/chat/tests/).
//
// Every function updates `state` in place and returns what the page should do about it, a list
// of effects:
//   {type: "send", frame}                   a frame to send (`list`, `history`)
//   {type: "render", scroll, soon, rebuild} the transcript changed (scroll: true keeps the end in
//                                           view, "bottom" jumps there; soon: may wait a moment)
//   {type: "sidebar"}                       the list, or which conversations are generating, changed
//   {type: "navigate"}                      `state.current` changed
//   {type: "announce", text}                a line for screen readers
//   {type: "notice", key, text}             an informational notice
//   {type: "error", frame}                  an `error` frame the user should read
//   {type: "restore", content}              a refused message's text, back to the composer

export function createState({ current = null } = {}) {
  return {
    connected: false,
    conversations: [], // [{id, title, updated}], most recent first
    current, // the open conversation id, or null for a new chat
    title: "",
    model: "", // the open conversation's model (from its history or the list; "" while unknown)
    messages: [], // active messages of the open conversation
    historyPending: null, // the conversation whose `history` answer we wait for
    more: false, // older messages of the open conversation than those shown exist (history's `more`)
    loadingEarlier: false, // an earlier page was asked for and has not come
    buffered: [], // frames that arrived while we waited, replayed on top of the answer
    pending: null, // {kind, conversation, content}: a send/edit/regenerate not yet acked
    live: new Map(), // reply id -> {conversation, firstAt, lastAt, frames, chars}: replies generating
  };
}

// --- text: offsets count code points (characters), not UTF-16 units ------------------------

export function codePointLength(text) {
  let n = 0;
  for (const _ of text) n += 1; // eslint-disable-line no-unused-vars
  return n;
}

/** The part of `text` after its first `skip` code points. */
export function dropCodePoints(text, skip) {
  if (skip <= 0) return text;
  let index = 0;
  for (const ch of text) {
    if (skip === 0) break;
    index += ch.length;
    skip -= 1;
  }
  return text.slice(index);
}

// --- messages ------------------------------------------------------------------------------

/** A user's message; `attachments` are its files, [{name, size}] (or {name, content} as sent). */
export function userMessage(id, content, attachments = []) {
  const message = { id, role: "user", content: content || "" };
  if (attachments && attachments.length) {
    message.attachments = attachments.map((f) => ({ name: f.name, size: f.size ?? (f.content || "").length }));
  }
  return message;
}

export function assistantMessage(item) {
  const content = item.content || "";
  return {
    id: item.id,
    role: "assistant",
    content,
    length: codePointLength(content),
    finish_reason: item.finish_reason || null,
    generating: Boolean(item.generating),
    rating: item.rating === undefined ? null : item.rating,
    comment: item.comment || "",
    queued: null, // position in the queue while the reply waits
    detail: item.detail || null,
    stats: replyStats(item), // {tokens, rate?} once done, as the server measured them
  };
}

/** A finished reply's statistics from a `done` frame or a `history` item (null while generating). */
export function replyStats(item) {
  const tokens = item.usage && item.usage.completion_tokens;
  if (!tokens) return null;
  const stats = { tokens };
  if (typeof item.tokens_per_second === "number" && item.tokens_per_second > 0) stats.rate = item.tokens_per_second;
  const cached = item.usage.cached_tokens; // prompt tokens the engine reused from its cache (done only)
  if (Number.isInteger(cached) && cached > 0) stats.cached = cached;
  return stats;
}

/** The ids of a message's versions, oldest first (regenerated replies, edited messages), or null. */
function versionsOf(item) {
  return Array.isArray(item.versions) && item.versions.length > 1 ? item.versions : null;
}

/** A new version that replaced `replaced`: it lists the same versions plus itself. */
function nextVersion(message, replaced) {
  if (replaced) message.versions = [...(replaced.versions || [replaced.id]), message.id];
  return message;
}

export function findMessage(state, id) {
  return state.messages.find((m) => m.id === id) || null;
}

/** The ids of the conversations with a reply generating (the open one or others). */
export function generatingConversations(state) {
  return new Set([...state.live.values()].map((entry) => entry.conversation));
}

export function currentGenerating(state) {
  return state.messages.find((m) => m.role === "assistant" && m.generating) || null;
}

/** waiting | generating | stop | length | cancelled | error */
export function messageState(message) {
  if (message.generating) return message.length > 0 ? "generating" : "waiting";
  return message.finish_reason || "stop";
}

// --- client actions ----------------------------------------------------------------------------

export function requestHistory(state, id) {
  state.historyPending = id;
  state.buffered = [];
  return [{ type: "send", frame: { type: "history", conversation: id } }];
}

/** "Load earlier messages": the page of messages before the first one shown. */
export function requestEarlier(state) {
  if (!state.more || state.loadingEarlier || state.current === null || !state.messages.length) return [];
  state.loadingEarlier = true;
  return [{ type: "send", frame: { type: "history", conversation: state.current, before: state.messages[0].id } }];
}

export function openConversation(state, id, { loadHistory = true } = {}) {
  if (id === state.current && id !== null) return [];
  state.current = id;
  state.more = false;
  state.loadingEarlier = false;
  state.messages = [];
  state.buffered = [];
  state.historyPending = null;
  if (state.pending && state.pending.conversation !== id) state.pending = null;
  const item = state.conversations.find((c) => c.id === id);
  state.title = item ? item.title : "";
  state.model = item ? item.model || "" : "";
  const effects = id !== null && loadHistory ? requestHistory(state, id) : [];
  return [...effects, { type: "navigate" }, { type: "render", rebuild: true }];
}

/** A `send`, `edit` or `regenerate` frame went out: wait for its `ack` (or an error). */
export function beginTurn(state, frame) {
  state.pending = {
    kind: frame.type,
    conversation: frame.conversation ?? null,
    content: frame.content ?? null,
    ...(frame.model ? { model: frame.model } : {}), // a new chat's chosen model
    ...(frame.attachments ? { attachments: frame.attachments } : {}),
  };
}

/** The socket (re)opened: whatever streamed while we were away is read again. */
export function connectionOpened(state) {
  state.connected = true;
  state.live.clear();
  state.pending = null; // its ack was lost with the old socket; the history shows whether it was stored
  const effects = [{ type: "send", frame: { type: "list" } }, { type: "sidebar" }, { type: "render" }];
  if (state.current !== null) effects.push(...requestHistory(state, state.current));
  return effects;
}

export function connectionLost(state) {
  const was = state.connected;
  state.connected = false;
  // Nothing more arrives for replies in flight until we are back: their status line says so.
  return was ? [{ type: "render" }] : [];
}

// --- frames from the server ----------------------------------------------------------------

/** Apply one server frame; `now` (ms) times the replies' tokens/s. Unknown types are ignored. */
export function receive(state, frame, now = 0) {
  const effects = [];
  const handler = HANDLERS[frame.type];
  if (handler) handler(state, frame, effects, now);
  return effects;
}

const list = { type: "send", frame: { type: "list" } };

/** Frames of a conversation whose history is on the way wait, then replay on top of it. */
function bufferIfLoading(state, frame) {
  const loading = state.historyPending !== null &&
    (frame.conversation === state.historyPending || frame.type === "rated"); // rated names no conversation
  if (loading) state.buffered.push(frame);
  return loading;
}

function liveEntry(state, replyId, conversation, fx) {
  let entry = state.live.get(replyId);
  if (!entry) {
    entry = { conversation, firstAt: null, lastAt: null, frames: 0, chars: 0 };
    state.live.set(replyId, entry);
    fx.push({ type: "sidebar" });
  }
  return entry;
}

function onAck(state, frame, fx) {
  const pending = state.pending;
  const ours = pending !== null && (pending.conversation === null || pending.conversation === frame.conversation);
  if (ours) state.pending = null;
  if (ours && pending.kind === "send" && pending.conversation === null && state.current === null) {
    fx.push(...openConversation(state, frame.conversation, { loadHistory: false }));
    state.model = pending.model || ""; // the list that follows names the model the server chose
  }
  fx.push(list);
  // A history asked for after this turn already holds it; otherwise show the turn now (the
  // `turn` frame that follows is for other tabs, and finds it shown).
  if (!ours || frame.conversation !== state.current || state.historyPending === frame.conversation) return;
  if (frame.continues !== undefined) {
    reopen(state, frame.continues, fx);
    return;
  }
  const replaced = removeFrom(state, frame.replaces);
  if (pending.kind !== "regenerate" && !findMessage(state, frame.message)) {
    state.messages.push(nextVersion(userMessage(frame.message, pending.content, pending.attachments), replaced));
  }
  if (frame.reply !== undefined) addReply(state, frame.reply, fx, pending.kind === "regenerate" ? replaced : null);
  fx.push({ type: "render", scroll: true });
}

/** Edit and regenerate: the replaced message and all after it leave the shown branch (the server
 * keeps them as the earlier version); returns the replaced message, or null. */
function removeFrom(state, id) {
  if (id === undefined || id === null) return null;
  const index = state.messages.findIndex((m) => m.id === id);
  return index >= 0 ? state.messages.splice(index)[0] : null;
}

function addReply(state, id, fx, replaced = null) {
  if (findMessage(state, id)) return;
  state.messages.push(nextVersion(assistantMessage({ id, content: "", generating: true }), replaced));
  fx.push({ type: "announce", text: "The model is replying" });
}

/** `continue`: the reply generates again, going on from its text (tokens come with offsets after it). */
function reopen(state, id, fx) {
  const message = findMessage(state, id);
  if (!message || message.generating) return;
  Object.assign(message, { generating: true, finish_reason: null, detail: null, stats: null, queued: null });
  fx.push({ type: "announce", text: "The model is continuing its reply" }, { type: "render", scroll: true });
}

function onTurn(state, frame, fx) {
  liveEntry(state, frame.reply, frame.conversation, fx);
  fx.push(list);
  if (frame.conversation !== state.current || bufferIfLoading(state, frame)) return;
  applyTurn(state, frame, fx);
}

function applyTurn(state, frame, fx) {
  if (frame.continues !== undefined) return reopen(state, frame.continues, fx);
  if (findMessage(state, frame.reply)) return; // already shown (our ack, or history came first)
  let replaced = removeFrom(state, frame.replaces);
  let replacedReply = null;
  if (!replaced && !frame.user) {
    const last = state.messages[state.messages.length - 1];
    if (last && last.role === "assistant") replacedReply = state.messages.pop(); // regenerate: superseded
  }
  if (frame.user && !findMessage(state, frame.user.id)) {
    state.messages.push(nextVersion(userMessage(frame.user.id, frame.user.content, frame.user.attachments), replaced));
  }
  addReply(state, frame.reply, fx, replacedReply);
  fx.push({ type: "render", scroll: true });
}

function onQueued(state, frame, fx) {
  if (frame.conversation !== state.current || bufferIfLoading(state, frame)) return;
  const message = findMessage(state, frame.message);
  if (message && message.generating) {
    if (message.queued !== frame.position) fx.push({ type: "announce", text: `Queued: position ${frame.position}` });
    message.queued = frame.position;
    fx.push({ type: "render", soon: true });
  }
}

function onToken(state, frame, fx, now) {
  const entry = liveEntry(state, frame.message, frame.conversation, fx);
  if (entry.firstAt === null) entry.firstAt = now;
  entry.lastAt = now;
  entry.frames += 1;
  entry.chars += codePointLength(frame.text || "");
  if (frame.conversation !== state.current || bufferIfLoading(state, frame)) return;
  applyToken(state, frame, fx);
}

/** We missed a piece: fetch the text so far, then continue from there with this frame. */
function resync(state, frame, fx) {
  fx.push(...requestHistory(state, state.current));
  state.buffered.push(frame);
}

function applyToken(state, frame, fx) {
  let message = findMessage(state, frame.message);
  const offset = Number.isInteger(frame.offset) ? frame.offset : null;
  if (!message) {
    if (offset !== null && offset > 0) return resync(state, frame, fx);
    // A reply we have not been told about (its turn was missed): show it from here.
    message = assistantMessage({ id: frame.message, content: "", generating: true });
    state.messages.push(message);
    fx.push({ type: "render", scroll: true });
  }
  if (!message.generating) return; // a late piece of a reply that already ended
  let text = frame.text || "";
  if (offset !== null) {
    if (offset > message.length) return resync(state, frame, fx);
    text = dropCodePoints(text, message.length - offset); // what we already have is not added twice
  }
  if (!text) return;
  message.content += text;
  message.length += codePointLength(text);
  message.queued = null;
  fx.push({ type: "render", soon: true });
}

function onDone(state, frame, fx) {
  const entry = state.live.get(frame.message);
  if (state.live.delete(frame.message)) fx.push({ type: "sidebar" });
  fx.push(list);
  if (frame.conversation !== state.current || bufferIfLoading(state, frame)) return;
  applyDone(state, frame, fx, entry);
}

const FINISHED = {
  stop: "Reply finished",
  length: "Reply finished: it reached the max tokens limit",
  cancelled: "Reply stopped",
};

function applyDone(state, frame, fx, entry) {
  const message = findMessage(state, frame.message);
  if (!message) {
    fx.push(...requestHistory(state, state.current));
    return;
  }
  const wasGenerating = message.generating;
  message.generating = false;
  message.queued = null;
  message.finish_reason = frame.finish_reason;
  if (frame.detail) message.detail = frame.detail;
  const tokens = frame.usage && frame.usage.completion_tokens;
  message.stats = replyStats(frame);
  if (message.stats && !message.stats.rate && entry && entry.firstAt !== null && entry.lastAt > entry.firstAt && tokens > 1) {
    // a server that does not send tokens_per_second: the rate as this tab saw it
    message.stats.rate = (tokens - 1) / ((entry.lastAt - entry.firstAt) / 1000);
  }
  fx.push({ type: "render" });
  if (tokens && message.length === 0 && frame.finish_reason !== "error") {
    fx.push(...requestHistory(state, state.current)); // the text went missing in a race with a reload
  }
  if (wasGenerating) {
    const failed = `Reply failed${frame.detail ? `: ${frame.detail}` : ""}`;
    fx.push({ type: "announce", text: frame.finish_reason === "error" ? failed : FINISHED[frame.finish_reason] || "Reply finished" });
  }
}

const REPLAY = {
  turn: applyTurn,
  token: applyToken,
  done: (state, frame, fx) => applyDone(state, frame, fx, null),
  queued: onQueued,
  rated: applyRated,
};

function historyMessages(frame) {
  return (frame.messages || []).map((item) => {
    const message = item.role === "user" ? userMessage(item.id, item.content, item.attachments) : assistantMessage(item);
    message.versions = versionsOf(item);
    return message;
  });
}

function onHistory(state, frame, fx) {
  if (frame.conversation !== state.current) return; // an answer for a conversation we left
  if (frame.before !== undefined) { // an earlier page (requestEarlier): it goes on top of what is shown
    if (!state.loadingEarlier || !state.messages.length || state.messages[0].id !== frame.before) return; // stale
    state.loadingEarlier = false;
    state.more = Boolean(frame.more);
    state.messages = [...historyMessages(frame), ...state.messages];
    fx.push({ type: "render", rebuild: true });
    return;
  }
  if (state.historyPending === frame.conversation) state.historyPending = null;
  state.title = frame.title || "";
  state.model = frame.model || "";
  state.more = Boolean(frame.more);
  state.loadingEarlier = false;
  state.messages = historyMessages(frame);
  for (const message of state.messages) if (message.generating) liveEntry(state, message.id, frame.conversation, fx);
  fx.push({ type: "render", scroll: "bottom", rebuild: true });
  if (!state.conversations.some((c) => c.id === frame.conversation)) fx.push(list);
  const replay = state.buffered;
  state.buffered = [];
  for (const buffered of replay) {
    // A gap found while replaying asked for history again: the rest waits for that answer.
    if (state.historyPending === state.current) state.buffered.push(buffered);
    else REPLAY[buffered.type](state, buffered, fx);
  }
}

function onConversations(state, frame, fx) {
  state.conversations = Array.isArray(frame.items) ? frame.items : [];
  const current = state.conversations.find((c) => c.id === state.current);
  if (current) state.title = current.title;
  if (current && current.model) state.model = current.model;
  fx.push({ type: "sidebar" });
}

function onChanged(state, frame, fx) {
  fx.push(list);
  if (frame.deleted !== undefined && frame.deleted === state.current && state.current !== null) {
    fx.push(...openConversation(state, null));
    fx.push({ type: "notice", key: "deleted", text: "This conversation was deleted." });
  }
}

/** Another version was chosen (in this tab or another): the shown branch is read again. */
function onSwitched(state, frame, fx) {
  if (frame.conversation === state.current) fx.push(...requestHistory(state, state.current));
}

function onRated(state, frame, fx) {
  if (!bufferIfLoading(state, frame)) applyRated(state, frame, fx);
}

function applyRated(state, frame, fx) {
  const message = findMessage(state, frame.message);
  if (!message) return;
  message.rating = frame.rating;
  message.comment = frame.comment || "";
  fx.push({ type: "render" });
  fx.push({ type: "announce", text: frame.rating === 1 ? "Rated helpful" : frame.rating === -1 ? "Rated not helpful" : "Rating saved" });
}

function onError(state, frame, fx) {
  if (frame.code === "not_found" && state.historyPending !== null && frame.conversation === state.historyPending) {
    state.historyPending = null;
    fx.push({ type: "notice", key: "not_found", text: "That conversation no longer exists." });
    fx.push(...openConversation(state, null));
    return;
  }
  if (frame.code === "not_generating") return; // stop raced with the end of the reply: nothing to say
  const pending = state.pending;
  if (pending && frame.code !== "no_worker") { // no_worker follows the ack: the turn was stored
    state.pending = null;
    if (pending.kind === "send" && pending.content) fx.push({ type: "restore", content: pending.content });
  }
  fx.push({ type: "error", frame });
}

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
  switched: onSwitched,
  error: onError,
};
