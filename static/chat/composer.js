// The message box under the transcript: Enter sends, Shift+Enter adds a line, the box grows with
// its text, a counter shows near the size limit, and Stop replaces Send while a reply generates.
// Text files can be attached (the button, or dropped on the box): each shows as a chip with its
// name, size and a remove button; binary or too large files are refused with the reason
// (attachments.js), and a warning shows when the files will push earlier messages out of the
// model's context window.

import { checkFile, contextWarning, formatChars } from "./attachments.js";
import { el } from "./dom.js";

/**
 * @param {object} els composer, input, send, stop, charCount, attach, fileInput, chips, warning
 * @param {{submit: Function, stop: Function, refuseFile: Function, context: Function}} actions
 *   submit(text, files) is true when the text went out; refuseFile(reason) tells the user;
 *   context() is {history, system, maxNewTokens} of the open conversation
 * @param {{maxMessageChars: number, attachmentLimits: object}} options
 */
export function createComposer(els, actions, { maxMessageChars, attachmentLimits }) {
  let files = []; // [{name, content}] attached to the message being written

  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = `${Math.min(els.input.scrollHeight, window.innerHeight * 0.4)}px`;
    const length = els.input.value.length;
    els.charCount.textContent = length > maxMessageChars * 0.8 ? `${length} / ${maxMessageChars}` : "";
    els.charCount.classList.toggle("over", length > maxMessageChars);
    updateWarning();
  }

  function updateWarning() {
    const text = files.length
      ? contextWarning({ ...actions.context(), content: els.input.value, files,
        contextWindow: attachmentLimits.contextWindow })
      : null;
    els.warning.hidden = text === null;
    els.warning.textContent = text || "";
  }

  function renderChips() {
    els.chips.replaceChildren(...files.map((file, index) => {
      const remove = el("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${file.name}` }, "×");
      remove.addEventListener("click", () => {
        files.splice(index, 1);
        renderChips();
        els.input.focus();
      });
      return el("span", { class: "attachment-chip", "data-name": file.name, title: file.name },
        el("span", { class: "chip-name" }, file.name),
        el("span", { class: "chip-size" }, formatChars(file.content.length)), remove);
    }));
    els.chips.hidden = files.length === 0;
    updateWarning();
  }

  async function attach(fileList) {
    for (const file of fileList) {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const checked = checkFile(file.name, bytes, attachmentLimits, files);
      if (checked.error) actions.refuseFile(checked.error);
      else files.push({ name: file.name, content: checked.content });
    }
    renderChips();
  }

  function submit() {
    const content = els.input.value;
    if (!content.trim() || !actions.submit(content, files.map((f) => ({ ...f })))) return; // refused: all stays
    els.input.value = "";
    files = [];
    renderChips();
    autosize();
  }

  /** A refused message's text comes back, unless the user has typed something else since. */
  function restore(content) {
    if (els.input.value.trim()) return;
    els.input.value = content;
    autosize();
  }

  function update({ generating, waiting, connected }) {
    els.stop.hidden = !generating;
    els.stop.disabled = !connected;
    els.send.disabled = generating || waiting || !connected;
    els.composer.dataset.state = generating ? "generating" : "idle";
  }

  els.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  els.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      submit();
    }
  });
  els.input.addEventListener("input", autosize);
  els.stop.addEventListener("click", actions.stop);
  els.attach.addEventListener("click", () => els.fileInput.click());
  els.fileInput.addEventListener("change", () => {
    const chosen = [...els.fileInput.files];
    els.fileInput.value = ""; // the same file can be chosen again after removing it
    attach(chosen);
  });
  els.composer.addEventListener("dragover", (event) => {
    if (![...(event.dataTransfer?.types || [])].includes("Files")) return;
    event.preventDefault();
    els.composer.classList.add("dropping");
  });
  els.composer.addEventListener("dragleave", () => els.composer.classList.remove("dropping"));
  els.composer.addEventListener("drop", (event) => {
    if (!event.dataTransfer?.files?.length) return;
    event.preventDefault();
    els.composer.classList.remove("dropping");
    attach([...event.dataTransfer.files]);
  });
  autosize();
  renderChips();

  return { update, restore, focus: () => els.input.focus(), updateWarning, attach };
}
