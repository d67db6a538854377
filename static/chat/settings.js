// Generation settings kept in localStorage and sent as a turn's `params`.
//
// Only what the user set is kept and sent; the server fills in the rest (chat/turns.py,
// reply_params), so its configured defaults apply. A value equal to the server's default is not
// a choice of the user's: it is left out, and follows the server if the default changes. The
// defaults and the limit come from the server, on the page's <body> (templates/chat/index.html).

export const STORAGE_KEY = "chat.settings";

/** The server's defaults and limits, from <body data-default-temperature=… data-…>. */
export function serverDefaults(dataset) {
  return {
    system: "", // empty: the server's own system prompt
    temperature: Number(dataset.defaultTemperature),
    max_new_tokens: Number(dataset.defaultMaxNewTokens),
    max_new_tokens_limit: Number(dataset.maxNewTokensLimit),
  };
}

function given(value) {
  return typeof value === "number" ? Number.isFinite(value) : typeof value === "string" && value.trim() !== "";
}

function clamp(value, low, high) {
  return Math.min(Number.isFinite(high) ? high : Infinity, Math.max(low, value));
}

/** The settings the user chose: {system?, temperature?, max_new_tokens?}, each within bounds. */
export function normalize(raw, defaults) {
  const source = raw && typeof raw === "object" ? raw : {};
  const settings = {};
  if (typeof source.system === "string" && source.system.trim()) settings.system = source.system;
  if (given(source.temperature) && Number.isFinite(Number(source.temperature))) {
    const temperature = Math.round(clamp(Number(source.temperature), 0, 2) * 100) / 100;
    if (temperature !== defaults.temperature) settings.temperature = temperature;
  }
  if (given(source.max_new_tokens) && Number.isFinite(Number(source.max_new_tokens))) {
    const tokens = Math.round(clamp(Number(source.max_new_tokens), 1, defaults.max_new_tokens_limit));
    if (tokens !== defaults.max_new_tokens) settings.max_new_tokens = tokens;
  }
  return settings;
}

/** What the settings dialog shows: the user's values, the server's defaults for the rest. */
export function withDefaults(settings, defaults) {
  return {
    system: settings.system ?? defaults.system,
    temperature: settings.temperature ?? defaults.temperature,
    max_new_tokens: settings.max_new_tokens ?? defaults.max_new_tokens,
  };
}

export function loadSettings(defaults) {
  try {
    return normalize(JSON.parse(localStorage.getItem(STORAGE_KEY) || "null"), defaults);
  } catch {
    return normalize(null, defaults);
  }
}

export function saveSettings(values, defaults) {
  const clean = normalize(values, defaults);
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(clean));
  } catch {
    // private mode or full storage: the settings still apply to this page
  }
  return clean;
}

/** The protocol's `params` object: only the values the user set. */
export function toParams(settings) {
  const params = {};
  for (const key of ["temperature", "max_new_tokens", "system"]) {
    if (settings[key] !== undefined) params[key] = settings[key];
  }
  return params;
}
