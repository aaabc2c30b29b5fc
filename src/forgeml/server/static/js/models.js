// Models: the list of trained models and a "try it" panel (draw a digit, paste a text, or type features).

import { api } from "./api.js";
import { DigitPad } from "./digit.js";
import { $, ago, clear, empty, formError, h, pct, showError } from "./ui.js";

const KIND_LABEL = { image: "digits", text: "text", tabular: "tabular" };

let models = [];
let selected = null;
let pad = null;
let wantedId = null;

function renderList() {
  const root = clear($("#models-list"));
  if (!models.length) {
    root.append(
      empty(
        "No models yet.",
        h("p", { class: "muted" }, "Each completed training job leaves a model here. ", h("a", { href: "#/jobs" }, "Train the MNIST MLP"), " — it takes seconds."),
      ),
    );
    return;
  }
  for (const m of models) {
    const accuracy = m.metrics?.test_accuracy;
    root.append(
      h(
        "button",
        {
          type: "button",
          class: `model-item${selected?.id === m.id ? " is-selected" : ""}`,
          dataset: { modelId: m.id, kind: m.kind },
          onclick: () => (window.location.hash = `#/models/${m.id}`),
        },
        h("span", { class: "model-name" }, m.name),
        h("span", { class: "model-meta small muted" }, h("span", { class: `chip kind-${m.kind}` }, KIND_LABEL[m.kind] || m.kind), ` test accuracy ${pct(accuracy)} · ${ago(m.created)}`),
        h("span", { class: "small muted mono" }, m.id),
      ),
    );
  }
}

function show(el, on) {
  el.hidden = !on;
}

async function select(model) {
  selected = model;
  renderList();
  formError($("#predict-error"), "");
  clear($("#prediction"));
  show($("#try-empty"), !model);
  show($("#try-image"), model?.kind === "image");
  show($("#try-text"), model?.kind === "text");
  show($("#try-tabular"), model?.kind === "tabular");
  show($("#digit-preview-box"), model?.kind === "image");
  show($("#try-body"), Boolean(model));
  $("#try-body").dataset.kind = model?.kind || "";
  $("#prediction").dataset.placeholder = {
    image: "Draw a digit, then press Predict: the model's answer and its probability for each digit appear here.",
    text: "Paste a text, then press Predict to see the verdict.",
  }[model?.kind] || "Enter the features, then press Predict.";
  show($("#model-details"), Boolean(model));
  if (!model) {
    $("#try-title").textContent = "Try a model";
    $("#try-meta").textContent = "";
    return;
  }
  $("#try-title").textContent = `Try “${model.name}”`;
  const metrics = model.metrics || {};
  $("#try-meta").textContent = `${KIND_LABEL[model.kind] || model.kind} · test accuracy ${pct(metrics.test_accuracy)} · ${metrics.epochs ?? "?"} epochs`;
  if (model.kind === "tabular") {
    const width = model.spec?.input_shape?.[0];
    $("#tabular-label").textContent = `Features (${width ?? "?"} numbers, comma-separated)`;
  }
  $("#model-spec-view").textContent = JSON.stringify({ spec: model.spec, classes: model.classes, metrics }, null, 2);
  try {
    const detail = await api(`/v1/models/${encodeURIComponent(model.id)}`);
    if (selected?.id === model.id) {
      $("#model-spec-view").textContent = JSON.stringify({ lineage: detail.lineage, spec: detail.spec, classes: detail.classes, metrics: detail.metrics }, null, 2);
    }
  } catch {
    /* the list's copy is shown */
  }
}

function inputsFor(model) {
  if (model.kind === "image") {
    const pixels = pad.pixels();
    if (!pixels) throw new Error("Draw a digit in the box first.");
    return [pixels];
  }
  if (model.kind === "text") {
    const text = $("#predict-text").value.trim();
    if (!text) throw new Error("Type or paste some text first.");
    return [text];
  }
  const raw = $("#predict-features").value.trim();
  const values = raw.split(/[\s,;]+/).filter(Boolean).map(Number);
  const width = model.spec?.input_shape?.[0];
  if (!values.length || values.some((v) => !Number.isFinite(v))) throw new Error("Enter numbers separated by commas.");
  if (width && values.length !== width) throw new Error(`This model takes ${width} numbers; you entered ${values.length}.`);
  return [values];
}

function renderPrediction(model, answer) {
  const root = clear($("#prediction"));
  const probs = answer.probabilities[0];
  const label = answer.predictions[0];
  const best = Math.max(...probs);
  root.dataset.prediction = label;
  root.dataset.total = String(probs.reduce((a, b) => a + b, 0));
  let headline;
  if (model.kind === "text" && answer.classes.length === 2 && answer.classes.includes("spam")) {
    const spam = label === "spam";
    headline = h("div", { class: `verdict ${spam ? "verdict-bad" : "verdict-ok"}` }, spam ? "Spam" : "Not spam", h("span", { class: "small" }, ` (${label}, ${pct(best)} sure)`));
  } else {
    headline = h(
      "div",
      { class: "verdict" },
      h("span", { class: "small muted" }, model.kind === "image" ? "The model reads " : "Predicted class "),
      h("strong", { class: "predicted-label" }, label),
      h("span", { class: "small muted" }, ` with ${pct(best)} probability`),
    );
  }
  const bars = h(
    "div",
    { class: "bars", role: "list" },
    answer.classes.map((cls, i) =>
      h(
        "div",
        { class: `bar-row${cls === label ? " is-top" : ""}`, role: "listitem", dataset: { class: cls, probability: String(probs[i]) } },
        h("span", { class: "bar-label" }, cls),
        h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${(probs[i] * 100).toFixed(1)}%` })),
        h("span", { class: "bar-value" }, pct(probs[i])),
      ),
    ),
  );
  root.append(headline, bars);
}

async function predict() {
  const model = selected;
  if (!model) return;
  const errorBox = $("#predict-error");
  formError(errorBox, "");
  let inputs;
  try {
    inputs = inputsFor(model);
  } catch (exc) {
    formError(errorBox, exc.message);
    return;
  }
  const button = $("#predict-btn");
  button.disabled = true;
  try {
    const answer = await api(`/v1/models/${encodeURIComponent(model.id)}/predict`, { method: "POST", json: { inputs } });
    if (selected?.id === model.id) renderPrediction(model, answer);
  } catch (exc) {
    formError(errorBox, `Prediction failed: ${exc.message}`);
  } finally {
    button.disabled = false;
  }
}

async function load() {
  try {
    models = await api("/v1/models");
  } catch (exc) {
    if (!models.length) clear($("#models-list")).append(empty(`Models are unavailable: ${exc.message}`));
    showError(`Models: ${exc.message}`);
    return;
  }
  const keep = models.find((m) => m.id === (wantedId || selected?.id));
  if (wantedId && !keep) showError(`No model ${wantedId}; it may have been removed.`);
  const next = keep || models[0] || null;
  if (next?.id !== selected?.id) await select(next);
  else {
    if (next) selected = next;
    renderList();
  }
}

export function initModels() {
  pad = new DigitPad($("#digit-canvas"), $("#digit-preview"), { onStroke: () => clear($("#prediction")) });
  $("#clear-canvas").addEventListener("click", () => {
    pad.clear();
    clear($("#prediction"));
    formError($("#predict-error"), "");
  });
  $("#predict-btn").addEventListener("click", predict);
  for (const button of document.querySelectorAll("[data-sample]")) {
    button.addEventListener("click", () => {
      $("#predict-text").value = button.dataset.sample;
    });
  }
  $("#predict-features").addEventListener("keydown", (e) => e.key === "Enter" && predict());
}

export const modelsView = {
  enter(id) {
    wantedId = id || null;
    return load();
  },
  refresh() {
    wantedId = null;
    return load();
  },
  interval: 15000,
};
