// Building the page's elements (the views' one way to make DOM nodes).

import { ICONS } from "./icons.js";

/** el("button", {class: "x", text: "Go", onclick: fn}, ...children); null/false attributes are skipped. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** A button showing one of our icons, named by its aria-label (and an optional visible text). */
export function iconButton(icon, label, { className = "", text = null, onclick } = {}) {
  const button = el("button", { type: "button", class: `icon-button ${className}`.trim(), "aria-label": label, title: label });
  button.innerHTML = ICONS[icon];
  if (text) button.append(el("span", { class: "button-text", text }));
  if (onclick) button.addEventListener("click", onclick);
  return button;
}
