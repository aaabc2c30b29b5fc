// DOM helpers and formatting shared by every panel. Text always goes in through textContent,
// never innerHTML: job names, dataset names and AI answers are data, not markup.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** h("div", {class: "x", dataset: {id: 1}, onclick: fn}, "text", childNode, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function empty(message, ...extra) {
  return h("div", { class: "empty" }, h("p", {}, message), ...extra);
}

/** A link only for http(s) URLs; anything else is shown as text. */
export function safeLink(url, text) {
  try {
    const parsed = new URL(url, window.location.href);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") {
      return h("a", { href: parsed.href, target: "_blank", rel: "noopener noreferrer" }, text);
    }
  } catch {
    /* not a URL */
  }
  return h("span", {}, text);
}

export function pct(x, digits = 1) {
  return x === null || x === undefined || Number.isNaN(x) ? "—" : `${(x * 100).toFixed(digits)}%`;
}

export function num(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  if (x !== 0 && (Math.abs(x) < 1e-4 || Math.abs(x) >= 1e6)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

export function usd(x) {
  if (!x) return "$0.00";
  return x < 0.01 ? `$${x.toFixed(4)}` : `$${x.toFixed(2)}`;
}

export function ago(seconds) {
  if (!seconds) return "—";
  const diff = Date.now() / 1000 - seconds;
  if (diff < 5) return "just now";
  if (diff < 60) return `${Math.round(diff)} s ago`;
  if (diff < 3600) return `${Math.round(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.round(diff / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds - m * 60)} s`;
}

const STATE_CLASS = {
  queued: "pill-wait",
  running: "pill-run",
  completed: "pill-ok",
  failed: "pill-bad",
  cancelled: "pill-muted",
  interrupted: "pill-warn",
};

export function statePill(state) {
  return h("span", { class: `pill ${STATE_CLASS[state] || ""}`, dataset: { state } }, state);
}

export function setStatePill(el, state) {
  el.className = `pill ${STATE_CLASS[state] || ""}`;
  el.dataset.state = state;
  el.textContent = state;
}

// ---------------------------------------------------------------- error banner
let bannerTimer = null;

export function showError(message) {
  const banner = $("#error-banner");
  $(".banner-text", banner).textContent = message;
  banner.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => {
    banner.hidden = true;
  }, 15000);
}

export function hideError() {
  $("#error-banner").hidden = true;
}

export function initBanner() {
  $("#error-banner .banner-close").addEventListener("click", hideError);
}

/** Show a message in a form's inline error box (or hide it with a falsy message). */
export function formError(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}
