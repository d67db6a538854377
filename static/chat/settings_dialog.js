// The settings dialog: system prompt, temperature and max tokens, shown with the server's
// defaults for what the user has not set, saved in this browser (settings.js).

import { STORAGE_KEY, loadSettings, saveSettings, toParams, withDefaults } from "./settings.js";

/**
 * @param {object} els open, dialog, form, system, temperature, temperatureValue, maxTokens, reset, cancel
 * @param {object} defaults the server's (settings.js serverDefaults)
 * @param {{announce: Function}} actions
 */
export function createSettingsDialog(els, defaults, { announce }) {
  let settings = loadSettings(defaults);

  function showTemperature(value) {
    els.temperatureValue.textContent = Number(value).toFixed(2);
  }

  function fill(values) {
    els.system.value = values.system;
    els.temperature.value = String(values.temperature);
    showTemperature(values.temperature);
    els.maxTokens.value = String(values.max_new_tokens);
  }

  function open() {
    settings = loadSettings(defaults); // another tab may have changed them
    fill(withDefaults(settings, defaults));
    els.dialog.showModal();
    els.system.focus();
  }

  if (Number.isFinite(defaults.max_new_tokens_limit)) els.maxTokens.max = String(defaults.max_new_tokens_limit);
  els.open.addEventListener("click", open);
  els.temperature.addEventListener("input", () => showTemperature(els.temperature.value));
  els.reset.addEventListener("click", () => fill(withDefaults({}, defaults)));
  els.cancel.addEventListener("click", () => els.dialog.close("cancel"));
  // Saved in the form's submit (Save, or Enter in a field), which runs before the dialog closes:
  // the dialog's "close" event comes a task later, so anything reading the settings right after
  // the dialog disappears would race a save made there.
  els.form.addEventListener("submit", () => {
    settings = saveSettings({
      system: els.system.value,
      temperature: els.temperature.value,
      max_new_tokens: els.maxTokens.value,
    }, defaults);
    announce("Settings saved");
  });
  els.dialog.addEventListener("close", () => els.open.focus());
  window.addEventListener("storage", (event) => {
    if (event.key === STORAGE_KEY) settings = loadSettings(defaults);
  });

  /** The `params` of a turn: only what the user set. */
  return { open, params: () => toParams(settings) };
}
