// Overview: the AI providers (configured or offline, model, latency, errors and their cause, cost) and a few counts.

import { api } from "./api.js";
import { $, clear, empty, h, num, showError, usd } from "./ui.js";

export const PROVIDERS = ["openai", "anthropic", "perplexity", "gemini", "xai"];
export const PROVIDER_NAMES = {
  openai: "OpenAI",
  anthropic: "Anthropic",
  perplexity: "Perplexity",
  gemini: "Google Gemini",
  xai: "xAI Grok",
  local: "Offline advisor",
  trainer: "Trainer",
};
const TASK_NAMES = {
  analysis: "Training analysis",
  research: "Research insights",
  synthetic_data: "Synthetic data",
  architecture: "Architecture search",
};

export function providerName(name) {
  return PROVIDER_NAMES[name] || name || "—";
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// The cause of the last failed call in words ("401 unauthorized: the API key was rejected", "429 rate limited",
// "connection refused", "timed out after 30 s"), with how many failed in a row: "401 unauthorized (3 errors in a row)".
function lastFailure(p) {
  if (!p.last_error) return "repeated errors";
  const n = p.consecutive_errors || 0;
  return n > 1 ? `${p.last_error} (${n} errors in a row)` : p.last_error;
}

export function providerState(p) {
  if (!p.enabled) return { label: "disabled", cls: "pill-muted", note: "turned off in the settings" };
  if (!p.configured) return { label: "not configured", cls: "pill-muted", note: "offline: no API key set" };
  if (p.breaker === "open") {
    const retry = p.retry_at ? `, retrying after ${clock(p.retry_at)}` : "";
    return { label: "circuit open", cls: "pill-bad", note: `circuit open: ${lastFailure(p)}${retry}` };
  }
  if (p.breaker === "half-open") return { label: "recovering", cls: "pill-warn", note: `trying again after ${lastFailure(p)}` };
  if (p.consecutive_errors) return { label: "configured", cls: "pill-warn", note: `online; the last call failed: ${lastFailure(p)}` };
  return { label: "configured", cls: "pill-ok", note: "online" };
}

function stat(label, value, extraClass = "") {
  return h("div", { class: `stat ${extraClass}` }, h("dt", {}, label), h("dd", {}, value));
}

function providerCard(name, p) {
  const state = providerState(p);
  const latency = p.recent_latency_ms === null || p.recent_latency_ms === undefined ? "—" : `${num(p.recent_latency_ms, 3)} ms`;
  return h(
    "article",
    { class: `provider ${p.configured ? "is-configured" : "is-offline"}`, dataset: { provider: name, configured: String(p.configured) } },
    h(
      "header",
      {},
      h("h3", {}, providerName(name)),
      h("span", { class: `pill ${state.cls}`, dataset: { status: state.label } }, state.label),
    ),
    h("p", { class: "provider-note muted small", dataset: { cause: p.last_error || "" } }, state.note),
    h(
      "dl",
      { class: "stats" },
      stat("Model", p.model || "—", "wide"),
      stat("Calls", String(p.calls ?? 0)),
      stat("Errors", String(p.errors ?? 0), p.errors ? "bad" : ""),
      stat("Latency", latency),
      stat("Cost", usd(p.cost_usd)),
    ),
  );
}

function localCard(p) {
  return h(
    "article",
    { class: "provider provider-local", dataset: { provider: "local" } },
    h("header", {}, h("h3", {}, "Offline advisor"), h("span", { class: "pill pill-ok" }, "always on")),
    h("p", { class: "provider-note muted small" }, "Built in; answers whenever no provider is configured or all of them fail."),
    h("dl", { class: "stats" }, stat("Calls", String(p?.calls ?? 0)), stat("Errors", String(p?.errors ?? 0)), stat("Cost", "free")),
  );
}

export function renderProviders(status) {
  const root = clear($("#providers"));
  const providers = status.providers || {};
  for (const name of PROVIDERS) {
    if (providers[name]) root.append(providerCard(name, providers[name]));
  }
  root.append(localCard(providers.local));
  const configured = PROVIDERS.filter((n) => providers[n]?.configured).length;
  const budget = status.budget_usd ? ` of ${usd(status.budget_usd)} budget` : " (no budget cap)";
  $("#providers-meta").textContent =
    `${configured} of ${PROVIDERS.length} configured · spent ${usd(status.spent_usd)}${budget} · cache: ${status.cache} · consensus ${status.consensus ? "on" : "off"}`;
  const routes = clear($("#providers-routes"));
  const entries = Object.entries(status.routes || {});
  if (entries.length) {
    routes.append(
      h("h3", {}, "Who answers what"),
      h(
        "ul",
        { class: "route-list" },
        entries.map(([task, chain]) =>
          h(
            "li",
            {},
            h("span", { class: "route-task" }, TASK_NAMES[task] || task),
            h(
              "span",
              { class: "route-chain" },
              chain.map((name, i) => [
                i ? h("span", { class: "arrow", "aria-hidden": "true" }, "→") : null,
                h("span", { class: `chip ${name === "local" || providers[name]?.configured ? "chip-on" : "chip-off"}` }, providerName(name)),
              ]),
            ),
          ),
        ),
      ),
    );
  }
  $('[data-stat="spend"]').textContent = usd(status.spent_usd);
}

async function loadProviders() {
  try {
    renderProviders(await api("/v1/ai/status"));
  } catch (exc) {
    const root = $("#providers");
    if (!root.querySelector(".provider")) {
      clear(root).append(empty(`Provider status is unavailable: ${exc.message}`));
    }
    showError(`AI provider status: ${exc.message}`);
  }
}

async function loadCounts() {
  try {
    const [jobs, models, datasets] = await Promise.all([api("/v1/jobs?limit=1000"), api("/v1/models"), api("/v1/datasets")]);
    const count = (state) => jobs.filter((j) => j.state === state).length;
    $('[data-stat="running"]').textContent = String(count("running") + count("queued"));
    $('[data-stat="completed"]').textContent = String(count("completed"));
    $('[data-stat="models"]').textContent = String(models.length);
    $('[data-stat="datasets"]').textContent = String(datasets.length);
  } catch (exc) {
    showError(exc.message);
  }
}

export const overviewView = {
  enter() {
    return Promise.all([loadProviders(), loadCounts()]);
  },
  refresh() {
    return Promise.all([loadProviders(), loadCounts()]);
  },
  interval: 10000,
};
