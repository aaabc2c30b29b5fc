// In-browser inference: a model's ONNX export (GET /v1/models/{id}/onnx) run by onnxruntime-web on its
// WebAssembly backend, single-threaded, from the copy the platform serves (make vendor puts it in
// /static/vendor/onnxruntime-web/; no CDN). The inputs get exactly the preprocessing the server's
// /predict applies ((x - mean) / std in float32, the model's `preprocessing`), and a softmax in double
// precision turns the logits into probabilities, as on the server.

import { apiBytes } from "./api.js";

export const ORT_PATH = "/static/vendor/onnxruntime-web/";
const ORT_MODULE = `${ORT_PATH}ort.wasm.min.mjs`;

let ortPromise = null;
const sessions = new Map(); // model id -> Promise<{session, loadMs}>

/** onnxruntime-web's module, imported once and set up for the WebAssembly backend on one thread. */
export function loadOrt() {
  if (!ortPromise) {
    ortPromise = import(ORT_MODULE).then(
      (ort) => {
        ort.env.wasm.numThreads = 1;
        ort.env.wasm.proxy = false;
        ort.env.wasm.wasmPaths = ORT_PATH;
        ort.env.logLevel = "error";
        return ort;
      },
      (exc) => {
        ortPromise = null; // a later try may find it installed
        throw new Error(`onnxruntime-web is not available on this server (run \`make vendor\`): ${exc.message}`);
      },
    );
  }
  return ortPromise;
}

/** The model's inference session: its ONNX file fetched (with the API key) and compiled, once per page. */
export function sessionFor(modelId) {
  let entry = sessions.get(modelId);
  if (!entry) {
    entry = (async () => {
      const started = performance.now();
      const [ort, bytes] = await Promise.all([loadOrt(), apiBytes(`/v1/models/${encodeURIComponent(modelId)}/onnx`)]);
      const session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
      return { ort, session, loadMs: performance.now() - started };
    })();
    entry.catch(() => sessions.delete(modelId)); // failures are not cached
    sessions.set(modelId, entry);
  }
  return entry;
}

/** Rows of numbers as the server's predictor prepares them: float32 (x - mean) / std, mean and std a number
 *  or one per feature. */
export function normalise(rows, preprocessing) {
  const width = rows[0].length;
  const mean = preprocessing?.mean ?? 0;
  const std = preprocessing?.std ?? 1;
  const out = new Float32Array(rows.length * width);
  for (let i = 0; i < rows.length; i++) {
    for (let j = 0; j < width; j++) {
      const m = Math.fround(Array.isArray(mean) ? mean[j] : mean);
      const s = Math.fround(Array.isArray(std) ? std[j] : std);
      // float32 subtraction, then float32 division, as NumPy does it on float32 arrays
      out[i * width + j] = Math.fround(Math.fround(rows[i][j]) - m) / s;
    }
  }
  return out;
}

/** Softmax of each row of `logits` (a flat array, `classes` wide), in double precision. */
export function softmax(logits, classes) {
  const rows = [];
  for (let start = 0; start < logits.length; start += classes) {
    const z = Array.from(logits.slice(start, start + classes), Number);
    const top = Math.max(...z);
    const e = z.map((v) => Math.exp(v - top));
    const total = e.reduce((a, b) => a + b, 0);
    rows.push(e.map((v) => v / total));
  }
  return rows;
}

/** Class probabilities for `rows` (numbers, as sent to /predict), computed in this browser.
 *  Answers {probabilities: [[...]], latencyMs (the run alone), loadMs (fetching and compiling, first time)}. */
export async function predictInBrowser(model, rows) {
  const firstUse = !sessions.has(model.id);
  const { ort, session, loadMs } = await sessionFor(model.id);
  const data = normalise(rows, model.preprocessing);
  const input = new ort.Tensor("float32", data, [rows.length, rows[0].length]);
  const started = performance.now();
  const outputs = await session.run({ [session.inputNames[0]]: input });
  const latencyMs = performance.now() - started;
  const logits = outputs[session.outputNames[0]];
  const classes = logits.dims[logits.dims.length - 1];
  return { probabilities: softmax(logits.data, classes), latencyMs, loadMs: firstUse ? loadMs : null };
}
