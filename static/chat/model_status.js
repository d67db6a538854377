// The model's state in the top bar, from /status every few seconds (and when the tab is shown again).

const HEALTH_INTERVAL_MS = 10000;

/** @param {{status: Element, name: Element}} els */
export function watchModelStatus(els) {
  let timer = null;

  async function poll() {
    clearTimeout(timer);
    let health = "down";
    let label = "Server unreachable";
    let title = "";
    try {
      const response = await fetch("/status", { cache: "no-store", headers: { Accept: "application/json" } });
      const body = await response.json().catch(() => ({}));
      if (response.ok && body.ready) {
        const model = String(body.model || "model");
        const short = model.replace(/\/+$/, "").split("/").pop();
        const workers = Array.isArray(body.workers) ? body.workers.length : null;
        health = "ok";
        label = `${short} · ready`;
        title = `${model}${workers === null ? "" : ` (${workers} worker${workers === 1 ? "" : "s"})`}`;
      } else {
        health = "starting";
        label = "Model not ready";
        title = body.detail || body.status || `HTTP ${response.status}`;
      }
    } catch {
      // the server is down or restarting; the socket's status line says more
    }
    els.status.dataset.health = health;
    els.name.textContent = label;
    els.status.title = title;
    els.status.setAttribute("aria-label", title ? `${label}: ${title}` : label);
    timer = setTimeout(poll, HEALTH_INTERVAL_MS);
  }

  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  poll();
}
