import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_QUERY_CHARS, createSearchTracker, snippetSegments } from "../search.js";

test("only the answer to the latest query sent is shown", () => {
  const tracker = createSearchTracker();
  assert.equal(tracker.accepts({ query: "py", items: [] }), false); // nothing sent yet
  tracker.sent("py");
  tracker.sent("python");
  assert.equal(tracker.accepts({ query: "py", items: [] }), false);
  assert.equal(tracker.accepts({ query: "python", items: [] }), true);
  assert.equal(tracker.accepts({ query: "python" }), false); // a malformed answer
  tracker.cleared();
  assert.equal(tracker.accepts({ query: "python", items: [] }), false);
});

test("the query is the trimmed text, none for blank text, cut to the server's limit", () => {
  const tracker = createSearchTracker();
  assert.equal(tracker.queryFor("  quokka "), "quokka");
  assert.equal(tracker.queryFor("   "), null);
  assert.equal(tracker.queryFor("x".repeat(500)).length, MAX_QUERY_CHARS);
});

test("snippet segments keep only text, and a match only when it says true", () => {
  assert.deepEqual(snippetSegments([{ text: "a ", match: false }, { text: "<b>", match: true }, { text: 5 }, null,
    { text: "c", match: "yes" }]), [{ text: "a ", match: false }, { text: "<b>", match: true }, { text: "c", match: false }]);
  assert.deepEqual(snippetSegments("<img onerror=x>"), []);
});
