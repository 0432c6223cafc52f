// The Node side of bench/js_runtime.py: each line on stdin names a model file; it generates
// --chars characters at batch 1 from it (seed 0) and prints the seconds. Models stay loaded.

import readline from "node:readline";

import * as ort from "onnxruntime-node";

import { generate, Model } from "../src/index.mjs";

const chars = Number(process.argv[2] ?? 2000);
const models = new Map();
for await (const line of readline.createInterface({ input: process.stdin })) {
  const path = line.trim();
  if (!models.has(path)) models.set(path, await Model.load(path, { ort, prefill: null }));
  const started = performance.now();
  await generate(models.get(path), "\n", { n: chars, seed: 0 });
  process.stdout.write(`${(performance.now() - started) / 1000}\n`);
}
