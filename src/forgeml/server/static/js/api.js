// Every /v1 call goes through here: the API key (sessionStorage) rides along as a Bearer token,
// a 401 opens the key dialog once (concurrent calls wait for the same answer) and the call is retried,
// and error answers become ApiError with the server's own message.

import { $, formError } from "./ui.js";

const STORAGE_KEY = "forgeml.apiKey";

export class ApiError extends Error {
  constructor(status, message, detail = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

export function storedKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

function setKey(key) {
  if (key) sessionStorage.setItem(STORAGE_KEY, key);
  else sessionStorage.removeItem(STORAGE_KEY);
  $("#forget-key").hidden = !key;
}

export function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** FastAPI's `detail`: a string, or a list of {loc, msg} from validation. */
export function describeDetail(detail, fallback) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const loc = (e.loc || []).filter((p) => p !== "body").join(" → ");
        return loc ? `${loc}: ${e.msg}` : e.msg;
      })
      .join("\n");
  }
  return fallback;
}

async function errorFrom(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    /* not JSON */
  }
  const fallback = `${response.status} ${response.statusText || "error"}`;
  return new ApiError(response.status, describeDetail(detail, fallback), detail);
}

/** fetch() with the key and the 401 dialog; answers the Response (any status but 401). */
export async function apiFetch(path, options = {}) {
  let refused = false;
  for (;;) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, "Cannot reach the ForgeML server. Is it running?");
    }
    if (response.status !== 401) return response;
    await askForKey(refused || storedKey() ? "The saved key was refused; enter the current one." : "");
    refused = true;
  }
}

/** A JSON call: `api("/v1/jobs", {method: "POST", json: body})` -> the parsed answer, or throws ApiError. */
export async function api(path, { json, ...options } = {}) {
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  }
  const response = await apiFetch(path, options);
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

/** A binary download (a model's weights or ONNX file) -> an ArrayBuffer, or throws ApiError. */
export async function apiBytes(path, options = {}) {
  const response = await apiFetch(path, options);
  if (!response.ok) throw await errorFrom(response);
  return response.arrayBuffer();
}

// ------------------------------------------------------------------ the key dialog
let pending = null; // {promise, resolve, reject} while the dialog is open

function askForKey(message) {
  if (pending) return pending.promise;
  const dialog = $("#api-key-modal");
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  pending = { promise, resolve, reject };
  setKey(null);
  formError($("#api-key-error"), message);
  $("#api-key-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("#api-key-input").focus();
  return promise;
}

async function saveKey(event) {
  event.preventDefault();
  const input = $("#api-key-input");
  const errorBox = $("#api-key-error");
  const key = input.value.trim();
  if (!key) {
    formError(errorBox, "Enter the API key first.");
    return;
  }
  const button = $("#api-key-save");
  button.disabled = true;
  try {
    const check = await fetch("/v1/jobs?limit=1", { headers: { Authorization: `Bearer ${key}` } });
    if (check.status === 401) {
      formError(errorBox, "The server refused this key. Check FORGEML_API_KEY and try again.");
      input.select();
      return;
    }
  } catch {
    formError(errorBox, "Cannot reach the server to check the key.");
    return;
  } finally {
    button.disabled = false;
  }
  setKey(key);
  formError(errorBox, "");
  $("#api-key-modal").close();
  const done = pending;
  pending = null;
  done?.resolve();
}

function dismiss() {
  const dialog = $("#api-key-modal");
  if (dialog.open) dialog.close();
  const done = pending;
  pending = null;
  done?.reject(new ApiError(401, "This server needs an API key. Reload the page to enter it."));
}

export function initApiKey() {
  $("#api-key-form").addEventListener("submit", saveKey);
  $("#api-key-cancel").addEventListener("click", dismiss);
  $("#api-key-modal").addEventListener("cancel", (event) => {
    event.preventDefault();
    dismiss();
  });
  $("#forget-key").hidden = !storedKey();
  $("#forget-key").addEventListener("click", () => {
    setKey(null);
    window.location.reload();
  });
}
