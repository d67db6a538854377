// Search in the sidebar: what the user types goes to the server as a `search` frame (debounced),
// and its `search_results` are shown in place of the conversation list, each with a snippet
// whose matched words are marked. Snippets arrive as text segments and are put in the page as
// text (never as HTML), so a message can never inject markup here.

import { el } from "./dom.js";

export const SEARCH_DEBOUNCE_MS = 250;
export const MAX_QUERY_CHARS = 200;

/**
 * Which answers to show (DOM-free, for node --test): only the one to the latest query sent, so a
 * slow answer to "pyt" never replaces the answer to "python".
 */
export function createSearchTracker() {
  return {
    latest: null, // the query last sent, or null while the box is empty
    /** The query to send for the box's text, or null when there is nothing to search. */
    queryFor(text) {
      const query = text.trim().slice(0, MAX_QUERY_CHARS);
      return query === "" ? null : query;
    },
    sent(query) { this.latest = query; },
    cleared() { this.latest = null; },
    accepts(frame) { return this.latest !== null && frame.query === this.latest && Array.isArray(frame.items); },
  };
}

/** A result's snippet as [{text, match}] with only well-formed segments kept. */
export function snippetSegments(snippet) {
  if (!Array.isArray(snippet)) return [];
  return snippet.filter((s) => s && typeof s.text === "string").map((s) => ({ text: s.text, match: s.match === true }));
}

/**
 * @param {object} els input (the search box), results (a list), status (a live line), sidebar (the panel)
 * @param {object} actions send(frame) (true when sent), open(id), closeIfOverlay()
 */
export function createSearch(els, actions) {
  const tracker = createSearchTracker();
  let timer = null;

  function setSearching(on) {
    els.sidebar.classList.toggle("searching", on);
    els.results.hidden = !on;
    els.status.hidden = !on;
  }

  function clear() {
    clearTimeout(timer);
    tracker.cleared();
    els.results.replaceChildren();
    els.status.textContent = "";
    setSearching(false);
  }

  function submit() {
    const query = tracker.queryFor(els.input.value);
    if (query === null) {
      clear();
      return;
    }
    setSearching(true);
    if (!actions.send({ type: "search", query })) {
      els.status.textContent = "Not connected; searching when the connection is back.";
      tracker.sent(query);
      return;
    }
    tracker.sent(query);
    if (!els.results.childElementCount) els.status.textContent = "Searching…";
  }

  function show(frame) {
    if (!tracker.accepts(frame)) return;
    els.results.replaceChildren(...frame.items.map(resultItem));
    const count = frame.items.length;
    els.status.textContent = count === 0 ? `No conversations match “${frame.query}”.`
      : `${count} conversation${count === 1 ? "" : "s"} match${count === 1 ? "es" : ""}`;
  }

  function resultItem(item) {
    const snippet = el("span", { class: "search-snippet" });
    for (const segment of snippetSegments(item.snippet)) {
      snippet.append(segment.match ? el("mark", { text: segment.text }) : document.createTextNode(segment.text));
    }
    const button = el("button", { type: "button", class: "search-result-open", "data-conversation": item.conversation,
      onclick: () => { actions.open(item.conversation); actions.closeIfOverlay(); } },
    el("span", { class: "search-result-title", text: item.title || `Conversation ${item.conversation}` }), snippet);
    return el("li", { class: "search-result", "data-id": item.conversation }, button);
  }

  els.input.addEventListener("input", () => {
    clearTimeout(timer);
    if (tracker.queryFor(els.input.value) === null) clear();
    else timer = setTimeout(submit, SEARCH_DEBOUNCE_MS);
  });
  els.input.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && els.input.value) {
      event.preventDefault();
      event.stopPropagation();
      els.input.value = "";
      clear();
    } else if (event.key === "Enter") {
      event.preventDefault();
      clearTimeout(timer);
      submit();
    }
  });

  return {
    show,
    /** Search again (after a reconnect, or when the conversations changed) if a query is shown. */
    refresh() { if (tracker.latest !== null) submit(); },
  };
}
