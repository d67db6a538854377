// A WebSocket that reconnects by itself with exponential backoff (capped), speaking JSON frames.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;

export class ChatSocket {
  /**
   * @param {string} url ws:// or wss:// URL of the chat endpoint
   * @param {{onFrame: Function, onOpen: Function, onStatus: Function}} handlers
   *   onStatus(state, detail) with state "connecting" | "open" | "waiting" (detail: seconds until retry)
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.countdownTimer = null;
    this.everOpened = false;
    this.closedByUs = false;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdownTimer);
    this.retryTimer = null;
    this.handlers.onStatus("connecting", { reconnect: this.everOpened, attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      const reconnected = this.everOpened;
      this.attempt = 0;
      this.everOpened = true;
      this.handlers.onStatus("open", { reconnected });
      this.handlers.onOpen({ reconnected });
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws || typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to fix; the protocol promises JSON
      }
      if (frame && typeof frame === "object" && typeof frame.type === "string") this.handlers.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closedByUs) return;
      if (event.code === 4401) {
        this.handlers.onStatus("refused", { code: event.code });
        return; // auth_required: retrying would only be refused again
      }
      this.scheduleRetry();
    });
    // "error" is always followed by "close"; nothing to do here.
  }

  scheduleRetry() {
    const delay = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    // A little jitter so many tabs do not reconnect in lock-step after a restart.
    const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    const retryAt = Date.now() + wait;
    const tell = () => this.handlers.onStatus("waiting", { seconds: Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) });
    tell();
    clearInterval(this.countdownTimer);
    this.countdownTimer = setInterval(tell, 1000);
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  /** Reconnect now (e.g. the user clicked "retry now" or the browser came back online). */
  retryNow() {
    if (this.ws !== null) return;
    this.connect();
  }

  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  close() {
    this.closedByUs = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.countdownTimer);
    if (this.ws) this.ws.close();
  }
}
