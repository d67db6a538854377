// The settings the page sends as `params`: only what the user set, within the server's limits.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  describe, fromPreset, normalize, normalizeWithPreset, serverDefaults, stopSequences, toParams, withDefaults, withPreset,
} from "../settings.js";

const defaults = serverDefaults({ defaultTemperature: "0.7", defaultMaxNewTokens: "256", maxNewTokensLimit: "1024",
  defaultTopP: "0.95", defaultSystemPrompt: "You are a helpful assistant." });

test("the server's defaults and limit are read from the page", () => {
  assert.deepEqual(defaults, { system: "", system_default: "You are a helpful assistant.", temperature: 0.7, top_p: 0.95,
    max_new_tokens: 256, max_new_tokens_limit: 1024, top_k: 0, min_p: 0, repetition_penalty: 1, stop: [] });
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
  assert.deepEqual(withDefaults({ max_new_tokens: 9 }, defaults), { system: "", temperature: 0.7, top_p: 0.95,
    max_new_tokens: 9, top_k: 0, min_p: 0, repetition_penalty: 1, stop: [] });
});

test("top-p is kept within (0, 1] and sent only when the user set it", () => {
  assert.deepEqual(toParams(normalize({ top_p: 0.5 }, defaults)), { top_p: 0.5 });
  assert.deepEqual(normalize({ top_p: 0.95 }, defaults), {});
  assert.deepEqual(normalize({ top_p: 0 }, defaults), { top_p: 0.01 });
});

const concise = { id: "concise", name: "Concise", system: "Be brief.", temperature: 0.3, builtin: true };

test("a preset's values become the settings, marked with the preset, which is never a param", () => {
  const settings = fromPreset(concise, defaults);
  assert.deepEqual(settings, { system: "Be brief.", temperature: 0.3, preset: "concise" });
  assert.deepEqual(toParams(settings), { system: "Be brief.", temperature: 0.3 });
});

test("a different system prompt is no longer the preset; other changes show on top of it", () => {
  assert.equal(withPreset({ system: "Be brief.", temperature: 0.3 }, concise, defaults).preset, "concise");
  assert.equal(withPreset({ system: "Be brief.", temperature: 0.3, max_new_tokens: 6 }, concise, defaults).preset, "concise");
  assert.equal(withPreset({ system: "Be long.", temperature: 0.3 }, concise, defaults).preset, undefined);
  assert.deepEqual(normalizeWithPreset({ preset: 7, max_new_tokens: 6 }, defaults), { max_new_tokens: 6, preset: 7 });
});

test("the chip says what is not the server's default, or nothing", () => {
  const presets = [concise];
  assert.equal(describe({}, presets, defaults), null);
  assert.equal(describe({ ...fromPreset(concise, defaults), max_new_tokens: 6 }, presets, defaults),
    "Preset: Concise · max 6 tokens");
  assert.equal(describe({ ...fromPreset(concise, defaults), temperature: 1 }, presets, defaults),
    "Preset: Concise · temperature 1");
  assert.equal(describe({ system: "Pirate talk." }, presets, defaults), "Custom system prompt");
  assert.equal(describe({ max_new_tokens: 6 }, presets, defaults), "max 6 tokens");
});

test("top-k, min-p, repetition penalty and stop sequences: sent when set, against the model's own defaults", () => {
  const model = serverDefaults({ defaultTemperature: "0.7", defaultMaxNewTokens: "256", maxNewTokensLimit: "1024",
    defaultTopP: "0.8", defaultTopK: "20", defaultMinP: "0", defaultRepetitionPenalty: "1.1" });
  assert.deepEqual(normalize({ top_k: "20", min_p: "0", repetition_penalty: "1.1", stop: "" }, model), {});
  const set = normalize({ top_k: "40", min_p: "0.05", repetition_penalty: "1.3", stop: "END\n\n###" }, model);
  assert.deepEqual(toParams(set), { top_k: 40, min_p: 0.05, repetition_penalty: 1.3, stop: ["END", "###"] });
  assert.deepEqual(normalize({ top_k: -3, min_p: 7, repetition_penalty: 0 }, model), { top_k: 0, min_p: 1,
    repetition_penalty: 0.01 });
  assert.equal(describe(set, [], model), "top-k 40 · min-p 0.05 · repetition penalty 1.3 · 2 stop sequences");
});

test("at most four stop sequences, none empty, each within 200 characters", () => {
  assert.deepEqual(stopSequences("a\nb\n\nc\nd\ne"), ["a", "b", "c", "d"]);
  assert.deepEqual(stopSequences(["x".repeat(300)]), ["x".repeat(200)]);
  assert.deepEqual(stopSequences(null), []);
});
