// The open conversation's model, as the state learns it (the header's picker shows it): node --test static/chat/tests/

import { test } from "node:test";
import assert from "node:assert/strict";

import { beginTurn, createState, openConversation, receive } from "../conversation_state.js";

test("a history names the conversation's model", () => {
  const state = createState({ current: 3 });
  receive(state, { type: "history", conversation: 3, title: "T", model: "org/model-b", messages: [] });
  assert.equal(state.model, "org/model-b");
  receive(state, { type: "history", conversation: 3, title: "T", messages: [] }); // an older server names none
  assert.equal(state.model, "");
});

test("the list names each conversation's model, and opening one shows it", () => {
  const state = createState();
  receive(state, { type: "conversations", items: [
    { id: 1, title: "A", updated: "", model: "model-a" }, { id: 2, title: "B", updated: "", model: "model-b" }] });
  openConversation(state, 2);
  assert.equal(state.model, "model-b");
  openConversation(state, null);
  assert.equal(state.model, "");
});

test("a new chat's ack opens it with the model its send chose, until the list says more", () => {
  const state = createState();
  state.connected = true;
  const frame = { type: "send", conversation: null, content: "Hi", model: "model-b" };
  beginTurn(state, frame);
  receive(state, { type: "ack", conversation: 9, message: 10, reply: 11 });
  assert.equal(state.current, 9);
  assert.equal(state.model, "model-b");
  receive(state, { type: "conversations", items: [{ id: 9, title: "Hi", updated: "", model: "model-b" }] });
  assert.equal(state.model, "model-b");
});
