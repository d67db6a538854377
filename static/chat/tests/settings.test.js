// The settings the page sends as `params`: only what the user set, within the server's limits.

import { test } from "node:test";
import assert from "node:assert/strict";

import { normalize, serverDefaults, toParams, withDefaults } from "../settings.js";

const defaults = serverDefaults({ defaultTemperature: "0.7", defaultMaxNewTokens: "256", maxNewTokensLimit: "1024" });

test("the server's defaults and limit are read from the page", () => {
  assert.deepEqual(defaults, { system: "", temperature: 0.7, max_new_tokens: 256, max_new_tokens_limit: 1024 });
});

test("nothing set sends no params, so the server's defaults apply", () => {
  assert.deepEqual(toParams(normalize(null, defaults)), {});
  assert.deepEqual(toParams(normalize({}, defaults)), {});
  assert.deepEqual(toParams(normalize({ system: "   ", temperature: "", max_new_tokens: null }, defaults)), {});
});

test("values equal to the server's defaults are left out", () => {
  // What the old page stored for everyone: its own copies of the defaults.
  assert.deepEqual(normalize({ system: "", temperature: 0.7, max_new_tokens: 256 }, defaults), {});
});

test("what the user set is sent", () => {
  const settings = normalize({ system: "Be brief.", temperature: 0, max_new_tokens: 9 }, defaults);
  assert.deepEqual(toParams(settings), { system: "Be brief.", temperature: 0, max_new_tokens: 9 });
  assert.deepEqual(toParams(normalize({ max_new_tokens: "40" }, defaults)), { max_new_tokens: 40 });
});

test("values are kept within the server's bounds", () => {
  assert.deepEqual(normalize({ temperature: 5, max_new_tokens: 100000 }, defaults), { temperature: 2, max_new_tokens: 1024 });
  assert.deepEqual(normalize({ temperature: -1, max_new_tokens: 0 }, defaults), { temperature: 0, max_new_tokens: 1 });
  assert.deepEqual(normalize({ temperature: 0.123, max_new_tokens: 7.6 }, defaults), { temperature: 0.12, max_new_tokens: 8 });
  assert.deepEqual(normalize({ temperature: "warm", max_new_tokens: "many", system: 3 }, defaults), {});
});

test("the dialog shows the user's values and the defaults for the rest", () => {
  assert.deepEqual(withDefaults({ max_new_tokens: 9 }, defaults), { system: "", temperature: 0.7, max_new_tokens: 9 });
});
