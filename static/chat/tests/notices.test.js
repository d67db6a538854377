// What error frames say to the user: node --test static/chat/tests/

import { test } from "node:test";
import assert from "node:assert/strict";

import { ERROR_TEXT, errorText } from "../notices.js";

test("no worker at all gets the page's explanation; none for this chat's model gets the server's words", () => {
  assert.equal(errorText({ code: "no_worker", detail: "no inference worker is running" }), ERROR_TEXT.no_worker);
  const detail = "no inference worker serves the model 'big-model'; start one for it, then regenerate this reply";
  assert.equal(errorText({ code: "no_worker", detail }), detail);
});

test("what was wrong with what the user sent is said in the server's words; unknown codes fall back", () => {
  assert.equal(errorText({ code: "bad_params", detail: "temperature must be in [0, 2]" }), "temperature must be in [0, 2]");
  assert.equal(errorText({ code: "busy", detail: "x" }), ERROR_TEXT.busy);
  assert.equal(errorText({ code: "something_new" }), "Something went wrong.");
});
