// What the JavaScript tests share: where things are, the golden files, both onnxruntime backends,
// and ONNX files with their metadata changed.

import fs from "node:fs";
import { fileURLToPath } from "node:url";

import { fields } from "../src/protobuf.mjs";

export { serveRepository } from "../demo/serve.mjs";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const GOLDEN = `${ROOT}tests/golden/`;
export const MODELS = { tiny: `${GOLDEN}tiny.onnx`, moliere: `${ROOT}models/moliere.onnx` };

export function golden(name) {
  return JSON.parse(fs.readFileSync(`${GOLDEN}${name}`, "utf8"));
}

/** onnxruntime-node, and onnxruntime-web on its wasm backend (what a browser runs), in Node. */
export async function backends() {
  const web = await import("onnxruntime-web");
  web.env.wasm.numThreads = 1;
  return { node: await import("onnxruntime-node"), web };
}

/** A golden case's sampling options (Python's names) as the JavaScript runtime names them. */
export function samplingOf(o) {
  return { temperature: o.temperature, topK: o.top_k, topP: o.top_p, repetitionPenalty: o.repetition_penalty,
    greedy: o.greedy, minP: o.min_p, logitBias: o.logit_bias, ban: o.ban, regex: o.regex };
}

export function caseOptions(c) {
  return { n: c.length, numSamples: c.samples, seed: c.seed, stop: c.stop, ...samplingOf(c.options) };
}

function varintBytes(n) {
  const out = [];
  do {
    out.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return out;
}

function lengthDelimited(field, payload) {
  return [...varintBytes(field * 8 + 2), ...varintBytes(payload.length), ...payload];
}

/** An ONNX file's bytes with its metadata_props replaced by `props` (key → value; null: removed). */
export function withMetadata(bytes, changes) {
  const kept = [];
  const props = {};
  for (const f of fields(bytes)) {
    if (f.field === 14) {
      const entry = {};
      for (const e of fields(bytes, f.start, f.end)) entry[e.field] = new TextDecoder().decode(bytes.subarray(e.start, e.end));
      props[entry[1]] = entry[2];
    } else kept.push(bytes.subarray(f.begin, f.stop));
  }
  Object.assign(props, changes);
  const encoder = new TextEncoder();
  const extra = Object.entries(props).filter(([, v]) => v !== null).map(([k, v]) => Uint8Array.from(lengthDelimited(14,
    [...lengthDelimited(1, [...encoder.encode(k)]), ...lengthDelimited(2, [...encoder.encode(v)])])));
  const parts = [...kept, ...extra];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Headless Chromium (Debian's package; puppeteer-core drives it), as root needs it: no sandbox. */
export async function chromium() {
  const puppeteer = (await import("puppeteer-core")).default;
  const executablePath = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(fs.existsSync);
  if (!executablePath) throw new Error("no Chromium: apt-get install -y chromium (or set CHROMIUM=/path/to/it)");
  return puppeteer.launch({
    executablePath, headless: true, userDataDir: fs.mkdtempSync("/tmp/charlstm-chromium-"),
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

/** Open the demo page with these query parameters and wait until its state is one of `states`. */
export async function openDemo(browser, base, query, states = ["done"], timeout = 180_000, viewport = null) {
  const page = await browser.newPage();
  if (viewport) await page.setViewport(viewport);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("response", (r) => { if (r.status() >= 400) errors.push(`${r.url()}: HTTP ${r.status()}`); });
  await page.goto(`${base}runtime/js/demo/?${query instanceof URLSearchParams ? query : new URLSearchParams(query)}`);
  await page.waitForFunction((s) => s.includes(document.body.dataset.state) || document.body.dataset.state === "failed",
    { timeout, polling: 100 }, states);
  if (errors.length) throw new Error(`the page failed: ${errors.join("; ")}`);
  return page;
}
