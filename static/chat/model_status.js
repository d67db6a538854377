// The model's state in the top bar, from /status every few seconds (and when the tab is shown again),
// and the model picker beside it while the workers serve more than one model.

const HEALTH_INTERVAL_MS = 10000;

/** The last part of a model's name (a Hugging Face id or a folder): what fits in the top bar. */
function shortName(model) {
  return String(model).replace(/\/+$/, "").split("/").pop();
}

/** @param {{status: Element, name: Element}} els @param {{served: Function}} [picker] told the models served */
export function watchModelStatus(els, picker = null) {
  let timer = null;

  async function poll() {
    clearTimeout(timer);
    let health = "down";
    let label = "Server unreachable";
    let title = "";
    let models = null; // unknown while the server does not answer: the picker stays as it was
    try {
      const response = await fetch("/status", { cache: "no-store", headers: { Accept: "application/json" } });
      const body = await response.json().catch(() => ({}));
      models = [];
      if (response.ok && body.ready) {
        const model = String(body.model || "model");
        // older servers name only the one model they serve
        models = Array.isArray(body.models) && body.models.length ? body.models.map(String) : [model];
        const workers = Array.isArray(body.workers) ? body.workers.length : null;
        health = "ok";
        label = models.length > 1 ? `${models.length} models · ready` : `${shortName(model)} · ready`;
        title = `${models.join(", ")}${workers === null ? "" : ` (${workers} worker${workers === 1 ? "" : "s"})`}`;
        if (picker) picker.served(models, model);
      } else {
        health = "starting";
        label = "Model not ready";
        title = body.detail || body.status || `HTTP ${response.status}`;
      }
    } catch {
      // the server is down or restarting; the socket's status line says more
    }
    if (picker && models !== null && health !== "ok") picker.served([], "");
    els.status.dataset.health = health;
    els.name.textContent = label;
    els.status.title = title;
    els.status.setAttribute("aria-label", title ? `${label}: ${title}` : label);
    timer = setTimeout(poll, HEALTH_INTERVAL_MS);
  }

  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  poll();
}

/**
 * The model picker (a <select>), shown only while more than one model is served. For a new chat it
 * chooses the model its first `send` names; an open conversation keeps its own model, which the
 * picker then shows, disabled.
 * @param {HTMLSelectElement} picker
 */
export function createModelPicker(picker) {
  let models = []; // what the live workers serve, the default first
  let fallback = ""; // the server's default model
  let chosen = null; // the user's pick for new chats (kept while it is served)
  let open = null; // null: a new chat; else the open conversation's model ("" while unknown)

  const forNewChat = () => (chosen && models.includes(chosen) ? chosen : fallback);

  function render() {
    picker.hidden = models.length < 2;
    if (picker.hidden) return;
    const value = open === null ? forNewChat() : open;
    const names = models.includes(value) ? models : [...models, value];
    const key = names.join("\n");
    if (picker.dataset.options !== key) {
      picker.replaceChildren(...names.map((name) => {
        const option = document.createElement("option");
        option.value = name;
        option.textContent = name ? shortName(name) : "Model unknown";
        option.title = name;
        return option;
      }));
      picker.dataset.options = key;
    }
    picker.value = value;
    picker.disabled = open !== null;
    picker.title = open === null ? `Model for a new chat: ${value}` : `This conversation's model: ${value || "unknown"}`;
  }

  picker.addEventListener("change", () => {
    chosen = picker.value;
    render();
  });

  return {
    /** The models the workers serve now, and the default one. */
    served(list, defaultModel) {
      models = list.slice();
      fallback = defaultModel || list[0] || "";
      render();
    },
    /** Show the open conversation's model (null for a new chat: the picker is then live). */
    show(model) {
      if (model === open) return;
      open = model;
      render();
    },
    /** A frame with the picked model added: only a new chat's `send` names one, only when there is a choice. */
    withModel(frame) {
      if (frame.type !== "send" || frame.conversation !== null || models.length < 2) return frame;
      return { ...frame, model: forNewChat() };
    },
  };
}
