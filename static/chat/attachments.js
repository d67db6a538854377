// Files attached to a message as context (DOM-free; node --test static/chat/tests/).
//
// Only text is sent: a file is read as UTF-8 and refused when it is not valid UTF-8 or holds NUL
// bytes (what binary files have), or when the files of one message would pass the server's limit
// (CHAT_MAX_ATTACHMENT_CHARS, on <body data-max-attachment-chars>). The server checks the same.
// Whether the prompt will still fit is estimated here, before sending, at about 4 characters a
// token against the server's context window (<body data-context-window>); the model's tokenizer
// is on the server, so this is a warning, not a refusal.

export const CHARS_PER_TOKEN = 4;
const PER_MESSAGE_TOKENS = 8; // the chat template's framing of each message, roughly

/** The server's attachment limits and context window, from <body data-…>. */
export function attachmentLimits(dataset) {
  return {
    maxChars: Number(dataset.maxAttachmentChars) || 100000,
    maxFiles: Number(dataset.maxAttachments) || 10,
    contextWindow: Number(dataset.contextWindow) || 0, // 0: the model's own, unknown here
  };
}

/**
 * Check a file's bytes: {content} when it can be attached, else {error} saying why.
 * @param {string} name
 * @param {Uint8Array} bytes
 * @param {{maxChars: number, maxFiles: number}} limits
 * @param {{name: string, content: string}[]} attached the files already attached to this message
 */
export function checkFile(name, bytes, limits, attached = []) {
  if (attached.length >= limits.maxFiles) {
    return { error: `“${name}” was not attached: at most ${limits.maxFiles} files per message.` };
  }
  if (bytes.includes(0)) {
    return { error: `“${name}” looks like a binary file (it has NUL bytes); only text and code files can be attached.` };
  }
  let content;
  try {
    content = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return { error: `“${name}” is not a text file (it is not valid UTF-8); only text and code files can be attached.` };
  }
  if (content.charCodeAt(0) === 0xfeff) content = content.slice(1); // a byte-order mark is not text
  const used = attached.reduce((sum, file) => sum + file.content.length, 0);
  if (used + content.length > limits.maxChars) {
    return { error: `“${name}” is too large: ${formatChars(content.length)}; the files of one message may have `
      + `${formatChars(limits.maxChars)} together${used ? ` (${formatChars(used)} already attached)` : ""}.` };
  }
  return { content };
}

export function formatChars(count) {
  if (count < 1000) return `${count} characters`;
  return `${(count / 1000).toFixed(count < 10000 ? 1 : 0)}k characters`;
}

export function estimateTokens(text) {
  return Math.ceil((text || "").length / CHARS_PER_TOKEN);
}

/**
 * A warning when the prompt this message makes will not fit the context window, or null.
 * @param {object} p
 * @param {{content: string}[]} p.history the conversation's messages so far (what the worker reads)
 * @param {string} p.system the system prompt that will be used
 * @param {string} p.content the message typed
 * @param {{content: string}[]} p.files the files attached to it
 * @param {number} p.contextWindow the server's context window in tokens (0: unknown, no warning)
 * @param {number} p.maxNewTokens tokens kept free for the reply
 */
export function contextWarning({ history = [], system = "", content = "", files = [], contextWindow, maxNewTokens }) {
  if (!files.length || !contextWindow) return null;
  const reply = Math.min(maxNewTokens || 0, Math.max(1, Math.floor(contextWindow / 2))); // as the engine caps it
  const budget = contextWindow - reply;
  const fileChars = files.reduce((sum, f) => sum + f.name.length + f.content.length + 16, 0);
  const own = Math.ceil((content.length + fileChars) / CHARS_PER_TOKEN) + estimateTokens(system) + 2 * PER_MESSAGE_TOKENS;
  const earlier = history.reduce((sum, m) => sum + estimateTokens(m.content) + PER_MESSAGE_TOKENS, 0);
  if (own > budget) {
    return `The attached files make this message about ${own} tokens, more than the ${contextWindow}-token context `
      + `window leaves after ${reply} for the reply: the model cannot read it all and the reply will fail. `
      + "Attach less, or a part of the file.";
  }
  if (own + earlier > budget) {
    return `With the attached files (about ${own} tokens) the conversation no longer fits the ${contextWindow}-token `
      + "context window: the earliest messages will be dropped from what the model reads.";
  }
  return null;
}
