// Generation settings kept in localStorage and sent as a turn's `params`.
//
// Only what the user set is kept and sent; the server fills in the rest (chat/turns.py,
// reply_params), so its configured defaults apply. A value equal to the server's default is not
// a choice of the user's: it is left out, and follows the server if the default changes. The
// defaults and the limit come from the server, on the page's <body> (templates/chat/index.html).
//
// Settings belong to a conversation (the server keeps them: `settings` in history, `configure`);
// what is kept here, in this browser, is the user's last choice, which a new chat starts from
// (STORAGE_KEY the values, PRESET_KEY the preset they came from). A setting may carry `preset`,
// the id of the preset it was picked from (chat/presets.py), which is never sent as a param.

export const STORAGE_KEY = "chat.settings";
export const PRESET_KEY = "chat.preset";
const PARAMS = ["temperature", "top_p", "max_new_tokens", "top_k", "min_p", "repetition_penalty", "stop", "system"];
export const MAX_STOP = 4; // stop sequences (the server's MAX_STOP_STRINGS)
const MAX_STOP_CHARS = 200;

/** The server's defaults and limits, from <body data-default-temperature=… data-…>. */
export function serverDefaults(dataset) {
  return {
    system: "", // empty: the server's own system prompt
    temperature: Number(dataset.defaultTemperature),
    top_p: dataset.defaultTopP === undefined ? 0.95 : Number(dataset.defaultTopP),
    top_k: dataset.defaultTopK === undefined ? 0 : Number(dataset.defaultTopK),
    min_p: dataset.defaultMinP === undefined ? 0 : Number(dataset.defaultMinP),
    repetition_penalty: dataset.defaultRepetitionPenalty === undefined ? 1 : Number(dataset.defaultRepetitionPenalty),
    stop: [],
    system_default: dataset.defaultSystemPrompt || "", // what the server uses when none is set
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

/** Stop sequences from the dialog's text (one per line) or a list: at most MAX_STOP, none empty. */
export function stopSequences(value) {
  const items = Array.isArray(value) ? value : typeof value === "string" ? value.split("\n") : [];
  return items.filter((item) => typeof item === "string" && item !== "").map((item) => item.slice(0, MAX_STOP_CHARS))
    .slice(0, MAX_STOP);
}

function rounded(value, low, high, places) {
  const scale = 10 ** places;
  return Math.round(clamp(Number(value), low, high) * scale) / scale;
}

/** The settings the user chose: {system?, temperature?, top_p?, max_new_tokens?, top_k?, min_p?,
 * repetition_penalty?, stop?}, each within bounds and left out where it is the server's default. */
export function normalize(raw, defaults) {
  const source = raw && typeof raw === "object" ? raw : {};
  const settings = {};
  if (typeof source.system === "string" && source.system.trim()) settings.system = source.system;
  if (given(source.temperature) && Number.isFinite(Number(source.temperature))) {
    const temperature = Math.round(clamp(Number(source.temperature), 0, 2) * 100) / 100;
    if (temperature !== defaults.temperature) settings.temperature = temperature;
  }
  if (given(source.top_p) && Number.isFinite(Number(source.top_p))) {
    const topP = Math.round(clamp(Number(source.top_p), 0.01, 1) * 100) / 100;
    if (topP !== defaults.top_p) settings.top_p = topP;
  }
  if (given(source.max_new_tokens) && Number.isFinite(Number(source.max_new_tokens))) {
    const tokens = Math.round(clamp(Number(source.max_new_tokens), 1, defaults.max_new_tokens_limit));
    if (tokens !== defaults.max_new_tokens) settings.max_new_tokens = tokens;
  }
  for (const [key, low, high, places] of [["top_k", 0, 1000, 0], ["min_p", 0, 1, 2], ["repetition_penalty", 0.01, 2, 2]]) {
    if (given(source[key]) && Number.isFinite(Number(source[key]))) {
      const value = rounded(source[key], low, high, places);
      if (value !== defaults[key]) settings[key] = value;
    }
  }
  const stop = stopSequences(source.stop);
  if (stop.length) settings.stop = stop;
  return settings;
}

/** What the settings dialog shows: the user's values, the server's defaults for the rest. */
export function withDefaults(settings, defaults) {
  return {
    system: settings.system ?? defaults.system,
    temperature: settings.temperature ?? defaults.temperature,
    top_p: settings.top_p ?? defaults.top_p,
    max_new_tokens: settings.max_new_tokens ?? defaults.max_new_tokens,
    top_k: settings.top_k ?? defaults.top_k,
    min_p: settings.min_p ?? defaults.min_p,
    repetition_penalty: settings.repetition_penalty ?? defaults.repetition_penalty,
    stop: settings.stop ?? defaults.stop,
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
  for (const key of PARAMS) {
    if (settings[key] !== undefined) params[key] = settings[key];
  }
  return params;
}

/** A preset's values as settings (normalized), marked with the preset they came from. */
export function fromPreset(preset, defaults) {
  const values = normalize(preset, defaults);
  return preset && preset.id !== undefined ? { ...values, preset: preset.id } : values;
}

/** The settings with their `preset` kept while the system prompt is still that preset's (sampling
 * values changed on top of a preset show as such: "Preset: Concise · max 6 tokens"). */
export function withPreset(settings, preset, defaults) {
  const clean = normalize(settings, defaults);
  if (!preset) return clean;
  return clean.system === normalize(preset, defaults).system ? { ...clean, preset: preset.id } : clean;
}

/** Normalized settings plus their preset id (when given and not dropped), e.g. from the server. */
export function normalizeWithPreset(raw, defaults) {
  const clean = normalize(raw, defaults);
  const preset = raw && raw.preset;
  return (typeof preset === "number" || typeof preset === "string") && preset !== "" ? { ...clean, preset } : clean;
}

/**
 * The chip above the composer: what in these settings is not the server's default, or null.
 * "Preset: Concise · max 6 tokens", "Custom system prompt · temperature 0".
 */
export function describe(settings, presets, defaults) {
  const parts = [];
  const preset = settings.preset !== undefined ? presets.find((p) => p.id === settings.preset) : null;
  if (preset) parts.push(`Preset: ${preset.name}`);
  else if (settings.system) parts.push("Custom system prompt");
  const base = preset ? normalize(preset, defaults) : {}; // a preset's own values go without saying
  const shown = (key) => settings[key] !== undefined && settings[key] !== base[key];
  if (shown("max_new_tokens")) parts.push(`max ${settings.max_new_tokens} tokens`);
  if (shown("temperature")) parts.push(`temperature ${settings.temperature}`);
  if (shown("top_p")) parts.push(`top-p ${settings.top_p}`);
  if (shown("top_k")) parts.push(`top-k ${settings.top_k}`);
  if (shown("min_p")) parts.push(`min-p ${settings.min_p}`);
  if (shown("repetition_penalty")) parts.push(`repetition penalty ${settings.repetition_penalty}`);
  if (settings.stop !== undefined && JSON.stringify(settings.stop) !== JSON.stringify(base.stop)) {
    parts.push(settings.stop.length === 1 ? "1 stop sequence" : `${settings.stop.length} stop sequences`);
  }
  return parts.length ? parts.join(" · ") : null;
}
