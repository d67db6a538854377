// A conversation out of and into the page, over the HTTP endpoints of docs/protocol.md: export the
// open conversation (Markdown, JSON: plain download links), import a JSON export (a new
// conversation, opened once stored), and share a read-only link (create, copy, revoke).

export const MAX_IMPORT_BYTES = 2 * 1024 * 1024; // the server's limit (chat.conversation_export)

function csrfToken() {
  const match = /(?:^|;\s*)csrftoken=([^;]+)/.exec(document.cookie);
  return match ? decodeURIComponent(match[1]) : "";
}

async function call(method, url, body) {
  const headers = { "X-CSRFToken": csrfToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data: data || {} };
}

/**
 * @param {object} els tools (the export/share group in the header), exportMenu (its <details>),
 *   exportMarkdown, exportJson (links),
 *   shareOpen, shareDialog, shareUrl, shareStatus, shareCreate, shareCopy, shareRevoke, shareClose,
 *   importButton, importFile
 * @param {object} actions open(id), announce(text), notify(text, kind)
 */
export function createConversationTools(els, actions) {
  let current = null;

  // --- the Export menu: it closes on a choice, Escape, a click elsewhere and a change of chat ---

  function closeMenu({ focus = false } = {}) {
    if (!els.exportMenu.open) return;
    els.exportMenu.open = false;
    if (focus) els.exportMenu.querySelector("summary").focus();
  }

  for (const link of [els.exportMarkdown, els.exportJson]) link.addEventListener("click", () => closeMenu());
  els.exportMenu.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeMenu({ focus: true });
  });
  document.addEventListener("click", (event) => {
    if (!els.exportMenu.contains(event.target)) closeMenu();
  });

  function update(id) {
    if (id === current) return;
    closeMenu();
    current = id;
    els.tools.hidden = id === null;
    if (id !== null) {
      els.exportMarkdown.href = `/conversations/${id}/export.md`;
      els.exportJson.href = `/conversations/${id}/export.json`;
    }
  }

  // --- share ---

  function showLink(link) {
    const shared = Boolean(link && link.shared);
    els.shareUrl.value = shared ? link.url : "";
    els.shareUrl.hidden = !shared;
    els.shareCopy.hidden = !shared;
    els.shareRevoke.hidden = !shared;
    // A link shows the conversation as it was when shared: sharing again brings it up to date.
    els.shareCreate.hidden = false;
    els.shareCreate.textContent = shared ? "Update link to now" : "Create link";
  }

  async function shareRequest(method) {
    const id = current;
    els.shareStatus.textContent = method === "GET" ? "Checking…" : "Working…";
    try {
      const answer = await call(method, `/conversations/${id}/share`);
      if (id !== current) return;
      if (!answer.ok) {
        els.shareStatus.textContent = answer.data.detail || `The server refused (HTTP ${answer.status}).`;
        return;
      }
      showLink(answer.data);
      els.shareStatus.textContent = method === "DELETE" ? "The link was revoked: it no longer opens this conversation."
        : answer.data.shared ? "Anyone with this link can read this conversation as it was when you shared it "
          + "(not write to it); later turns stay private until you update the link."
          : "Not shared. Create a read-only link to let others read this conversation.";
      if (method === "POST") els.shareUrl.select();
    } catch {
      els.shareStatus.textContent = "Could not reach the server; try again.";
    }
  }

  els.shareOpen.addEventListener("click", () => {
    if (current === null) return;
    showLink(null);
    els.shareCreate.hidden = true;
    els.shareDialog.showModal();
    shareRequest("GET");
  });
  els.shareCreate.addEventListener("click", () => shareRequest("POST"));
  els.shareRevoke.addEventListener("click", () => shareRequest("DELETE"));
  els.shareClose.addEventListener("click", () => els.shareDialog.close());
  els.shareCopy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(els.shareUrl.value);
      els.shareStatus.textContent = "Link copied.";
    } catch {
      els.shareUrl.select();
      els.shareStatus.textContent = "Select the link and copy it.";
    }
  });

  // --- import ---

  els.importButton.addEventListener("click", () => els.importFile.click());
  els.importFile.addEventListener("change", async () => {
    const [file] = els.importFile.files;
    els.importFile.value = "";
    if (!file) return;
    if (file.size > MAX_IMPORT_BYTES) {
      actions.notify(`“${file.name}” is over the import limit of ${MAX_IMPORT_BYTES / (1024 * 1024)} MB.`, "error");
      return;
    }
    try {
      const answer = await call("POST", "/conversations/import", await file.text());
      if (!answer.ok) {
        actions.notify(`Could not import “${file.name}”: ${answer.data.detail || `HTTP ${answer.status}`}.`, "error");
        return;
      }
      actions.announce(`Imported “${answer.data.title}”`);
      actions.open(answer.data.conversation);
    } catch {
      actions.notify(`Could not import “${file.name}”: the server could not be reached.`, "error");
    }
  });

  return { update };
}
