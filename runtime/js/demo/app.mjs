// The demo page: the shipped model in onnxruntime-web, streaming Molière with charlstm's JavaScript runtime.
// Query parameters fill the form (prompt, temperature, seed, n, minP, ban, regex, beams,
// probabilities=1), choose the model (model=URL) and the other sampling options (topK, topP,
// penalty, stop and bias=CHAR=VALUE: repeatable); ?autostart=1 starts at once.

import * as ort from "../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { beamSearch, Model, stream, streamLogprobs } from "../src/index.mjs";

ort.env.wasm.wasmPaths = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const page = { threads: ort.env.wasm.numThreads, loadMs: null, text: "", firstCharMs: null, firstCharSincePageMs: null,
  charsPerSecond: null, seed: null, beams: null, records: null, backend: null };
window.charlstm = page;
let stopping = false;

// onnxruntime-web's run() resolves without leaving the task, so a generation loop would hold the
// page until it ends: no repaint, no Stop. Give the browser a task (a message, not a clamped
// timeout) whenever a frame's worth of time has passed.
const channel = new MessageChannel();
const nextTask = () => new Promise((resolve) => {
  channel.port1.onmessage = resolve;
  channel.port2.postMessage(null);
});

for (const [param, id] of [["prompt", "prompt"], ["temperature", "temperature"], ["seed", "seed"], ["n", "length"],
  ["minP", "minP"], ["ban", "ban"], ["regex", "regex"], ["beams", "beams"]]) {
  if (params.has(param)) $(id).value = params.get(param);
}
$("probabilities").checked = params.get("probabilities") === "1";
const number = (name) => (params.has(name) ? Number(params.get(name)) : undefined);
// bias=CHAR=VALUE, repeatable, as charlstm-sample's --bias
const logitBias = Object.fromEntries(params.getAll("bias").map((b) => [b.slice(0, b.lastIndexOf("=")),
  Number(b.slice(b.lastIndexOf("=") + 1))]));
const urlOptions = { topK: number("topK"), topP: number("topP"), repetitionPenalty: number("penalty"),
  stop: params.getAll("stop"), logitBias };

/** The model's bytes, the progress bar following the download. */
async function download(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    chunks.push(r.value);
    received += r.value.length;
    if (total) $("loading").value = received / total;
    $("stats").textContent = `downloading the model: ${(received / 1e6).toFixed(1)}`
      + `${total ? ` of ${(total / 1e6).toFixed(1)}` : ""} MB`;
  }
  const bytes = new Uint8Array(received);
  chunks.reduce((at, chunk) => (bytes.set(chunk, at), at + chunk.length), 0);
  return bytes;
}

const modelUrl = new URL(params.get("model") ?? "../../../models/moliere.onnx", location.href);
let model;
try {
  model = await Model.load(await download(modelUrl.href), { ort, prefill: null });
} catch (e) {
  $("stats").textContent = `the model could not be loaded: ${e.message}`;
  document.body.dataset.state = "failed";
  throw e;
}
page.loadMs = performance.now();
const threads = ort.env.wasm.numThreads;
page.backend = `onnxruntime-web ${ort.env.versions.web ?? ort.env.versions.common}, WebAssembly`
  + ` (${threads} thread${threads > 1 ? "s" : ""}${threads > 1 ? "" : ": this page is not cross-origin isolated"})`;
const ready = `${model.numLayers} × ${model.hiddenSize} LSTM, ${model.vocabSize} characters · ${page.backend}`;
$("loading").hidden = true;
$("stats").textContent = `model ready in ${(page.loadMs / 1000).toFixed(2)} s · ${ready}`;
$("start").disabled = false;
document.body.dataset.state = "ready";

function options() {
  const value = (id) => ($(id).value.trim() === "" ? null : $(id).value);
  return { n: Number($("length").value), temperature: Number($("temperature").value),
    minP: value("minP") === null ? null : Number(value("minP")), ban: $("ban").value, regex: value("regex"),
    ...urlOptions };
}

/** One character of a text read with its probabilities: tinted by how likely it was; a tap shows
 * the alternatives. */
function characterSpan(record) {
  const p = Math.exp(record.logprob);
  const span = Object.assign(document.createElement("span"), { className: "p", textContent: record.char });
  span.style.background = `rgba(214, 96, 77, ${(0.6 * (1 - p)).toFixed(3)})`;
  span.title = `${(100 * p).toFixed(1)}%`;
  span.addEventListener("click", () => {
    $("detail").textContent = `${JSON.stringify(record.char)} ${(100 * p).toFixed(1)}% · alternatives: `
      + record.top.map((t) => `${JSON.stringify(t.char)} ${(100 * Math.exp(t.logprob)).toFixed(1)}%`).join(", ");
  });
  return span;
}

async function sampled(prompt, seed, started) {
  const output = $("output");
  const withProbabilities = $("probabilities").checked;
  const pieces = withProbabilities ? await streamLogprobs(model, prompt, { ...options(), seed, top: 5 })
    : await stream(model, prompt, { ...options(), seed });
  const text = output.appendChild(document.createTextNode(""));
  let yielded = started;
  for await (const piece of pieces) {
    if (page.firstCharMs === null) {
      page.firstCharMs = performance.now() - started;
      page.firstCharSincePageMs = performance.now();
    }
    if (withProbabilities) {
      page.records.push(piece);
      page.text += piece.char;
      output.appendChild(characterSpan(piece));
    } else {
      page.text += piece;
      text.data = page.text;
    }
    page.charsPerSecond = [...page.text].length / ((performance.now() - started) / 1000);
    $("stats").textContent = `${page.charsPerSecond.toFixed(0)} characters/s · first character after`
      + ` ${page.firstCharMs.toFixed(0)} ms (${(page.firstCharSincePageMs / 1000).toFixed(2)} s after the page`
      + ` opened) · seed ${seed} · ${page.backend}`;
    if (performance.now() - yielded > 16) {
      await nextTask();
      yielded = performance.now();
    }
    if (stopping) break;
  }
}

// Beam search draws nothing: the seed and the temperature do not enter it (docs/formats.md, section 10).
async function searched(prompt, beams, started) {
  const { temperature, minP, ...rest } = options();
  page.beams = await beamSearch(model, prompt, { ...rest, beams, topK: undefined, topP: undefined });
  page.text = page.beams[0]?.text ?? "";
  $("output").append(page.text);
  $("beamList").replaceChildren(...page.beams.map((b) => {
    const item = document.createElement("li");
    item.append(Object.assign(document.createElement("span"), { className: "logprob",
      textContent: `log-probability ${b.logprob.toFixed(4)}` }), prompt + b.text);
    return item;
  }));
  $("stats").textContent = `${beams} beams in ${(performance.now() - started).toFixed(0)} ms · ${page.backend}`;
}

async function run(event) {
  event?.preventDefault();
  const prompt = $("prompt").value;
  const beams = $("beams").value.trim() === "" ? null : Number($("beams").value);
  const seed = beams ? null : $("seed").value.trim() || String(Math.floor(Math.random() * 2 ** 31));
  if (seed !== null) $("seed").value = seed;
  Object.assign(page, { text: "", seed, firstCharMs: null, firstCharSincePageMs: null, charsPerSecond: null,
    beams: null, records: $("probabilities").checked && !beams ? [] : null });
  $("output").replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: prompt }));
  $("beamList").replaceChildren();
  $("detail").textContent = "";
  $("start").disabled = true;
  $("stop").disabled = Boolean(beams);
  stopping = false;
  document.body.dataset.state = "generating";
  try {
    await (beams ? searched(prompt, beams, performance.now()) : sampled(prompt, seed, performance.now()));
    document.body.dataset.state = stopping ? "stopped" : "done";
  } catch (e) {
    $("stats").textContent = e.message;
    document.body.dataset.state = "failed";
  } finally {
    $("start").disabled = false;
    $("stop").disabled = true;
  }
}

$("form").addEventListener("submit", run);
$("stop").addEventListener("click", () => { stopping = true; });
if (params.has("autostart")) run();
