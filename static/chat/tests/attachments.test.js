// Files attached to a message: text only, within the limits, and a warning when the prompt will
// not fit the context window.

import { test } from "node:test";
import assert from "node:assert/strict";

import { attachmentLimits, checkFile, contextWarning, formatChars } from "../attachments.js";

const limits = attachmentLimits({ maxAttachmentChars: "100", maxAttachments: "2", contextWindow: "1000" });
const bytes = (text) => new TextEncoder().encode(text);

test("the limits and the context window are read from the page", () => {
  assert.deepEqual(limits, { maxChars: 100, maxFiles: 2, contextWindow: 1000 });
  assert.deepEqual(attachmentLimits({}), { maxChars: 100000, maxFiles: 10, contextWindow: 0 });
});

test("a UTF-8 text file is attached as its text", () => {
  assert.deepEqual(checkFile("a.py", bytes("print('héllo')\n"), limits), { content: "print('héllo')\n" });
  assert.deepEqual(checkFile("bom.txt", new Uint8Array([0xef, 0xbb, 0xbf, 0x61]), limits), { content: "a" });
});

test("binary files are refused with the reason", () => {
  assert.match(checkFile("x.png", new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x00, 0x1a]), limits).error,
    /“x.png” looks like a binary file/);
  assert.match(checkFile("latin1.txt", new Uint8Array([0x63, 0x61, 0x66, 0xe9]), limits).error,
    /not a text file \(it is not valid UTF-8\)/);
});

test("files over the size limit, together, or too many are refused", () => {
  assert.match(checkFile("big.txt", bytes("x".repeat(101)), limits).error, /too large: 101 characters/);
  const attached = [{ name: "a.txt", content: "x".repeat(60) }];
  assert.match(checkFile("b.txt", bytes("y".repeat(41)), limits, attached).error, /60 characters already attached/);
  assert.ok(checkFile("b.txt", bytes("y".repeat(40)), limits, attached).content);
  assert.match(checkFile("c.txt", bytes("z"), limits, [...attached, attached[0]]).error, /at most 2 files/);
});

test("sizes read as people say them", () => {
  assert.equal(formatChars(999), "999 characters");
  assert.equal(formatChars(1500), "1.5k characters");
  assert.equal(formatChars(25000), "25k characters");
});

test("a warning shows only when the files push the prompt past the context window", () => {
  const file = (chars) => [{ name: "f.txt", content: "x".repeat(chars) }];
  const base = { system: "Be brief.", content: "Review this", contextWindow: 1000, maxNewTokens: 200 };
  assert.equal(contextWarning({ ...base, files: file(400) }), null);
  assert.equal(contextWarning({ ...base, files: [] , history: [{ content: "x".repeat(10000) }] }), null);
  const history = [{ content: "x".repeat(2000) }, { content: "y".repeat(400) }];
  assert.match(contextWarning({ ...base, files: file(1000), history }), /earliest messages will be dropped/);
  assert.match(contextWarning({ ...base, files: file(4000) }), /cannot read it all/);
  assert.equal(contextWarning({ ...base, files: file(4000), contextWindow: 0 }), null); // unknown window
  // The engine keeps at most half the window for the reply.
  assert.equal(contextWarning({ ...base, files: file(1600), maxNewTokens: 4096 }), null);
});
