// The page's protocol state, fed frames by hand: node --test static/chat/tests/

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import {
  beginTurn, codePointLength, connectionLost, connectionOpened, createState, currentGenerating,
  dropCodePoints, messageState, openConversation, receive, replyStats, requestEarlier,
} from "../conversation_state.js";

const C = 7; // the conversation most tests use

/** A state showing conversation C with these [id, role, content, extra] messages. */
function showing(messages, { current = C } = {}) {
  const state = createState({ current });
  state.connected = true;
  receive(state, {
    type: "history", conversation: current, title: "Test",
    messages: messages.map(([id, role, content, extra = {}]) => ({ id, role, content, ...extra })),
  });
  return state;
}

function feed(state, frames, now = 0) {
  return frames.flatMap((frame) => receive(state, frame, now));
}

const sent = (effects) => effects.filter((e) => e.type === "send").map((e) => e.frame);
const summary = (state) => state.messages.map((m) => [m.id, m.role, m.content]);
const token = (message, offset, text, conversation = C) => ({ type: "token", conversation, message, offset, text });

describe("tokens", () => {
  test("a new chat's send, ack, turn, tokens and done build one exchange", () => {
    const state = createState();
    state.connected = true;
    const frame = { type: "send", conversation: null, content: "Hi there" };
    beginTurn(state, frame);
    assert.deepEqual(state.pending, { kind: "send", conversation: null, content: "Hi there" });

    const effects = receive(state, { type: "ack", conversation: C, message: 1, reply: 2 });
    assert.equal(state.pending, null);
    assert.equal(state.current, C, "the ack opens the new conversation");
    assert.ok(effects.some((e) => e.type === "navigate"));
    assert.deepEqual(sent(effects), [{ type: "list" }], "no history is asked for a conversation just made");
    assert.deepEqual(summary(state), [[1, "user", "Hi there"], [2, "assistant", ""]]);
    assert.equal(messageState(state.messages[1]), "waiting");

    receive(state, { type: "turn", conversation: C, reply: 2, user: { id: 1, role: "user", content: "Hi there" } });
    assert.equal(state.messages.length, 2, "the turn for our own ack adds nothing");
    assert.ok(state.live.has(2));

    receive(state, token(2, 0, "Hello"), 1000);
    assert.equal(messageState(state.messages[1]), "generating");
    receive(state, token(2, 5, ", world"), 3000);
    assert.equal(state.messages[1].content, "Hello, world");
    assert.equal(currentGenerating(state).id, 2);

    const done = receive(state, { type: "done", conversation: C, message: 2, finish_reason: "stop",
      usage: { prompt_tokens: 5, completion_tokens: 5 } });
    const reply = state.messages[1];
    assert.equal(reply.generating, false);
    assert.equal(messageState(reply), "stop");
    assert.deepEqual(reply.stats, { tokens: 5, rate: 2 }, "4 tokens after the first, over 2 s");
    assert.equal(state.live.has(2), false);
    assert.equal(currentGenerating(state), null);
    assert.ok(done.some((e) => e.type === "announce" && e.text === "Reply finished"));
  });

  test("a token without an offset is appended as it is", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "ab", { generating: true, finish_reason: null }]]);
    feed(state, [{ type: "token", conversation: C, message: 2, text: "c" }, { type: "token", conversation: C, message: 2, text: "d" }]);
    assert.equal(state.messages[1].content, "abcd");
  });

  test("offsets count characters, not UTF-16 units", () => {
    assert.equal(codePointLength("a👋b"), 3);
    assert.equal(dropCodePoints("👋é!", 2), "!");
    const state = showing([[1, "user", "q"], [2, "assistant", "hé👋", { generating: true }]]);
    receive(state, token(2, 2, "👋 ok")); // overlaps the emoji we already have
    assert.equal(state.messages[1].content, "hé👋 ok");
    assert.equal(state.messages[1].length, 6);
  });

  test("tokens of another conversation only mark it as generating", () => {
    const state = showing([[1, "user", "q"]]);
    const effects = receive(state, token(9, 0, "elsewhere", 99));
    assert.deepEqual(summary(state), [[1, "user", "q"]]);
    assert.equal(state.live.get(9).conversation, 99);
    assert.ok(effects.some((e) => e.type === "sidebar"));
  });

  test("a late token after done changes nothing", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "full", { finish_reason: "stop" }]]);
    receive(state, { type: "token", conversation: C, message: 2, text: " more" });
    assert.equal(state.messages[1].content, "full");
  });

  test("queued shows the position until the first token", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "", { generating: true }]]);
    const effects = receive(state, { type: "queued", conversation: C, message: 2, position: 3 });
    assert.equal(state.messages[1].queued, 3);
    assert.ok(effects.some((e) => e.type === "announce" && e.text === "Queued: position 3"));
    receive(state, token(2, 0, "x"));
    assert.equal(state.messages[1].queued, null);
  });
});

describe("offsets after a reload", () => {
  test("text the history already holds is not appended twice", () => {
    const state = createState({ current: C }); // the page loads with #c=7
    const opened = connectionOpened(state);
    assert.deepEqual(sent(opened), [{ type: "list" }, { type: "history", conversation: C }]);
    assert.equal(state.historyPending, C);

    // Tokens stream while the history answer is on its way: they wait.
    feed(state, [token(2, 3, "lo wor"), token(2, 9, "ld")]);
    assert.deepEqual(state.messages, []);
    assert.equal(state.buffered.length, 2);

    receive(state, { type: "history", conversation: C, title: "T", messages: [
      { id: 1, role: "user", content: "Say hello" },
      { id: 2, role: "assistant", content: "Hello w", finish_reason: null, generating: true },
    ] });
    assert.equal(state.historyPending, null);
    assert.equal(state.messages[1].content, "Hello world");
    assert.equal(state.buffered.length, 0);

    receive(state, token(2, 9, "ld")); // a repeat of what we have
    receive(state, token(2, 11, "!"));
    assert.equal(state.messages[1].content, "Hello world!");
  });

  test("a gap in the offsets asks for the history and waits for it", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "abc", { generating: true }]]);
    const effects = receive(state, token(2, 6, "ghi"));
    assert.deepEqual(sent(effects), [{ type: "history", conversation: C }]);
    assert.equal(state.messages[1].content, "abc", "nothing is appended past a gap");
    receive(state, token(2, 9, "jk")); // buffered behind the same request
    const again = receive(state, { type: "history", conversation: C, messages: [
      { id: 1, role: "user", content: "q" }, { id: 2, role: "assistant", content: "abcdefg", generating: true }] });
    assert.deepEqual(sent(again).filter((f) => f.type === "history"), [], "asked once");
    assert.equal(state.messages[1].content, "abcdefghijk");
  });

  test("a token for an unknown reply from its start shows it; from the middle, asks for history", () => {
    const state = showing([[1, "user", "q"]]);
    receive(state, token(5, 0, "new"));
    assert.deepEqual(summary(state), [[1, "user", "q"], [5, "assistant", "new"]]);
    const other = showing([[1, "user", "q"]]);
    assert.deepEqual(sent(receive(other, token(5, 4, "mid"))), [{ type: "history", conversation: C }]);
    assert.equal(other.messages.length, 1);
  });
});

describe("reconnect mid-reply", () => {
  test("the reply goes on from the text the server has, once, and ends", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "", { generating: true }]]);
    receive(state, token(2, 0, "The answer"));
    assert.ok(state.live.has(2));

    assert.deepEqual(connectionLost(state), [{ type: "render" }]);
    assert.equal(state.connected, false);
    assert.deepEqual(connectionLost(state), [], "only the first loss re-renders");

    const opened = connectionOpened(state);
    assert.equal(state.connected, true);
    assert.equal(state.live.size, 0, "live replies are learnt again from the answers");
    assert.deepEqual(sent(opened), [{ type: "list" }, { type: "history", conversation: C }]);

    // Pieces sent after the reconnect overlap what the history will hold; done comes before it.
    feed(state, [
      token(2, 10, " is 42"),
      token(2, 16, "."),
      { type: "done", conversation: C, message: 2, finish_reason: "stop", usage: { completion_tokens: 6 } },
    ]);
    assert.equal(state.messages[1].content, "The answer", "nothing applied before the history");
    receive(state, { type: "history", conversation: C, messages: [
      { id: 1, role: "user", content: "q" },
      { id: 2, role: "assistant", content: "The answer is", finish_reason: null, generating: true }] });
    const reply = state.messages[1];
    assert.equal(reply.content, "The answer is 42.");
    assert.equal(reply.generating, false);
    assert.equal(reply.finish_reason, "stop");
  });

  test("a turn whose ack was lost with the old socket no longer blocks the next one", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "a", { finish_reason: "stop" }]]);
    beginTurn(state, { type: "send", conversation: C, content: "again" });
    connectionLost(state);
    connectionOpened(state);
    assert.equal(state.pending, null);
  });

  test("a reply that ended while we were away is shown as stored", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "par", { generating: true }]]);
    connectionLost(state);
    connectionOpened(state);
    receive(state, { type: "history", conversation: C, messages: [
      { id: 1, role: "user", content: "q" }, { id: 2, role: "assistant", content: "partial", finish_reason: "cancelled" }] });
    assert.equal(messageState(state.messages[1]), "cancelled");
    assert.equal(state.messages[1].content, "partial");
    assert.equal(currentGenerating(state), null);
  });
});

describe("edit", () => {
  const before = [[1, "user", "first"], [2, "assistant", "one", { finish_reason: "stop" }],
    [3, "user", "second"], [4, "assistant", "two", { finish_reason: "stop" }]];

  test("the edited message and everything after it give way to the new turn", () => {
    const state = showing(before);
    beginTurn(state, { type: "edit", conversation: C, message: 1, content: "first, edited" });
    receive(state, { type: "ack", conversation: C, message: 5, reply: 6, replaces: 1 });
    assert.equal(state.pending, null);
    assert.deepEqual(summary(state), [[5, "user", "first, edited"], [6, "assistant", ""]]);
    assert.equal(state.messages[1].generating, true);
    receive(state, { type: "turn", conversation: C, reply: 6, replaces: 1,
      user: { id: 5, role: "user", content: "first, edited" } });
    assert.deepEqual(summary(state), [[5, "user", "first, edited"], [6, "assistant", ""]]);
  });

  test("another tab follows the edit from the turn frame alone", () => {
    const state = showing(before);
    receive(state, { type: "turn", conversation: C, reply: 6, replaces: 3,
      user: { id: 5, role: "user", content: "second, edited" } });
    assert.deepEqual(summary(state), [[1, "user", "first"], [2, "assistant", "one"],
      [5, "user", "second, edited"], [6, "assistant", ""]]);
  });

  test("a refused edit ends the wait without giving its text to the composer", () => {
    const state = showing(before);
    beginTurn(state, { type: "edit", conversation: C, message: 3, content: "x" });
    const effects = receive(state, { type: "error", code: "busy", detail: "busy", conversation: C });
    assert.equal(state.pending, null);
    assert.equal(effects.some((e) => e.type === "restore"), false);
    assert.equal(state.messages.length, 4);
  });
});

describe("regenerate", () => {
  const before = [[1, "user", "q"], [2, "assistant", "old reply", { finish_reason: "stop", rating: 1, comment: "ok" }]];

  test("the ack ends the wait and the new reply takes the old one's place", () => {
    const state = showing(before);
    beginTurn(state, { type: "regenerate", conversation: C, params: {} });
    assert.equal(state.pending.kind, "regenerate");
    receive(state, { type: "ack", conversation: C, message: 1, reply: 3, replaces: 2 });
    assert.equal(state.pending, null);
    assert.deepEqual(summary(state), [[1, "user", "q"], [3, "assistant", ""]]);
    // The turn that follows must not take the new reply for the superseded one.
    receive(state, { type: "turn", conversation: C, reply: 3 });
    assert.deepEqual(summary(state), [[1, "user", "q"], [3, "assistant", ""]]);
    receive(state, token(3, 0, "new reply"));
    assert.equal(state.messages[1].content, "new reply");
    assert.equal(state.messages[1].rating, null);
  });

  test("another tab replaces the last reply when the turn comes", () => {
    const state = showing(before);
    receive(state, { type: "turn", conversation: C, reply: 3 });
    assert.deepEqual(summary(state), [[1, "user", "q"], [3, "assistant", ""]]);
  });

  test("an error reply can be regenerated too; a refusal ends the wait", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "", { finish_reason: "error" }]]);
    beginTurn(state, { type: "regenerate", conversation: C });
    const effects = receive(state, { type: "error", code: "rate_limited", detail: "slow down", conversation: C });
    assert.equal(state.pending, null);
    assert.deepEqual(effects.filter((e) => e.type === "error").map((e) => e.frame.code), ["rate_limited"]);
    assert.equal(state.messages[1].id, 2);
  });
});

describe("history", () => {
  test("frames of the conversation wait for its history; others do not", () => {
    const state = createState();
    openConversation(state, C);
    assert.equal(state.historyPending, C);
    feed(state, [
      { type: "turn", conversation: C, reply: 4, user: { id: 3, role: "user", content: "next" } },
      { type: "queued", conversation: C, message: 4, position: 1 },
      { type: "rated", message: 2, rating: -1, comment: "wrong" },
    ]);
    assert.deepEqual(state.messages, []);
    assert.equal(state.buffered.length, 3);
    receive(state, { type: "history", conversation: C, title: "Named", messages: [
      { id: 1, role: "user", content: "q" }, { id: 2, role: "assistant", content: "a", finish_reason: "stop", rating: 1 }] });
    assert.equal(state.title, "Named");
    assert.deepEqual(summary(state), [[1, "user", "q"], [2, "assistant", "a"], [3, "user", "next"], [4, "assistant", ""]]);
    assert.equal(state.messages[3].queued, 1);
    assert.equal(state.messages[1].rating, -1, "the rating given while loading wins over the older answer");
    assert.equal(state.messages[1].comment, "wrong");
  });

  test("a turn the history already holds is not applied again", () => {
    const state = createState();
    openConversation(state, C);
    receive(state, { type: "turn", conversation: C, reply: 3 }); // a regenerate from another tab
    receive(state, { type: "history", conversation: C, messages: [
      { id: 1, role: "user", content: "q" }, { id: 3, role: "assistant", content: "abc", generating: true }] });
    assert.deepEqual(summary(state), [[1, "user", "q"], [3, "assistant", "abc"]]);
  });

  test("a history answer for a conversation we left is ignored", () => {
    const state = createState();
    openConversation(state, C);
    openConversation(state, 8);
    receive(state, { type: "history", conversation: C, messages: [{ id: 1, role: "user", content: "old" }] });
    assert.deepEqual(state.messages, []);
    assert.equal(state.historyPending, 8);
  });

  test("ratings and their comments come back with the history", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "a", { finish_reason: "stop", rating: -1, comment: "too long" }]]);
    assert.equal(state.messages[1].rating, -1);
    assert.equal(state.messages[1].comment, "too long");
    const unrated = showing([[1, "user", "q"], [2, "assistant", "a", { finish_reason: "stop" }]]);
    assert.equal(unrated.messages[1].rating, null);
    assert.equal(unrated.messages[1].comment, "");
  });

  test("a generating reply in the history is marked live", () => {
    const state = showing([[1, "user", "q"], [2, "assistant", "so far", { generating: true, finish_reason: null }]]);
    assert.equal(messageState(state.messages[1]), "generating");
    assert.equal(state.live.get(2).conversation, C);
  });

  test("a conversation that is gone sends the page back to a new chat", () => {
    const state = createState();
    openConversation(state, C);
    const effects = receive(state, { type: "error", code: "not_found", detail: "no such conversation", conversation: C });
    assert.equal(state.current, null);
    assert.equal(state.historyPending, null);
    assert.ok(effects.some((e) => e.type === "notice" && e.key === "not_found"));
    assert.equal(effects.some((e) => e.type === "error"), false);
  });
});

describe("the rest of the frames", () => {
  test("a refused send gives its text back", () => {
    const state = showing([]);
    beginTurn(state, { type: "send", conversation: C, content: "my text" });
    const effects = receive(state, { type: "error", code: "busy", detail: "still generating" });
    assert.equal(state.pending, null);
    assert.deepEqual(effects.filter((e) => e.type === "restore"), [{ type: "restore", content: "my text" }]);
  });

  test("the conversation list sets the open conversation's title", () => {
    const state = showing([]);
    const effects = receive(state, { type: "conversations", items: [{ id: C, title: "Renamed", updated: "" }] });
    assert.equal(state.title, "Renamed");
    assert.ok(effects.some((e) => e.type === "sidebar"));
  });

  test("the open conversation deleted in another tab closes", () => {
    const state = showing([[1, "user", "q"]]);
    const effects = receive(state, { type: "changed", deleted: C });
    assert.equal(state.current, null);
    assert.deepEqual(state.messages, []);
    assert.deepEqual(sent(effects), [{ type: "list" }]);
    assert.ok(effects.some((e) => e.type === "notice" && e.key === "deleted"));
  });

  test("an ack for another conversation leaves this one's wait alone", () => {
    const state = showing([]);
    beginTurn(state, { type: "send", conversation: C, content: "x" });
    receive(state, { type: "ack", conversation: 99, message: 1, reply: 2 });
    assert.notEqual(state.pending, null);
    assert.deepEqual(state.messages, []);
  });

  test("unknown frame types are ignored", () => {
    const state = showing([[1, "user", "q"]]);
    assert.deepEqual(receive(state, { type: "from_the_future", conversation: C }), []);
    assert.deepEqual(summary(state), [[1, "user", "q"]]);
  });
});

describe("earlier messages", () => {
  test("a history with `more` offers an earlier page, which goes on top; none is asked twice", () => {
    const state = createState({ current: C });
    receive(state, { type: "history", conversation: C, title: "Long", more: true,
      messages: [{ id: 5, role: "user", content: "e" }, { id: 6, role: "assistant", content: "f", finish_reason: "stop" }] });
    assert.equal(state.more, true);
    assert.deepEqual(sent(requestEarlier(state)), [{ type: "history", conversation: C, before: 5 }]);
    assert.deepEqual(requestEarlier(state), []); // already on its way
    receive(state, { type: "history", conversation: C, title: "Long", before: 5, more: false,
      messages: [{ id: 3, role: "user", content: "c" }, { id: 4, role: "assistant", content: "d", finish_reason: "stop" }] });
    assert.deepEqual(summary(state).map(([id]) => id), [3, 4, 5, 6]);
    assert.equal(state.more, false);
    assert.deepEqual(requestEarlier(state), []); // nothing older
  });

  test("an earlier page for what is no longer shown is dropped, and a plain history has no `more`", () => {
    const state = showing([[5, "user", "e"]]);
    assert.equal(state.more, false);
    assert.deepEqual(requestEarlier(state), []);
    state.more = true;
    requestEarlier(state);
    openConversation(state, 9);
    receive(state, { type: "history", conversation: 9, title: "Other", messages: [{ id: 20, role: "user", content: "x" }] });
    receive(state, { type: "history", conversation: 9, before: 5, messages: [{ id: 1, role: "user", content: "old" }] });
    assert.deepEqual(summary(state), [[20, "user", "x"]]);
  });
});

test("a reply's statistics carry the prompt tokens read from the engine's cache", () => {
  assert.deepEqual(replyStats({ usage: { prompt_tokens: 3400, completion_tokens: 16, cached_tokens: 3380 },
    tokens_per_second: 9.5 }), { tokens: 16, rate: 9.5, cached: 3380 });
  assert.deepEqual(replyStats({ usage: { prompt_tokens: 40, completion_tokens: 16, cached_tokens: 0 } }), { tokens: 16 });
  assert.deepEqual(replyStats({ usage: { prompt_tokens: 40, completion_tokens: 16 } }), { tokens: 16 });
});
