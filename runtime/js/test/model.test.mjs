// The model's checks on load and at the edge of the API, as the Python runtime's: one clear error, never a crash.

import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import * as ort from "onnxruntime-node";

import { BadInput, generate, Model, score, StopMatcher } from "../src/index.mjs";
import { golden, MODELS, withMetadata } from "./helpers.mjs";

const tiny = fs.readFileSync(MODELS.tiny);

async function refused(source, pattern, options = {}) {
  await assert.rejects(Model.load(source, { ort, prefill: null, ...options }),
    (e) => e instanceof BadInput && pattern.test(e.message), String(pattern));
}

test("it reads the vocabulary and sizes from the file", async () => {
  const model = await Model.load(MODELS.tiny, { ort });
  assert.deepEqual(model.vocab, [..."abcdef"]);
  assert.deepEqual([model.numLayers, model.hiddenSize, model.vocabSize], [2, 16, 6]);
  assert.equal(model.decode(model.encode("fedcba")), "fedcba");
  assert.equal(model.startToken, 0, "no line break in the vocabulary: id 0");
  const fromUrl = await Model.load(new URL(`file://${MODELS.tiny}`), { ort });
  assert.deepEqual(fromUrl.vocab, model.vocab);
});

test("files that are not charlstm models, or another version of one, are refused", async () => {
  await refused(new Uint8Array([1, 2, 3]), /is not an ONNX model/);
  await refused(withMetadata(tiny, { "charlstm.format": null }), /without charlstm metadata/);
  await refused(withMetadata(tiny, { "charlstm.format": "charlstm-onnx/2" }), /has format 'charlstm-onnx\/2'/);
  await refused(`${MODELS.tiny}.missing`, /does not exist/);
  await refused(MODELS.tiny.replace("tiny.onnx", "tiny.prefill.onnx"), /is a charlstm prefill graph; give the step graph/);
});

test("a step graph without a checkpoint sha256 cannot be paired with an older prefill graph", async () => {
  const noSha = withMetadata(tiny, { "charlstm.checkpoint_sha256": null });
  const olderPrefill = withMetadata(fs.readFileSync(MODELS.tiny.replace(".onnx", ".prefill.onnx")),
    { "charlstm.step_sha256": null }); // exported before prefill graphs named their step graph
  await refused(noSha, /has no charlstm.checkpoint_sha256/, { prefill: olderPrefill });
});

test("token ids, states and options are checked before onnxruntime", async () => {
  const model = await Model.load(MODELS.tiny, { ort });
  const state = model.newState(1);
  for (const [tokens, pattern] of [[[6], /\[0, 6\).*got 6/], [[-1], /got -1/], [[1.7], /integer token ids/], [[], /at least one/]]) {
    await assert.rejects(model.step(tokens, state), (e) => e instanceof BadInput && pattern.test(e.message));
  }
  await assert.rejects(model.step([0], model.newState(2)), /state.h holds 64 numbers for batch 2/);
  await assert.rejects(model.step([0], { h: 1, c: 2 }), /must be a charlstm State/);
  assert.throws(() => model.decode([-1]), /got -1/);
  await assert.rejects(generate(model, "abc", { n: 5, topK: 0 }), /top-k must be at least 1/);
  await assert.rejects(generate(model, "abc", { n: 5, seed: -1 }), /seed must be >= 0/);
  await assert.rejects(generate(model, "abc", { n: 5, seed: 2n ** 64n }), /below 2\^64/);
  await assert.rejects(generate(model, "abz", { n: 5 }), /1 character not in the model's vocabulary: 'z'/);
  await assert.rejects(generate(model, "abc", { n: -1 }), /length must be an integer from 0 to 1,000,000,000/);
  await assert.rejects(score(model, "a"), /at least 2 known characters/);
  await assert.rejects(Model.load(MODELS.tiny, { ort, threads: 0 }), /threads must be an integer from 1 to 256/);
});

test("generation: same seed same text, a plain stop string is one stop, skipped characters", async () => {
  const model = await Model.load(MODELS.tiny, { ort });
  const a = await generate(model, "abc", { n: 200, seed: 4, temperature: 1.0 });
  assert.equal(a, await generate(model, "abc", { n: 200, seed: "4", temperature: 1.0 }));
  assert.notEqual(a, await generate(model, "abc", { n: 200, seed: 5, temperature: 1.0 }));
  const stop = a.slice(30, 32);
  assert.equal(await generate(model, "abc", { n: 200, seed: 4, temperature: 1.0, stop }), a.slice(0, a.indexOf(stop)));
  assert.equal(await generate(model, "abxc", { n: 50, seed: 1, unknown: "skip" }), await generate(model, "abc", { n: 50, seed: 1 }));
  assert.equal(await generate(model, "", { n: 50, seed: 1 }), await generate(model, "a", { n: 50, seed: 1 }), "start token");
});

test("the stop matcher holds back only possible stops", () => {
  const m = new StopMatcher(["\n\n", "END"]);
  assert.deepEqual([..."xE"].map((c) => m.push(c)), ["x", ""]);
  assert.equal(m.push("x"), "Ex");
  assert.deepEqual([..."EN"].map((c) => m.push(c)), ["", ""]);
  assert.equal(m.push("D"), "");
  assert.ok(m.done);
});

test("the score is the mean cross-entropy of the step outputs, with and without the prefill graph", async () => {
  const fast = await Model.load(MODELS.tiny, { ort });
  const slow = await Model.load(MODELS.tiny, { ort, prefill: null });
  assert.ok(fast.hasPrefill && !slow.hasPrefill);
  const text = "abcdefabdcefabcabc".repeat(5);
  const a = await score(fast, text);
  const b = await score(slow, text);
  assert.equal(a.chars, text.length - 1);
  assert.ok(Math.abs(a.natsPerChar - b.natsPerChar) < 1e-6);
});

test("a model file is refused with the Python runtime's line, for each edit of its metadata", async () => {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "charlstm-refusals-"));
  const here = process.cwd();
  process.chdir(folder);
  try {
    for (const c of golden("refusals.json")) {
      fs.writeFileSync("model.onnx", withMetadata(tiny, c.metadata));
      await assert.rejects(Model.load("model.onnx", { ort, prefill: null }),
        (e) => e instanceof BadInput && e.message === c.message, `${JSON.stringify(c.metadata)}: ${c.message}`);
    }
  } finally {
    process.chdir(here);
  }
});
