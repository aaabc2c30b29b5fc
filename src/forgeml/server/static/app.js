// ForgeML dashboard: hash routing between panels, each panel's refresh loop, and the server's health.
// No build step: plain ES modules under /static/js/.

import { initApiKey } from "./js/api.js";
import { datasetsView, initDatasets } from "./js/datasets.js";
import { initJobForm, jobView, jobsView } from "./js/jobs.js";
import { initModels, modelsView } from "./js/models.js";
import { overviewView } from "./js/overview.js";
import { $, $$, initBanner } from "./js/ui.js";

const VIEWS = { overview: overviewView, jobs: jobsView, job: jobView, models: modelsView, datasets: datasetsView };

let current = null; // {name, id, view}
let timer = null;

/** "#/jobs/job_123" -> {name: "job", id: "job_123"} */
function parseHash() {
  const [section = "", id = ""] = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (section === "jobs" && id) return { name: "job", id };
  if (section in VIEWS && section !== "job") return { name: section, id: id || null };
  return { name: "overview", id: null };
}

function schedule() {
  clearTimeout(timer);
  const view = current?.view;
  if (!view?.refresh || !view.interval) return;
  const delay = typeof view.interval === "function" ? view.interval() : view.interval;
  timer = setTimeout(async () => {
    if (document.visibilityState === "visible") {
      try {
        await view.refresh();
      } catch {
        /* each view reports its own errors */
      }
    }
    if (current?.view === view) schedule();
  }, delay);
}

async function route() {
  const { name, id } = parseHash();
  if (current && current.name !== name) current.view.leave?.();
  for (const section of $$("main > .view")) section.hidden = section.dataset.view !== name;
  const nav = name === "job" ? "jobs" : name;
  for (const link of $$(".tabs a")) link.classList.toggle("is-active", link.dataset.nav === nav);
  current = { name, id, view: VIEWS[name] };
  clearTimeout(timer);
  try {
    await current.view.enter?.(id);
  } finally {
    if (current?.name === name) schedule();
  }
}

async function checkServer() {
  const el = $("#server-status");
  let label = "offline";
  let ok = false;
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    ok = response.ok;
    label = ok ? "ready" : "not ready";
  } catch {
    /* unreachable */
  }
  el.dataset.ok = String(ok);
  $(".label", el).textContent = label;
}

function start() {
  initBanner();
  initApiKey();
  initJobForm();
  initModels();
  initDatasets();
  window.addEventListener("hashchange", route);
  route();
  checkServer();
  setInterval(checkServer, 15000);
}

start();
