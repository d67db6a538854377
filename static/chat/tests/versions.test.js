// Versions of a message and stored statistics in the page's state: node --test static/chat/tests/

import { test } from "node:test";
import assert from "node:assert/strict";

import { beginTurn, createState, receive } from "../conversation_state.js";

const C = 7;

function showing(messages) {
  const state = createState({ current: C });
  state.connected = true;
  receive(state, { type: "history", conversation: C, title: "Test", messages });
  return state;
}

const versions = (state) => state.messages.map((m) => [m.id, m.versions || null]);

test("the history's versions are kept per message; a single version shows none", () => {
  const state = showing([
    { id: 1, role: "user", content: "Hi", versions: [1, 5] },
    { id: 2, role: "assistant", content: "Hello", finish_reason: "stop", versions: [2] },
  ]);
  assert.deepEqual(versions(state), [[1, [1, 5]], [2, null]]);
});

test("a regenerated reply joins the versions of the reply it replaced", () => {
  const state = showing([
    { id: 1, role: "user", content: "Hi" },
    { id: 2, role: "assistant", content: "Hello", finish_reason: "stop", versions: [2, 4] },
  ]);
  beginTurn(state, { type: "regenerate", conversation: C });
  receive(state, { type: "ack", conversation: C, message: 1, reply: 6, replaces: 2 });
  assert.deepEqual(versions(state), [[1, null], [6, [2, 4, 6]]]);
});

test("another tab's regenerate and edit turns carry the versions too", () => {
  const state = showing([
    { id: 1, role: "user", content: "Hi" },
    { id: 2, role: "assistant", content: "Hello", finish_reason: "stop" },
  ]);
  receive(state, { type: "turn", conversation: C, reply: 3 });
  assert.deepEqual(versions(state), [[1, null], [3, [2, 3]]]);
  receive(state, { type: "token", conversation: C, message: 3, offset: 0, text: "Yo" });
  receive(state, { type: "done", conversation: C, message: 3, finish_reason: "stop", usage: { completion_tokens: 1 } });
  receive(state, { type: "turn", conversation: C, reply: 5, replaces: 1, user: { id: 4, role: "user", content: "Hey" } });
  assert.deepEqual(versions(state), [[4, [1, 4]], [5, null]]);
});

test("a switch in any tab reads the conversation again", () => {
  const state = showing([{ id: 1, role: "user", content: "Hi" }]);
  const effects = receive(state, { type: "switched", conversation: C, message: 1 });
  assert.deepEqual(effects.filter((e) => e.type === "send").map((e) => e.frame), [{ type: "history", conversation: C }]);
  assert.deepEqual(receive(state, { type: "switched", conversation: C + 1, message: 9 }), []);
});

test("statistics come from the server: stored ones after a reload, the done frame's rate live", () => {
  const state = showing([
    { id: 1, role: "user", content: "Hi" },
    { id: 2, role: "assistant", content: "Hello", finish_reason: "stop", usage: { prompt_tokens: 3, completion_tokens: 9 },
      tokens_per_second: 4.8 },
  ]);
  assert.deepEqual(state.messages[1].stats, { tokens: 9, rate: 4.8 });
  receive(state, { type: "turn", conversation: C, reply: 3, user: { id: 4, role: "user", content: "More" } });
  receive(state, { type: "token", conversation: C, message: 3, offset: 0, text: "a" }, 0);
  receive(state, { type: "token", conversation: C, message: 3, offset: 1, text: "b" }, 100); // this tab's clock says 10/s
  receive(state, { type: "done", conversation: C, message: 3, finish_reason: "stop",
    usage: { completion_tokens: 2 }, tokens_per_second: 5.5 }, 200);
  assert.deepEqual(state.messages.at(-1).stats, { tokens: 2, rate: 5.5 });
});

test("continue reopens the reply it acks, and its tokens go on after its text", () => {
  const state = showing([
    { id: 1, role: "user", content: "Count" },
    { id: 2, role: "assistant", content: "one two", finish_reason: "length", usage: { completion_tokens: 2 } },
  ]);
  beginTurn(state, { type: "continue", conversation: C });
  receive(state, { type: "ack", conversation: C, message: 1, reply: 2, continues: 2 });
  const reply = state.messages[1];
  assert.equal(state.messages.length, 2);
  assert.deepEqual([reply.generating, reply.finish_reason, reply.stats], [true, null, null]);
  receive(state, { type: "turn", conversation: C, reply: 2, continues: 2 }); // ours, already applied
  receive(state, { type: "token", conversation: C, message: 2, offset: 7, text: " three" });
  receive(state, { type: "done", conversation: C, message: 2, finish_reason: "stop", usage: { completion_tokens: 1 } });
  assert.deepEqual([reply.content, reply.generating, reply.finish_reason], ["one two three", false, "stop"]);
});

test("another tab reopens the reply from the turn frame", () => {
  const state = showing([
    { id: 1, role: "user", content: "Count" },
    { id: 2, role: "assistant", content: "one", finish_reason: "length" },
  ]);
  receive(state, { type: "turn", conversation: C, reply: 2, continues: 2 });
  assert.equal(state.messages[1].generating, true);
});
