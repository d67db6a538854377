// The sidebar: the conversation list (open, rename, delete with a confirmation, a mark on those
// generating) and the panel itself, which covers the page on narrow screens.

import { el, iconButton } from "./dom.js";
import { generatingConversations } from "./conversation_state.js";

const OVERLAY_QUERY = "(max-width: 800px)";

/**
 * @param {object} state the conversation state (conversation_state.js)
 * @param {object} els list, listEmpty, newChat, sidebarToggle, backdrop, input, covered (regions out of
 *   reach while the panel covers them)
 * @param {object} actions open(id), rename(id, title) and remove(id) (true when sent)
 */
export function createSidebar(state, els, actions) {
  const overlayQuery = window.matchMedia(OVERLAY_QUERY);
  // The conversation being renamed or confirmed for deletion; draft: the title typed so far.
  let editing = { id: null, mode: null, draft: null, focused: false };
  let rendering = false;

  const stopEditing = () => { editing = { id: null, mode: null, draft: null, focused: false }; };
  const focusKey = (key) => {
    const target = els.list.querySelector(`[data-focus-key="${key}"]`);
    if (target) target.focus();
  };

  function render() {
    const focused = document.activeElement;
    const key = focused && els.list.contains(focused) ? focused.dataset.focusKey : null;
    const generating = generatingConversations(state);
    rendering = true;
    try {
      els.list.replaceChildren(...state.conversations.map((item) => conversationItem(item, generating.has(item.id))));
    } finally {
      rendering = false;
    }
    els.listEmpty.hidden = state.conversations.length > 0;
    els.newChat.setAttribute("aria-current", state.current === null ? "page" : "false");
    if (key) focusKey(key);
  }

  function conversationItem(item, generating) {
    const isCurrent = item.id === state.current;
    const li = el("li", { class: `conversation${isCurrent ? " current" : ""}`, "data-id": item.id });
    const mode = editing.id === item.id ? editing.mode : null;
    if (mode === "rename") li.append(renameInput(item));
    else if (mode === "delete") {
      li.classList.add("confirming");
      li.append(...deleteConfirmation(item));
    } else li.append(...itemButtons(item, isCurrent, generating));
    return li;
  }

  function renameInput(item) {
    const input = el("input", { type: "text", class: "rename-input", maxlength: "200",
      "aria-label": "New title", "data-focus-key": `rename-input-${item.id}` });
    input.value = editing.draft ?? item.title;
    input.addEventListener("input", () => { editing.draft = input.value; });
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      stopEditing();
      if (save && title && title !== item.title && actions.rename(item.id, title)) {
        item.title = title; // shown at once; the `changed` answer confirms it
      }
      render();
      focusKey(`rename-${item.id}`);
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      else if (event.key === "Escape") { event.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", () => { if (!rendering && input.isConnected) finish(true); });
    if (!editing.focused) {
      editing.focused = true;
      queueMicrotask(() => { input.focus(); input.select(); });
    }
    return input;
  }

  function deleteConfirmation(item) {
    const confirmText = el("span", { class: "confirm-text", text: `Delete “${item.title}”?` });
    const yes = el("button", { type: "button", class: "button small danger", text: "Delete",
      "data-focus-key": `confirm-delete-${item.id}`,
      onclick: () => {
        stopEditing();
        actions.remove(item.id);
        render();
        els.newChat.focus();
      } });
    const no = el("button", { type: "button", class: "button small", text: "Cancel",
      "data-focus-key": `cancel-delete-${item.id}`,
      onclick: () => {
        stopEditing();
        render();
        focusKey(`delete-${item.id}`);
      } });
    if (!editing.focused) {
      editing.focused = true;
      queueMicrotask(() => no.focus());
    }
    return [confirmText, el("span", { class: "confirm-buttons" }, yes, no)];
  }

  function itemButtons(item, isCurrent, generating) {
    const open = el("button", { type: "button", class: "conversation-open", "data-focus-key": `open-${item.id}`,
      "aria-current": isCurrent ? "page" : null, title: item.title,
      onclick: () => { actions.open(item.id); closeIfOverlay(); } },
    el("span", { class: "conversation-title", text: item.title }));
    if (generating) open.append(el("span", { class: "generating-dot", title: "Generating" },
      el("span", { class: "visually-hidden", text: " (generating)" })));
    const rename = iconButton("edit", `Rename “${item.title}”`, { className: "small" });
    rename.dataset.focusKey = `rename-${item.id}`;
    rename.addEventListener("click", () => {
      editing = { id: item.id, mode: "rename", draft: null, focused: false };
      render();
    });
    const remove = iconButton("trash", `Delete “${item.title}”`, { className: "small" });
    remove.dataset.focusKey = `delete-${item.id}`;
    remove.addEventListener("click", () => {
      editing = { id: item.id, mode: "delete", draft: null, focused: false };
      render();
    });
    return [open, el("span", { class: "conversation-actions" }, rename, remove)];
  }

  // --- the panel ---

  const isOpen = () => document.body.classList.contains("sidebar-open");

  function setOpen(open, { focus = true } = {}) {
    document.body.classList.toggle("sidebar-open", open);
    els.sidebarToggle.setAttribute("aria-expanded", String(open));
    els.sidebarToggle.setAttribute("aria-label", open ? "Hide conversations" : "Show conversations");
    const overlay = open && overlayQuery.matches;
    els.backdrop.hidden = !overlay;
    // While the panel covers the page, the rest of the page is out of reach (keyboard and screen readers).
    for (const region of els.covered) region.inert = overlay;
    if (!focus) return;
    if (open) els.newChat.focus();
    else els.sidebarToggle.focus();
  }

  function closeIfOverlay() {
    if (overlayQuery.matches && isOpen()) {
      setOpen(false, { focus: false });
      els.input.focus();
    }
  }

  els.sidebarToggle.addEventListener("click", () => setOpen(!isOpen()));
  els.backdrop.addEventListener("click", () => setOpen(false));
  els.close.addEventListener("click", () => setOpen(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && overlayQuery.matches && isOpen()) setOpen(false);
  });
  overlayQuery.addEventListener("change", () => setOpen(!overlayQuery.matches, { focus: false }));
  setOpen(!overlayQuery.matches, { focus: false });

  return { render, closeIfOverlay, get overlay() { return overlayQuery.matches; } };
}
