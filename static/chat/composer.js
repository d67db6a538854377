// The message box under the transcript: Enter sends, Shift+Enter adds a line, the box grows with
// its text, a counter shows near the size limit, and Stop replaces Send while a reply generates.

/**
 * @param {object} els composer, input, send, stop, charCount
 * @param {{submit: Function, stop: Function}} actions submit(text) is true when the text went out
 */
export function createComposer(els, actions, { maxMessageChars }) {
  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = `${Math.min(els.input.scrollHeight, window.innerHeight * 0.4)}px`;
    const length = els.input.value.length;
    els.charCount.textContent = length > maxMessageChars * 0.8 ? `${length} / ${maxMessageChars}` : "";
    els.charCount.classList.toggle("over", length > maxMessageChars);
  }

  function submit() {
    const content = els.input.value;
    if (!content.trim() || !actions.submit(content)) return; // refused: the text stays
    els.input.value = "";
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
  autosize();

  return { update, restore, focus: () => els.input.focus() };
}
