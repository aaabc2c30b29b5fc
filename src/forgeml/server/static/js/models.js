// Models: the list of trained models and a "try it" panel (draw a digit, paste a text, or type features).
// The panel answers twice: the server's /predict, and the same network run in this browser from its ONNX
// export (onnxruntime-web, WebAssembly), each with its latency. window.lastPredictions keeps both answers.

import { api } from "./api.js";
import { DigitPad } from "./digit.js";
import { predictInBrowser } from "./onnx.js";
import { $, ago, clear, empty, formError, h, pct, showError } from "./ui.js";

const KIND_LABEL = { image: "digits", text: "text", tabular: "tabular" };

let models = [];
let selected = null;
let pad = null;
let wantedId = null;
let run = 0; // the latest prediction's number: answers to an older one are dropped

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
  clearAnswers();
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

function ms(value) {
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value).toLocaleString()} ms`;
}

function clearAnswers() {
  run += 1;
  clear($("#prediction"));
  const browser = clear($("#prediction-browser"));
  browser.hidden = true;
  delete browser.dataset.state;
  window.lastPredictions = null;
}

function renderPrediction(model, answer, root = $("#prediction"), source = null) {
  clear(root);
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
  if (source) root.append(source);
  root.append(headline, bars);
}

function sourceLine(where, detail, latencyMs, note = null) {
  return h(
    "div",
    { class: "answer-source small", dataset: { latencyMs: String(latencyMs) } },
    h("strong", {}, where),
    " · ",
    h("span", { class: "latency" }, ms(latencyMs)),
    h("span", { class: "muted answer-note" }, detail),
    note ? h("span", { class: "muted answer-note" }, note) : null,
  );
}

function browserNote(box, state, message) {
  box.dataset.state = state;
  clear(box).append(h("div", { class: "answer-source small" }, h("strong", {}, "In this browser")), h("p", { class: "muted small browser-note" }, message));
}

/** The same prediction, run in this browser from the model's ONNX export. */
async function predictHere(model, inputs, server, mine) {
  const box = $("#prediction-browser");
  box.hidden = false;
  if (model.kind === "text") {
    const reason = "Not run in the browser for text models: that would need the model's tokeniser in JavaScript. The server's answer is above; GET /v1/models/{id}/onnx still exports the network (token ids in, logits out).";
    browserNote(box, "skipped", reason);
    window.lastPredictions.browser = { skipped: reason };
    return;
  }
  browserNote(box, "running", "Running the model in this browser (onnxruntime-web, WebAssembly)…");
  try {
    const result = await predictInBrowser(model, inputs);
    if (mine !== run) return;
    const probs = result.probabilities[0];
    const top = probs.indexOf(Math.max(...probs));
    const answer = { classes: server.classes, predictions: [server.classes[top]], probabilities: [probs] };
    const note = result.loadMs === null ? null : `first run: + ${ms(result.loadMs)} to load`;
    renderPrediction(model, answer, box, sourceLine("In this browser", "onnxruntime-web, WebAssembly", result.latencyMs, note));
    const diff = Math.max(...probs.map((p, i) => Math.abs(p - server.probabilities[0][i])));
    const same = answer.predictions[0] === server.predictions[0];
    box.dataset.maxDifference = String(diff);
    box.append(
      h(
        "p",
        { class: `small agreement ${same ? "agree" : "disagree"}` },
        same ? "Same answer as the server" : "A different answer from the server's",
        `; the probabilities differ by at most ${diff.toExponential(1)}.`,
      ),
    );
    box.dataset.state = "done";
    window.lastPredictions.browser = { classes: answer.classes, prediction: answer.predictions[0], probabilities: answer.probabilities, latencyMs: result.latencyMs, loadMs: result.loadMs };
  } catch (exc) {
    if (mine !== run) return;
    browserNote(box, "error", `Could not run the model in this browser: ${exc.message}`);
    window.lastPredictions.browser = { error: exc.message };
  }
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
  clearAnswers();
  const mine = run;
  let answer;
  try {
    const started = performance.now();
    answer = await api(`/v1/models/${encodeURIComponent(model.id)}/predict`, { method: "POST", json: { inputs } });
    const latencyMs = performance.now() - started;
    if (mine !== run) return;
    renderPrediction(model, answer, $("#prediction"), sourceLine("On the server", "POST /predict, round trip", latencyMs));
    window.lastPredictions = { modelId: model.id, server: { classes: answer.classes, prediction: answer.predictions[0], probabilities: answer.probabilities, latencyMs }, browser: null };
  } catch (exc) {
    if (mine === run) formError(errorBox, `Prediction failed: ${exc.message}`);
    return;
  } finally {
    button.disabled = false;
  }
  // after the server's answer, not beside it: the page's one thread would otherwise count the model's run
  // in the server's round trip
  await predictHere(model, inputs, answer, mine);
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
  pad = new DigitPad($("#digit-canvas"), $("#digit-preview"), { onStroke: clearAnswers });
  $("#clear-canvas").addEventListener("click", () => {
    pad.clear();
    clearAnswers();
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
