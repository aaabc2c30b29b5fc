// Datasets: upload a CSV (the target column is picked from its header) and list the uploads.

import { api, apiFetch, describeDetail } from "./api.js";
import { prefillJob } from "./jobs.js";
import { $, ago, clear, empty, formError, h, showError } from "./ui.js";

/** The column names of a CSV's first line (quotes handled, enough for a header). */
export function csvHeader(text) {
  const line = text.replace(/^\uFEFF/, "").split(/\r?\n/, 1)[0] || "";
  const out = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      out.push(cell.trim());
      cell = "";
    } else cell += c;
  }
  out.push(cell.trim());
  return out.filter((name) => name !== "");
}

async function onFile() {
  const file = $("#dataset-file").files[0];
  const select = clear($("#dataset-target"));
  formError($("#dataset-form-error"), "");
  if (!file) {
    $("#dataset-name").placeholder = "";
    select.append(h("option", { value: "" }, "choose a file first"));
    select.disabled = true;
    return;
  }
  $("#dataset-name").placeholder = file.name;
  const columns = csvHeader(await file.slice(0, 65536).text());
  if (!columns.length) {
    select.append(h("option", { value: "" }, "no header row found"));
    select.disabled = true;
    formError($("#dataset-form-error"), `${file.name} has no header row: the first line must name the columns.`);
    return;
  }
  for (const name of columns) select.append(h("option", { value: name }, name));
  select.value = columns[columns.length - 1];
  select.disabled = false;
}

async function upload(event) {
  event.preventDefault();
  const errorBox = $("#dataset-form-error");
  formError(errorBox, "");
  const file = $("#dataset-file").files[0];
  const target = $("#dataset-target").value;
  if (!file) return formError(errorBox, "Choose a CSV file to upload.");
  if (!target) return formError(errorBox, "Choose the column to predict.");
  const form = new FormData();
  form.append("file", file);
  form.append("target", target);
  const name = $("#dataset-name").value.trim();
  if (name) form.append("name", name);
  const button = $("#upload-dataset");
  button.disabled = true;
  button.textContent = "Uploading…";
  try {
    const response = await apiFetch("/v1/datasets", { method: "POST", body: form });
    if (!response.ok) {
      let detail = null;
      try {
        detail = (await response.json()).detail;
      } catch {
        /* not JSON */
      }
      formError(errorBox, describeDetail(detail, `Upload failed (${response.status}).`));
      return;
    }
    $("#dataset-form").reset();
    await onFile();
    await load();
  } catch (exc) {
    formError(errorBox, exc.message);
  } finally {
    button.disabled = false;
    button.textContent = "Upload";
  }
}

function render(datasets) {
  const root = clear($("#datasets-list"));
  if (!datasets.length) {
    root.append(
      empty(
        "No uploaded datasets yet.",
        h("p", { class: "muted" }, "Upload a CSV with a header row and a column of class labels; each other column must be numeric."),
      ),
    );
    return;
  }
  for (const d of datasets) {
    const s = d.summary;
    root.append(
      h(
        "article",
        { class: "dataset", dataset: { datasetId: d.id } },
        h(
          "header",
          {},
          h("h3", {}, d.name),
          h("button", { type: "button", class: "btn btn-secondary btn-small", onclick: () => prefillJob({ preset: "custom", dataset: d.id }) }, "Train a model on it"),
        ),
        h("p", { class: "small muted" }, `${d.id} · predicts “${d.target}” · uploaded ${ago(d.created)}`),
        h("p", {}, `${s.rows.toLocaleString()} rows · ${s.features} features · ${s.num_classes} classes`),
        h(
          "div",
          { class: "chips" },
          Object.entries(s.class_counts || {})
            .slice(0, 20)
            .map(([cls, n]) => h("span", { class: "chip" }, `${cls}: ${n}`)),
        ),
      ),
    );
  }
}

async function load() {
  try {
    render(await api("/v1/datasets"));
  } catch (exc) {
    if (!$("#datasets-list .dataset")) clear($("#datasets-list")).append(empty(`Datasets are unavailable: ${exc.message}`));
    showError(`Datasets: ${exc.message}`);
  }
}

export function initDatasets() {
  $("#dataset-file").addEventListener("change", onFile);
  $("#dataset-form").addEventListener("submit", upload);
}

export const datasetsView = { enter: load, refresh: load, interval: 30000 };
