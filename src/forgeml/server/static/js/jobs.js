// Jobs: the "new job" form, the list, and one job's page (live charts over SSE, the AI timeline,
// cancel and resume).

import { ApiError, api } from "./api.js";
import { JobCharts } from "./charts.js";
import { providerName } from "./overview.js";
import { followStream } from "./sse.js";
import {
  $,
  $$,
  ago,
  clear,
  duration,
  empty,
  formError,
  h,
  num,
  pct,
  safeLink,
  setStatePill,
  showError,
  statePill,
} from "./ui.js";

const ACTIVE = ["queued", "running"];
const RESUMABLE = ["interrupted", "cancelled", "failed"];
const SERVER_STOPPED = "the server stopped";  // how an interrupted job's error begins when the server stopped

/** What the job page says about a job's error: only a failed job failed; an interrupted one can resume. */
function jobErrorText(j) {
  if (j.state === "interrupted") {
    return j.error.startsWith(SERVER_STOPPED)
      ? "This job was interrupted (the server stopped); resume it to continue."
      : `This job was interrupted: ${j.error}. Resume it to continue.`;
  }
  return j.state === "failed" ? `This job failed: ${j.error}` : `This job ${j.state}: ${j.error}`;
}

// What each preset starts from: GET /v1/jobs/presets fills this (the form's placeholders and hints);
// "custom" is the form's own starting point for a spec written by hand.
const PRESETS = {
  custom: {
    dataset: "mnist",
    epochs: 5,
    batch_size: 64,
    optimizer: { name: "adam", lr: 0.001, weight_decay: 0 },
    ai: null,
    description: "Describe your own network, layer by layer, as a ModelSpec.",
  },
};
let presetsLoaded = null;

function loadPresets() {
  presetsLoaded ??= api("/v1/jobs/presets")
    .then((catalogue) => {
      Object.assign(PRESETS, catalogue);
      onPresetChange();
    })
    .catch((exc) => {
      presetsLoaded = null; // try again on the next visit
      showError(`Presets: ${exc.message}`);
    });
  return presetsLoaded;
}

function presetOf(name) {
  return PRESETS[name] || PRESETS.custom;
}
const AI_DEFAULTS = {
  synthetic_data_ratio: 0,
  research_update_interval: 10,
  optimization_guidance_frequency: 5,
  auto_apply: true,
  consensus: false,
};
const DOMAIN_OF = { mnist: "computer_vision", spam: "nlp" };

let datasets = []; // uploaded datasets, for the form's dataset list
let specTouched = false;
let pendingPrefill = null;

// ------------------------------------------------------------------ the form
function specTemplate(datasetId) {
  const maxLength = Number($("#max-length").value) || 128;
  if (datasetId === "spam") {
    return {
      name: "bag of embeddings",
      input_shape: [maxLength],
      layers: [
        { type: "Embedding", args: { num_embeddings: 20000, embedding_dim: 32, padding_idx: 0 } },
        { type: "SequencePool", args: { mode: "mean" } },
        { type: "Linear", args: { in_features: 32, out_features: 2 } },
      ],
    };
  }
  const ds = datasets.find((d) => d.id === datasetId);
  const inputs = ds ? ds.summary.features : 784;
  const classes = ds ? ds.summary.num_classes : 10;
  const hidden = ds ? 64 : 128;
  return {
    name: ds ? `${ds.name} MLP` : "digits MLP",
    input_shape: [inputs],
    layers: [
      { type: "Linear", args: { in_features: inputs, out_features: hidden } },
      { type: "ReLU" },
      { type: "Linear", args: { in_features: hidden, out_features: classes } },
    ],
  };
}

function fillDatasets() {
  const select = $("#job-dataset");
  const preset = $("#preset").value;
  const previous = select.value;
  clear(select);
  if (preset !== "custom") select.append(h("option", { value: "" }, `preset default (${presetOf(preset).dataset})`));
  select.append(h("option", { value: "mnist" }, "mnist — handwritten digits"), h("option", { value: "spam" }, "spam — e-mails, ham or spam"));
  if (datasets.length) {
    const group = h("optgroup", { label: "Uploaded" });
    for (const d of datasets) group.append(h("option", { value: d.id }, `${d.name} (${d.summary.rows} rows, ${d.summary.num_classes} classes)`));
    select.append(group);
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

function effectiveDataset() {
  return $("#job-dataset").value || presetOf($("#preset").value).dataset;
}

function setAIFields(ai, dataset) {
  const cfg = { ...AI_DEFAULTS, domain: DOMAIN_OF[dataset] || (dataset ? "tabular" : "general"), ...(ai || {}) };
  $("#ai-guidance").value = cfg.optimization_guidance_frequency;
  $("#ai-research").value = cfg.research_update_interval;
  $("#ai-synthetic").value = cfg.synthetic_data_ratio;
  $("#ai-domain").value = cfg.domain;
  $("#ai-auto-apply").checked = cfg.auto_apply;
  $("#ai-consensus").checked = cfg.consensus;
}

function syncAIEnabled() {
  const on = $("#ai-enabled").checked;
  $("#ai-fields").classList.toggle("is-off", !on);
  for (const input of $$("#ai-fields input, #ai-fields select")) input.disabled = !on;
}

function onPresetChange() {
  const preset = $("#preset").value;
  const p = presetOf(preset);
  $("#preset-hint").textContent = p.description;
  fillDatasets();
  $("#epochs").placeholder = String(p.epochs);
  $("#batch-size").placeholder = String(p.batch_size);
  $("#lr").placeholder = String(p.optimizer.lr);
  $("#optimizer").options[0].textContent = `preset (${p.optimizer.name})`;
  const aiBox = $("#ai-enabled");
  aiBox.checked = Boolean(p.ai);
  $("#ai-hint").textContent = p.ai
    ? "This preset trains with AI guidance; the settings below replace its defaults (untick to train without)."
    : "AI services analyse the run between epochs and recommend changes; without API keys the offline advisor answers.";
  setAIFields(p.ai, effectiveDataset());
  syncAIEnabled();
  onDatasetChange();
}

function onDatasetChange() {
  const preset = $("#preset").value;
  const dataset = effectiveDataset();
  $("#max-length-field").hidden = dataset !== "spam";
  $("#model-spec-field").hidden = preset !== "custom";
  if (preset === "custom" && !specTouched) {
    $("#model-spec").value = JSON.stringify(specTemplate(dataset), null, 2);
  }
  if (!presetOf(preset).ai) $("#ai-domain").value = DOMAIN_OF[dataset] || (dataset ? "tabular" : "general");
}

function intField(selector, label, lo, hi) {
  const raw = $(selector).value.trim();
  if (!raw) return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < lo || value > hi) throw new Error(`${label} must be a whole number from ${lo} to ${hi}.`);
  return value;
}

function floatField(selector, label, lo, hi) {
  const raw = $(selector).value.trim();
  if (!raw) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < lo || value > hi) throw new Error(`${label} must be a number from ${lo} to ${hi}.`);
  return value;
}

/** The POST /v1/jobs body from the form; throws Error with a message for the person. */
export function jobRequest() {
  const preset = $("#preset").value;
  const p = presetOf(preset);
  const body = {};
  if (preset !== "custom") body.preset = preset;
  const name = $("#job-name").value.trim();
  if (name) body.name = name;
  const dataset = $("#job-dataset").value;
  if (dataset) body.dataset = dataset;
  else if (preset === "custom") body.dataset = p.dataset;
  const epochs = intField("#epochs", "Epochs", 1, 500);
  if (epochs !== undefined) body.epochs = epochs;
  const batch = intField("#batch-size", "Batch size", 1, 4096);
  if (batch !== undefined) body.batch_size = batch;
  const processes = intField("#processes", "Processes", 1, 256);
  if (processes !== undefined && processes > 1) body.processes = processes;
  if ($("#profile").checked) body.profile = true;
  const optName = $("#optimizer").value;
  const lr = floatField("#lr", "Learning rate", 1e-9, 9.99);
  if (optName || lr !== undefined) {
    const base = p.optimizer;
    body.optimizer = { name: optName || base.name, lr: lr ?? base.lr };
    if (!optName || optName === base.name) body.optimizer.weight_decay = base.weight_decay;
  }
  if (effectiveDataset() === "spam") {
    const maxLength = intField("#max-length", "Tokens per text", 8, 1024);
    if (maxLength !== undefined) body.max_length = maxLength;
  }
  if (preset === "custom") {
    try {
      body.model = JSON.parse($("#model-spec").value);
    } catch (exc) {
      throw new Error(`The model spec is not valid JSON: ${exc.message}`);
    }
  }
  if ($("#ai-enabled").checked) {
    const ai = {
      synthetic_data_ratio: floatField("#ai-synthetic", "Synthetic data ratio", 0, 1) ?? 0,
      research_update_interval: intField("#ai-research", "Research interval", 1, 100000) ?? 10,
      optimization_guidance_frequency: intField("#ai-guidance", "Guidance interval", 1, 100000) ?? 5,
      domain: $("#ai-domain").value,
      auto_apply: $("#ai-auto-apply").checked,
      consensus: $("#ai-consensus").checked,
      wait_for_ai: $("#ai-wait").checked,
    };
    for (const box of $$("#ai-providers input")) ai[`${box.value}_enabled`] = box.checked;
    body.ai = ai;
  } else if (p.ai) {
    body.ai = null; // the preset trains with AI guidance: an explicit null turns it off
  }
  return body;
}

async function submitJob(event) {
  event.preventDefault();
  const errorBox = $("#job-form-error");
  formError(errorBox, "");
  let body;
  try {
    body = jobRequest();
  } catch (exc) {
    formError(errorBox, exc.message);
    return;
  }
  const button = $("#start-job");
  button.disabled = true;
  button.textContent = "Starting…";
  try {
    const job = await api("/v1/jobs", { method: "POST", json: body });
    window.location.hash = `#/jobs/${job.id}`;
  } catch (exc) {
    formError(errorBox, exc instanceof ApiError && exc.status === 422 ? `The server could not accept this job:\n${exc.message}` : exc.message);
  } finally {
    button.disabled = false;
    button.textContent = "Start training";
  }
}

/** Open the form with some fields chosen (e.g. "train on this dataset"). */
export function prefillJob(values) {
  pendingPrefill = values;
  window.location.hash = "#/jobs";
}

function applyPrefill() {
  if (!pendingPrefill) return;
  const { preset, dataset } = pendingPrefill;
  pendingPrefill = null;
  specTouched = false;
  if (preset) $("#preset").value = preset;
  onPresetChange();
  if (dataset) {
    $("#job-dataset").value = dataset;
    onDatasetChange();
  }
  $("#job-form").scrollIntoView({ block: "start" });
}

// ------------------------------------------------------------------ the list
function progress(job) {
  const share = job.epochs ? Math.min(1, job.epochs_done / job.epochs) : 0;
  return h(
    "div",
    { class: "mini-progress", title: `${job.epochs_done} of ${job.epochs} epochs` },
    h("div", { class: "progress" }, h("div", { class: "progress-bar", style: `width:${(share * 100).toFixed(1)}%` })),
    h("span", { class: "small muted" }, `${job.epochs_done}/${job.epochs}`),
  );
}

function renderJobs(jobs) {
  const root = clear($("#jobs-list"));
  if (!jobs.length) {
    root.append(
      empty(
        "No training jobs yet.",
        h("p", { class: "muted" }, "Pick the MNIST MLP preset, set 2 epochs and press Start training: it finishes in seconds and leaves a model you can draw digits for."),
      ),
    );
    return;
  }
  const rows = jobs.map((job) =>
    h(
      "tr",
      { dataset: { jobId: job.id, state: job.state }, tabindex: "0", onclick: () => (window.location.hash = `#/jobs/${job.id}`), onkeydown: (e) => e.key === "Enter" && (window.location.hash = `#/jobs/${job.id}`) },
      h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "job-link" }, job.name), h("div", { class: "small muted mono" }, job.id)),
      h("td", {}, job.dataset),
      h("td", {}, statePill(job.state), job.error ? h("div", { class: "small bad clip", title: job.error }, job.error) : null),
      h("td", {}, progress(job)),
      h("td", { class: "num", dataset: { best: job.best_val_accuracy ?? "" } }, pct(job.best_val_accuracy)),
      h("td", {}, job.ai_enabled ? h("span", { class: "chip chip-on" }, "AI") : h("span", { class: "muted small" }, "—")),
      h("td", { class: "small muted", title: new Date(job.created * 1000).toLocaleString() }, ago(job.created)),
    ),
  );
  root.append(
    h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, ["Job", "Dataset", "State", "Progress", "Best val acc.", "AI", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows),
    ),
  );
}

let listedJobs = [];

async function loadJobs() {
  try {
    listedJobs = await api("/v1/jobs");
    renderJobs(listedJobs);
  } catch (exc) {
    if (!$("#jobs-list table")) clear($("#jobs-list")).append(empty(`Jobs are unavailable: ${exc.message}`));
    showError(`Jobs: ${exc.message}`);
  }
}

async function loadDatasets() {
  try {
    datasets = await api("/v1/datasets");
  } catch (exc) {
    datasets = [];
    showError(`Datasets: ${exc.message}`);
  }
  fillDatasets();
}

export function initJobForm() {
  $("#job-form").addEventListener("submit", submitJob);
  $("#preset").addEventListener("change", () => {
    specTouched = false;
    onPresetChange();
  });
  $("#job-dataset").addEventListener("change", onDatasetChange);
  $("#model-spec").addEventListener("input", () => (specTouched = true));
  $("#ai-enabled").addEventListener("change", syncAIEnabled);
  $("#refresh-jobs").addEventListener("click", loadJobs);
  onPresetChange();
}

export const jobsView = {
  async enter() {
    await Promise.all([loadJobs(), loadDatasets(), loadPresets()]);
    applyPrefill();
  },
  refresh: loadJobs,
  interval: () => (listedJobs.some((j) => ACTIVE.includes(j.state)) ? 2000 : 10000),
};

// ------------------------------------------------------------------ one job
const KIND_LABEL = {
  recommendation: "Recommendation",
  diagnosis: "Diagnosis",
  insight: "Research insight",
  synthetic_data: "Synthetic data",
  divergence: "Recovery",
  provider_error: "Provider error",
  architecture: "Architecture search",
  verdict: "Trial verdict",
  experiment: "Experiment",
};

function describeAction(action) {
  if (!action) return null;
  const a = action;
  switch (a.action) {
    case "scale_learning_rate":
      return `Scale the learning rate by ${a.factor}`;
    case "set_weight_decay":
      return `Set weight decay to ${a.value}`;
    case "set_dropout":
      return `Set dropout to ${a.p}`;
    case "set_batch_size":
      return `Set the batch size to ${a.n}`;
    case "enable_grad_clipping":
      return `Clip gradients at norm ${a.max_norm}`;
    case "set_label_smoothing":
      return `Use label smoothing ${a.x}`;
    case "switch_scheduler":
      return `Switch to the ${a.name} scheduler${a.params && Object.keys(a.params).length ? ` ${JSON.stringify(a.params)}` : ""}`;
    case "early_stop":
      return "Stop training early";
    case "restore_best_checkpoint":
      return "Restore the best checkpoint";
    case "switch_optimizer":
      return `Switch the optimizer to ${a.name}${a.keep_state ? " (keeping its state)" : ""}`;
    case "standardize_inputs":
      return "Standardise the inputs";
    case "set_lr_schedule":
      return `Use a ${a.kind.replace("_", " ")} learning-rate schedule${a.warmup_epochs ? ` (${a.warmup_epochs} warm-up epochs)` : ""}`;
    case "find_learning_rate":
      return "Run a learning-rate range test";
    case "trial":
      return (a.changes || []).map(describeAction).join("; ");
    default: {
      const { action: name, ...rest } = a;
      return `${name} ${Object.keys(rest).length ? JSON.stringify(rest) : ""}`.trim();
    }
  }
}

function outcome(event) {
  if (event.kind === "recommendation") {
    if (event.applied) return { label: "applied", cls: "pill-ok" };
    if (event.reason.startsWith("refused")) return { label: "refused", cls: "pill-bad" };
    return { label: "recorded only", cls: "pill-muted" };
  }
  if (event.kind === "divergence") return event.applied ? { label: "recovered", cls: "pill-warn" } : { label: "stopped", cls: "pill-bad" };
  if (event.kind === "synthetic_data") return event.applied ? { label: "mixed in", cls: "pill-ok" } : { label: "none used", cls: "pill-muted" };
  if (event.kind === "provider_error") return { label: "error", cls: "pill-bad" };
  if (event.kind === "verdict") return event.reason.includes("reverted") ? { label: "reverted", cls: "pill-warn" } : { label: "kept", cls: "pill-ok" };
  if (event.kind === "experiment") return event.applied ? { label: "adopted", cls: "pill-ok" } : { label: "not adopted", cls: "pill-muted" };
  if (event.kind === "insight") return event.action ? { label: "not applied", cls: "pill-muted" } : null;
  return null;
}

function group(kind) {
  return ["recommendation", "diagnosis", "insight"].includes(kind) ? kind : "other";
}

function citationList(citations) {
  if (!citations || !citations.length) return null;
  return h(
    "ul",
    { class: "citations" },
    citations.map((c) => {
      const url = c.url || (c.arxiv_id ? `https://arxiv.org/abs/${c.arxiv_id}` : null);
      const text = `${c.title}${c.year ? ` (${c.year})` : ""}`;
      return h("li", {}, url ? safeLink(url, text) : text);
    }),
  );
}

function fmtValue(v) {
  if (typeof v === "number") return num(v, 4);
  if (v === null || v === undefined) return "none";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function timelineItem(event) {
  const result = outcome(event);
  let title;
  let body = event.reason;
  if (event.kind === "recommendation") {
    title = describeAction(event.action);
    if (event.reason === "applied") body = "";
  } else if (event.kind === "insight") {
    title = event.reason;
    body = event.action ? `Suggested change: ${describeAction(event.action)}` : "";
  } else if (event.kind === "diagnosis") {
    const colon = event.reason.indexOf(":");
    title = colon > 0 ? event.reason.slice(0, colon) : event.reason;
    body = colon > 0 ? event.reason.slice(colon + 1).trim() : "";
  } else if (event.kind === "verdict") {
    title = `Trial: ${describeAction(event.action) || "changes"}`;
  } else {
    title = KIND_LABEL[event.kind] || event.kind;
  }
  const meta = [];
  if (event.provider) meta.push(`by ${providerName(event.provider)}`);
  if (event.task) meta.push(event.task);
  if (event.requested_epoch !== null && event.requested_epoch !== undefined && event.requested_epoch !== event.epoch) {
    meta.push(`asked after epoch ${event.requested_epoch}`);
  }
  return h(
    "li",
    { class: `tl-item kind-${event.kind}`, dataset: { kind: event.kind, group: group(event.kind), epoch: event.epoch } },
    h("div", { class: "tl-epoch" }, h("span", {}, "epoch"), h("strong", {}, String(event.epoch))),
    h(
      "div",
      { class: "tl-body" },
      h(
        "div",
        { class: "tl-head" },
        h("span", { class: "tl-kind" }, KIND_LABEL[event.kind] || event.kind),
        h("strong", { class: "tl-title" }, title),
        result ? h("span", { class: `pill ${result.cls}`, dataset: { outcome: result.label } }, result.label) : null,
      ),
      h("div", { class: "tl-meta small muted" }, meta.join(" · ")),
      body ? h("p", { class: "tl-text" }, body) : null,
      event.applied && event.before !== undefined && event.after !== undefined && event.before !== null
        ? h("p", { class: "tl-change small" }, `${fmtValue(event.before)} → ${fmtValue(event.after)}`)
        : null,
      event.rationale ? h("p", { class: "tl-rationale small" }, event.rationale) : null,
      event.confidence !== null && event.confidence !== undefined ? h("p", { class: "small muted" }, `confidence ${pct(event.confidence, 0)}`) : null,
      citationList(event.citations),
      h("p", { class: "tl-repeat small muted", hidden: true }),
    ),
  );
}

class JobPage {
  constructor() {
    this.charts = new JobCharts($("#loss-chart"), $("#acc-chart"));
    this.id = null;
    this.stream = null;
    this.job = null;
    this.eventCount = 0;
    this.seenInsights = new Map();
    $("#cancel-job").addEventListener("click", () => this.cancel());
    $("#resume-job").addEventListener("click", () => this.resume());
    $("#timeline-filter").addEventListener("change", () => this.applyFilter());
  }

  async open(id) {
    this.close();
    this.id = id;
    this.job = null;
    this.eventCount = 0;
    this.seenInsights = new Map();
    $("#job-title").textContent = "Loading job…";
    $("#job-subtitle").textContent = id;
    $("#job-error").hidden = true;
    $("#job-note").textContent = "";
    $("#stream-status").textContent = "";
    for (const sel of ["#job-best", "#job-loss", "#job-lr", "#job-speed"]) $(sel).textContent = "—";
    $("#job-request").textContent = "";
    this.profiled = this.profileShown = this.profileAsked = false;
    this.showProfile(null);
    clear($("#ai-timeline"));
    if (!this.charts.available()) {
      for (const el of [$("#loss-chart"), $("#acc-chart")]) clear(el).append(empty("Charts are unavailable: plotly.js did not load."));
    }
    this.charts.emptyText = "Waiting for the first epoch…";
    this.charts.reset();
    try {
      const detail = await api(`/v1/jobs/${encodeURIComponent(id)}`);
      if (this.id !== id) return;
      this.showJob(detail);
      this.showDetail(detail);
    } catch (exc) {
      if (this.id !== id) return;
      $("#job-title").textContent = exc.status === 404 ? "Job not found" : "Job unavailable";
      $("#job-subtitle").textContent = exc.message;
      this.showActions(null);
      return;
    }
    this.renderTimelineEmpty();
    this.stream = followStream(`/v1/jobs/${encodeURIComponent(id)}/events`, {
      onEvent: (name, data) => this.onEvent(name, data),
      onStatus: (status, detail) => this.onStatus(status, detail),
    });
  }

  close() {
    this.stream?.stop();
    this.stream = null;
  }

  onEvent(name, data) {
    if (name === "state") this.showJob(data);
    else if (name === "epoch") this.addEpoch(data);
    else if (name === "ai_event") this.addEvent(data);
    else if (name === "end") {
      this.charts.setEmptyText("No epochs were recorded.");
      this.showJob(data);
      this.refreshDetail();
    }
  }

  onStatus(status, detail) {
    const el = $("#stream-status");
    el.dataset.status = status;
    el.textContent = {
      live: "● live",
      reconnecting: `reconnecting… (try ${detail})`,
      ended: "",
      error: `updates stopped: ${detail}`,
    }[status];
    if (status === "error") showError(`Live updates for this job stopped: ${detail}`);
  }

  async refreshDetail() {
    try {
      const detail = await api(`/v1/jobs/${encodeURIComponent(this.id)}`);
      this.showJob(detail);
      this.showDetail(detail);
    } catch (exc) {
      showError(exc.message);
    }
  }

  showJob(job) {
    this.job = { ...(this.job || {}), ...job };
    const j = this.job;
    $("#job-title").textContent = j.name;
    const parts = [j.id, `dataset ${j.dataset}`, `created ${ago(j.created)}`, j.ai_enabled ? "AI guidance on" : "AI guidance off"];
    if (j.started && j.finished) parts.push(`${j.state === "completed" ? "trained in" : "ran for"} ${duration(j.finished - j.started)}`);
    $("#job-subtitle").textContent = parts.join(" · ");
    setStatePill($("#job-state"), j.state);
    if (j.state !== "running") $("#job-note").textContent = "";
    const share = j.epochs ? Math.min(1, j.epochs_done / j.epochs) : 0;
    $("#job-progress").style.width = `${(share * 100).toFixed(1)}%`;
    $("#job-progress-text").textContent = `${j.epochs_done} of ${j.epochs} epochs`;
    $("#job-best").textContent = pct(j.best_val_accuracy);
    const error = $("#job-error");
    error.textContent = j.error ? jobErrorText(j) : "";
    error.hidden = !j.error;
    this.showActions(j);
    this.renderTimelineEmpty();
  }

  showActions(j) {
    $("#cancel-job").hidden = !j || !ACTIVE.includes(j.state);
    $("#resume-job").hidden = !j || !RESUMABLE.includes(j.state);
    const link = $("#job-model-link");
    link.hidden = !j || !j.model_id;
    if (j?.model_id) link.href = `#/models/${j.model_id}`;
  }

  showDetail(detail) {
    const shown = { request: detail.request, summary: detail.summary };
    $("#job-request").textContent = JSON.stringify(shown, null, 2);
    this.profiled = Boolean(detail.request?.profile);
    this.showProfile(detail.profile);
  }

  /** The profiled first epoch's top ops (a job started with "profile": true), once that epoch has ended. */
  showProfile(profile) {
    const card = $("#job-profile-card");
    const root = clear($("#job-profile"));
    card.hidden = !this.profiled && !profile;
    this.profileShown = Boolean(profile);
    if (card.hidden) return;
    const meta = $("#job-profile-meta");
    if (!profile) {
      meta.textContent = "";
      root.append(empty("The first epoch runs under the profiler; its top ops appear here when it ends."));
      return;
    }
    if (profile.error) {
      meta.textContent = `epoch ${profile.epoch}`;
      root.append(empty(profile.error));
      return;
    }
    const share = profile.processes > 1 ? ` · rank 0's share, of ${profile.processes} processes` : "";
    meta.textContent = `epoch ${profile.epoch}${share} · ${duration((profile.wall_ms ?? 0) / 1000)} with the profiler on · ${profile.distinct_ops} distinct ops, top ${profile.ops.length} by self time`;
    root.append(
      h(
        "table",
        { class: "table table-static profile-table" },
        h("thead", {}, h("tr", {}, ["Op", "Calls", "Self time", "Total time", "Share of op time"].map((t, i) => h("th", { class: i ? "num-head" : "" }, t)))),
        h(
          "tbody",
          {},
          profile.ops.map((op) =>
            h(
              "tr",
              { dataset: { op: op.name, calls: String(op.calls), selfMs: String(op.self_cpu_ms), totalMs: String(op.cpu_total_ms) } },
              h("td", { class: "mono" }, op.name),
              h("td", { class: "num" }, op.calls.toLocaleString()),
              h("td", { class: "num" }, `${num(op.self_cpu_ms, 4)} ms`),
              h("td", { class: "num" }, `${num(op.cpu_total_ms, 4)} ms`),
              h(
                "td",
                { class: "num share" },
                h("span", { class: "share-bar", style: `width:${Math.min(100, op.self_cpu_percent).toFixed(1)}%` }),
                h("span", {}, `${op.self_cpu_percent.toFixed(1)}%`),
              ),
            ),
          ),
        ),
      ),
    );
  }

  addEpoch(m) {
    this.charts.add(m);
    $("#job-loss").textContent = num(m.train_loss, 4);
    $("#job-lr").textContent = num(m.learning_rate, 3);
    $("#job-speed").textContent = m.samples_per_second ? `${Math.round(m.samples_per_second).toLocaleString()} samples/s` : "—";
    if (this.profiled && !this.profileShown && !this.profileAsked) {
      this.profileAsked = true; // the profiled epoch has ended: its top ops are stored now
      this.refreshDetail();
    }
    if (this.job && m.epoch > this.job.epochs_done) {
      this.job.epochs_done = m.epoch;
      if (m.val_accuracy !== null && m.val_accuracy !== undefined) {
        this.job.best_val_accuracy = Math.max(this.job.best_val_accuracy ?? 0, m.val_accuracy);
      }
      this.showJob({});
    }
  }

  addEvent(event) {
    const list = $("#ai-timeline");
    $(".tl-empty", list)?.remove();
    this.eventCount += 1;
    if (event.kind === "insight") {
      // research repeats its insights at each update: show each once, noting when it came back
      const key = `${event.provider}|${event.reason}|${JSON.stringify(event.action)}`;
      const earlier = this.seenInsights.get(key);
      if (earlier) {
        earlier.epochs.push(event.epoch);
        const note = $(".tl-repeat", earlier.item);
        note.textContent = `again at epoch${earlier.epochs.length > 1 ? "s" : ""} ${earlier.epochs.join(", ")}`;
        note.hidden = false;
        return;
      }
      const item = timelineItem(event);
      this.seenInsights.set(key, { item, epochs: [] });
      list.append(item);
    } else {
      list.append(timelineItem(event));
    }
    this.applyFilter();
  }

  renderTimelineEmpty() {
    const list = $("#ai-timeline");
    if (this.eventCount || !this.job) return;
    const j = this.job;
    const message = j.ai_enabled
      ? ACTIVE.includes(j.state)
        ? "No AI events yet: the first analysis arrives after the epoch its schedule names."
        : "This run recorded no AI events."
      : "AI guidance is off for this job. Start a job with AI guidance to see what the AI services recommend, and why.";
    clear(list).append(h("li", { class: "tl-empty empty" }, message));
  }

  applyFilter() {
    const want = $("#timeline-filter").value;
    for (const item of $$("#ai-timeline .tl-item")) item.hidden = want !== "all" && item.dataset.group !== want;
  }

  async cancel() {
    const button = $("#cancel-job");
    button.disabled = true;
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(this.id)}/cancel`, { method: "POST" });
      this.showJob(job);
      if (job.state === "running") {
        $("#job-note").textContent = "stopping at the end of this epoch…";
        $("#cancel-job").hidden = true;
      }
    } catch (exc) {
      showError(`Cancel: ${exc.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async resume() {
    const button = $("#resume-job");
    button.disabled = true;
    try {
      await api(`/v1/jobs/${encodeURIComponent(this.id)}/resume`, { method: "POST" });
      await this.open(this.id); // follow it again from the start of its history
    } catch (exc) {
      showError(`Resume: ${exc.message}`);
    } finally {
      button.disabled = false;
    }
  }
}

let page = null;

export const jobView = {
  enter(id) {
    page = page || new JobPage();
    if (page.id !== id || !page.stream) page.open(id);
    else page.charts.resize();
  },
  leave() {
    page?.close();
    if (page) page.id = null;
  },
};
