// The settings dialog and the chip above the composer: a preset (built-in or the user's own, kept
// on the server), system prompt, temperature, top-p, max tokens, top-k, min-p, repetition penalty
// and stop sequences, shown with the server's (the model's own, where its worker announces them)
// defaults for what the user has not set. Settings belong to the open conversation (the server
// keeps them: `configure`, and `settings` in history); a new chat starts from the user's last
// choice, kept in this browser (settings.js).

import {
  PRESET_KEY, STORAGE_KEY, describe, fromPreset, loadSettings, normalize, normalizeWithPreset, saveSettings,
  toParams, withDefaults, withPreset,
} from "./settings.js";

/**
 * @param {object} els open, dialog, form, system, temperature, temperatureValue, topP, topK, minP,
 *   repetitionPenalty, stop, maxTokens, maxTokensHint,
 *   preset, presetName, presetSave, presetDelete, reset, cancel, chip
 * @param {object} defaults the server's (settings.js serverDefaults)
 * @param {{announce: Function, send: Function, current: Function}} actions send(frame) puts a frame on the
 *   socket (false when it could not); current() is the open conversation's id or null
 */
export function createSettingsDialog(els, defaults, { announce, send, current }) {
  let last = loadLast(); // the user's last choice: what a new chat starts from
  const byConversation = new Map(); // conversation id -> its settings, as the server keeps them
  let presets = [];
  let sentForNew = null; // the settings a new chat's `send` carried, until its ack names the chat
  let savingPreset = false;

  function loadLast() {
    const settings = loadSettings(defaults);
    let preset = null;
    try {
      preset = JSON.parse(localStorage.getItem(PRESET_KEY) || "null");
    } catch { /* not ours */ }
    return preset === null ? settings : normalizeWithPreset({ ...settings, preset }, defaults);
  }

  function saveLast(settings) {
    saveSettings(settings, defaults); // the values only, as before presets
    try {
      if (settings.preset === undefined) localStorage.removeItem(PRESET_KEY);
      else localStorage.setItem(PRESET_KEY, JSON.stringify(settings.preset));
    } catch { /* private mode: the choice still applies to this page */ }
    last = settings;
  }

  /** The settings that apply to the open conversation (or to a new one). */
  function active() {
    const id = current();
    return id !== null && byConversation.has(id) ? byConversation.get(id) : last;
  }

  function presetById(id) {
    return presets.find((p) => String(p.id) === String(id)) || null;
  }

  // --- the form ----------------------------------------------------------------------------
  function showTemperature(value) {
    els.temperatureValue.textContent = Number(value).toFixed(2);
  }

  function fill(values) {
    els.system.value = values.system;
    els.temperature.value = String(values.temperature);
    showTemperature(values.temperature);
    els.topP.value = String(values.top_p);
    els.maxTokens.value = String(values.max_new_tokens);
    els.topK.value = String(values.top_k);
    els.minP.value = String(values.min_p);
    els.repetitionPenalty.value = String(values.repetition_penalty);
    els.stop.value = values.stop.join("\n");
  }

  function formValues() {
    return { system: els.system.value, temperature: els.temperature.value, top_p: els.topP.value,
      max_new_tokens: els.maxTokens.value, top_k: els.topK.value, min_p: els.minP.value,
      repetition_penalty: els.repetitionPenalty.value, stop: els.stop.value };
  }

  function renderPresetOptions(selected) {
    const options = [new Option("Custom (no preset)", "")];
    for (const [label, builtin] of [["Built-in", true], ["Yours", false]]) {
      const group = presets.filter((p) => Boolean(p.builtin) === builtin);
      if (!group.length) continue;
      const optgroup = document.createElement("optgroup");
      optgroup.label = label;
      for (const preset of group) optgroup.append(new Option(preset.name, String(preset.id)));
      options.push(optgroup);
    }
    els.preset.replaceChildren(...options);
    els.preset.value = selected !== undefined && presetById(selected) ? String(selected) : "";
    updatePresetButtons();
  }

  function updatePresetButtons() {
    const preset = presetById(els.preset.value);
    els.presetDelete.disabled = !preset || preset.builtin;
    if (preset && !preset.builtin) els.presetName.value = preset.name;
  }

  function open() {
    last = loadLast(); // another tab may have changed it
    const settings = active();
    fill(withDefaults(settings, defaults));
    renderPresetOptions(settings.preset);
    els.presetName.value = presetById(settings.preset)?.builtin === false ? presetById(settings.preset).name : "";
    els.dialog.showModal();
    els.system.focus();
  }

  function apply(settings) {
    const id = current();
    saveLast(settings);
    if (id !== null) {
      byConversation.set(id, settings);
      send({ type: "configure", conversation: id, settings });
    }
    updateChip();
  }

  // --- the chip above the composer -----------------------------------------------------------
  function updateChip() {
    const text = describe(active(), presets, defaults);
    els.chip.hidden = text === null;
    els.chipText.textContent = text || "";
    els.chip.title = text ? `${text} (click to change the settings of this chat)` : "";
  }

  if (Number.isFinite(defaults.max_new_tokens_limit)) {
    els.maxTokens.max = String(defaults.max_new_tokens_limit);
    els.maxTokensHint.textContent = `1–${defaults.max_new_tokens_limit}; the server's default is ${defaults.max_new_tokens}.`;
  }
  if (defaults.system_default) {
    els.system.placeholder = `Empty: the server's default, “${defaults.system_default}”`;
  }
  els.open.addEventListener("click", open);
  els.chip.addEventListener("click", open);
  els.temperature.addEventListener("input", () => showTemperature(els.temperature.value));
  els.preset.addEventListener("change", () => {
    const preset = presetById(els.preset.value);
    if (preset) fill(withDefaults(fromPreset(preset, defaults), defaults));
    updatePresetButtons();
  });
  els.reset.addEventListener("click", () => {
    fill(withDefaults({}, defaults));
    els.preset.value = "";
    updatePresetButtons();
  });
  els.cancel.addEventListener("click", () => els.dialog.close("cancel"));
  els.presetSave.addEventListener("click", () => {
    const name = els.presetName.value.trim();
    if (!name) {
      els.presetName.focus();
      announce("Give the preset a name first");
      return;
    }
    const selected = presetById(els.preset.value);
    const values = normalize(formValues(), defaults);
    const preset = { name, system: values.system || "", ...values };
    if (selected && !selected.builtin && selected.name === name) preset.id = selected.id; // update it
    savingPreset = send({ type: "preset_save", preset });
  });
  els.presetDelete.addEventListener("click", () => {
    const selected = presetById(els.preset.value);
    if (selected && !selected.builtin) send({ type: "preset_delete", preset: selected.id });
  });
  // Saved in the form's submit (Save, or Enter in a field), which runs before the dialog closes:
  // the dialog's "close" event comes a task later, so anything reading the settings right after
  // the dialog disappears would race a save made there.
  els.form.addEventListener("submit", () => {
    apply(withPreset(formValues(), presetById(els.preset.value), defaults));
    announce("Settings saved");
  });
  els.dialog.addEventListener("close", () => els.open.focus());
  window.addEventListener("storage", (event) => {
    if (event.key === STORAGE_KEY || event.key === PRESET_KEY) {
      last = loadLast();
      updateChip();
    }
  });

  /** Frames that concern settings: presets, a conversation's settings, the ack of a new chat. */
  function receive(frame) {
    if (frame.type === "presets") {
      presets = Array.isArray(frame.items) ? frame.items : [];
      if (els.dialog.open) {
        const selected = savingPreset && frame.saved !== undefined ? frame.saved : els.preset.value;
        renderPresetOptions(selected);
        if (savingPreset) announce(frame.saved !== undefined ? "Preset saved" : "Preset deleted");
      }
      savingPreset = false;
    } else if (frame.type === "history" && frame.settings) {
      byConversation.set(frame.conversation, normalizeWithPreset(frame.settings, defaults));
    } else if (frame.type === "configured") {
      byConversation.set(frame.conversation, normalizeWithPreset(frame.settings, defaults));
    } else if (frame.type === "ack" && sentForNew !== null && !byConversation.has(frame.conversation)) {
      byConversation.set(frame.conversation, sentForNew);
      sentForNew = null;
    } else {
      return;
    }
    updateChip();
  }

  return {
    open,
    receive,
    updateChip,
    /** Ask for the presets (on every (re)connect: they may have changed meanwhile). */
    connected: () => send({ type: "presets" }),
    /** The settings that apply now (the system prompt, for the context estimate). */
    active: () => withDefaults(active(), defaults),
    /** The `params` of a turn: only what the user set. */
    params: () => toParams(active()),
    /** Extra fields of a turn's frame: a new chat is told the settings it starts with. */
    frameFields(frame) {
      if (frame.type !== "send" || frame.conversation !== null) return {};
      sentForNew = active();
      return { settings: sentForNew };
    },
  };
}
