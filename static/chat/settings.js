// Generation settings kept in localStorage and sent as a turn's `params`.

export const STORAGE_KEY = "chat.settings";
export const DEFAULTS = Object.freeze({ system: "", temperature: 0.7, max_new_tokens: 512 });
export const MAX_TOKENS_LIMIT = 4096;

function clamp(value, low, high, fallback) {
  const number = Number(value);
  if (!Number.isFinite(number)) return fallback;
  return Math.min(high, Math.max(low, number));
}

export function normalize(raw) {
  const source = raw && typeof raw === "object" ? raw : {};
  return {
    system: typeof source.system === "string" ? source.system : DEFAULTS.system,
    temperature: Math.round(clamp(source.temperature, 0, 2, DEFAULTS.temperature) * 100) / 100,
    max_new_tokens: Math.round(clamp(source.max_new_tokens, 1, MAX_TOKENS_LIMIT, DEFAULTS.max_new_tokens)),
  };
}

export function loadSettings() {
  try {
    return normalize(JSON.parse(localStorage.getItem(STORAGE_KEY) || "null"));
  } catch {
    return normalize(null);
  }
}

export function saveSettings(settings) {
  const clean = normalize(settings);
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(clean));
  } catch {
    // private mode or full storage: the settings still apply to this page
  }
  return clean;
}

/** The protocol's `params` object: an empty system prompt means "the server's default". */
export function toParams(settings) {
  const params = { temperature: settings.temperature, max_new_tokens: settings.max_new_tokens };
  if (settings.system.trim()) params.system = settings.system;
  return params;
}
