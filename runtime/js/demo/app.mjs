// The demo page: the shipped model in onnxruntime-web, streaming Molière with charlstm's JavaScript runtime.
// Query parameters fill the form (prompt, temperature, seed, n, minP, ban, regex), choose the model
// (model=URL) and the other sampling options (topK, topP, penalty, stop and bias=CHAR=VALUE:
// repeatable); ?autostart=1 starts at once.

import * as ort from "../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { Model, stream } from "../src/index.mjs";

ort.env.wasm.wasmPaths = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const page = { threads: ort.env.wasm.numThreads, loadMs: null, text: "", firstCharMs: null, firstCharSincePageMs: null, charsPerSecond: null, seed: null };
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
  ["minP", "minP"], ["ban", "ban"], ["regex", "regex"]]) {
  if (params.has(param)) $(id).value = params.get(param);
}
const number = (name) => (params.has(name) ? Number(params.get(name)) : undefined);
// bias=CHAR=VALUE, repeatable, as charlstm-sample's --bias
const logitBias = Object.fromEntries(params.getAll("bias").map((b) => [b.slice(0, b.lastIndexOf("=")),
  Number(b.slice(b.lastIndexOf("=") + 1))]));
const urlOptions = { topK: number("topK"), topP: number("topP"), repetitionPenalty: number("penalty"),
  stop: params.getAll("stop"), logitBias };

const modelUrl = new URL(params.get("model") ?? "../../../models/moliere.onnx", location.href);
const model = await Model.load(modelUrl.href, { ort, prefill: null });
page.loadMs = performance.now();
$("stats").textContent = `model ready in ${(page.loadMs / 1000).toFixed(2)} s (${model.numLayers} × ${model.hiddenSize}`
  + ` LSTM, ${model.vocabSize} characters, ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""})`;
$("start").disabled = false;
document.body.dataset.state = "ready";

async function run(event) {
  event?.preventDefault();
  const prompt = $("prompt").value;
  const seed = $("seed").value.trim() || String(Math.floor(Math.random() * 2 ** 31));
  $("seed").value = seed;
  Object.assign(page, { text: "", seed, firstCharMs: null, firstCharSincePageMs: null, charsPerSecond: null });
  const output = $("output");
  output.replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: prompt }));
  const text = output.appendChild(document.createTextNode(""));
  $("start").disabled = true;
  $("stop").disabled = false;
  stopping = false;
  document.body.dataset.state = "generating";
  const started = performance.now();
  let yielded = started;
  try {
    const pieces = await stream(model, prompt, { n: Number($("length").value), seed,
      temperature: Number($("temperature").value), minP: $("minP").value === "" ? null : Number($("minP").value),
      ban: $("ban").value, regex: $("regex").value === "" ? null : $("regex").value, ...urlOptions });
    for await (const piece of pieces) {
      if (page.firstCharMs === null) {
        page.firstCharMs = performance.now() - started;
        page.firstCharSincePageMs = performance.now();
      }
      page.text += piece;
      text.data = page.text;
      const seconds = (performance.now() - started) / 1000;
      page.charsPerSecond = [...page.text].length / seconds;
      $("stats").textContent = `${page.charsPerSecond.toFixed(0)} characters/s · first character after`
        + ` ${page.firstCharMs.toFixed(0)} ms (${(page.firstCharSincePageMs / 1000).toFixed(2)} s after the page`
        + ` opened) · seed ${seed}`;
      if (performance.now() - yielded > 16) {
        await nextTask();
        yielded = performance.now();
      }
      if (stopping) break;
    }
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
