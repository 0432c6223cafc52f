// The golden files the Python suite reads too: the generator, the sampler, torch's outputs, the texts.

import assert from "node:assert/strict";
import { test } from "node:test";

import { BadInput, beamSearch, generateBatch, Model, Picker, score, SplitMix64, StopMatcher, streamLogprobs }
  from "../src/index.mjs";
import { allowed, compileRegex } from "../src/regex.mjs";
import { backends, caseOptions, golden, MODELS, samplingOf } from "./helpers.mjs";

const ort = await backends();
const ATOL = 1e-4; // export/agreement.py: |a - b| <= ATOL + RTOL * |b|
const RTOL = 1e-5;

test("SplitMix64 gives the reference outputs and uniforms", () => {
  for (const c of golden("rng.json")) {
    const a = new SplitMix64(BigInt(c.seed));
    assert.deepEqual(c.outputs.map(() => String(a.next())), c.outputs);
    const b = new SplitMix64(BigInt(c.seed));
    assert.deepEqual(c.uniforms.map(() => b.uniform()), c.uniforms);
  }
});

test("the sampler picks what the Python sampler picks", () => {
  for (const c of golden("sampler.json")) {
    const picker = new Picker(samplingOf(c.options), c.seed, c.vocab ?? null);
    const logits = Float32Array.from(c.logits);
    assert.deepEqual(c.picks.map(() => picker.choose(logits, c.recent)), c.picks, JSON.stringify(c.options));
  }
});

test("the regex DFAs and refusals are the Python runtime's", () => {
  const { vocab, cases, refused } = golden("regex.json");
  for (const c of cases) {
    const dfa = compileRegex(c.pattern, vocab);
    assert.equal(dfa.next.length, c.states, c.pattern);
    for (const row of c.strings) {
      let state = 0;
      for (const ch of row.text) state = state >= 0 ? dfa.next[state][vocab.indexOf(ch)] : -1;
      assert.equal(state >= 0 && dfa.accepting[state], row.match, `${c.pattern} ${JSON.stringify(row.text)}`);
      assert.deepEqual(state < 0 ? [] : allowed(dfa, state, 1e9), row.next, `${c.pattern} ${JSON.stringify(row.text)}`);
    }
  }
  for (const c of refused) {
    assert.throws(() => compileRegex(c.pattern, vocab), (e) => e instanceof BadInput && e.message === c.message, c.pattern);
  }
});

test("the stop matcher lets out what the Python one lets out", () => {
  for (const c of golden("stops.json")) {
    const m = new StopMatcher(c.stops);
    const pieces = [...c.text].map((ch) => (m.done ? "" : m.push(ch)));
    assert.deepEqual([...pieces, m.flush()], c.pieces, JSON.stringify(c));
    assert.equal(m.done, c.done);
  }
});

test("scores are the Python runtime's: to 1e-9 with onnxruntime-node, 1e-4 with onnxruntime-web", async () => {
  for (const [name, backend] of Object.entries(ort)) {
    const models = { tiny: await Model.load(MODELS.tiny, { ort: backend }), moliere: await Model.load(MODELS.moliere, { ort: backend }) };
    for (const c of golden("scores.json")) {
      const s = await score(models[c.model], c.text);
      assert.equal(s.chars, c.chars);
      assert.ok(Math.abs(s.natsPerChar - c.nats_per_char) <= (name === "node" ? 1e-9 : 1e-4), `${name} ${c.text}: ${s.natsPerChar}`);
    }
  }
});

for (const [name, backend] of Object.entries(ort)) {
  test(`onnxruntime-${name} steps agree with torch's recorded outputs`, async () => {
    const rec = golden("steps.json");
    const model = await Model.load(MODELS.tiny, { ort: backend, prefill: null });
    const batch = rec.tokens[0].length;
    let state = model.newState(batch);
    state.h.set(rec.h0.flat(2));
    state.c.set(rec.c0.flat(2));
    let worst = 0;
    for (const [step, tokens] of rec.tokens.entries()) {
      const out = await model.step(tokens, state);
      state = out.state;
      for (const [ours, theirs] of [[out.logits, rec.logits[step].flat()], [state.h, rec.h[step].flat(2)],
        [state.c, rec.c[step].flat(2)]]) {
        theirs.forEach((b, i) => {
          const excess = Math.abs(ours[i] - b) - (ATOL + RTOL * Math.abs(b));
          worst = Math.max(worst, excess);
        });
      }
    }
    assert.ok(worst <= 0, `exceeds the parity tolerance by ${worst}`);
  });

  test(`onnxruntime-${name} prints the Python runtime's texts, same seeds`, async () => {
    const models = { tiny: await Model.load(MODELS.tiny, { ort: backend }), moliere: await Model.load(MODELS.moliere, { ort: backend }) };
    assert.ok(models.tiny.hasPrefill, "tiny.prefill.onnx lies beside tiny.onnx: prompts go through it");
    for (const c of golden("texts.json")) {
      const texts = await generateBatch(models[c.model], c.prompt, caseOptions(c));
      assert.deepEqual(texts, c.texts, `${c.model} ${JSON.stringify(c.prompt)} seed ${c.seed}`);
    }
  });
}

// Python's names of beam_search's and stream_logprobs's options, as the JavaScript runtime names them.
const beamOptions = (c) => ({ n: c.length, beams: c.beams, lengthPenalty: c.options.length_penalty, stop: c.options.stop,
  ...samplingOf(c.options) });

for (const [name, backend] of Object.entries(ort)) {
  const tolerance = name === "node" ? 1e-9 : 1e-4;
  test(`onnxruntime-${name}: the Python runtime's beams and logprob records (values to ${tolerance})`, async () => {
    const models = { tiny: await Model.load(MODELS.tiny, { ort: backend }), moliere: await Model.load(MODELS.moliere, { ort: backend }) };
    for (const c of golden("beams.json")) {
      const found = await beamSearch(models[c.model], c.prompt, beamOptions(c));
      assert.deepEqual(found.map((b) => b.text), c.found.map((b) => b.text), `${c.model} ${JSON.stringify(c.prompt)}`);
      found.forEach((b, i) => assert.ok(Math.abs(b.logprob - c.found[i].logprob) <= tolerance
        && Math.abs(b.score - c.found[i].score) <= tolerance, `${b.logprob} ${c.found[i].logprob}`));
    }
    for (const c of golden("logprobs.json")) {
      const records = [];
      for await (const r of await streamLogprobs(models[c.model], c.prompt, { n: c.length, top: c.top,
        seed: c.seed ?? undefined, ...samplingOf(c.options) })) records.push(r);
      const shape = (rs) => rs.map((r) => [r.char, r.id, r.top.map((a) => [a.char, a.id])]);
      assert.deepEqual(shape(records), shape(c.records), `${c.model} ${JSON.stringify(c.prompt)}`);
      records.forEach((r, i) => {
        const theirs = c.records[i];
        assert.ok(Math.abs(r.logprob - theirs.logprob) <= tolerance, `${r.logprob} ${theirs.logprob}`);
        r.top.forEach((a, j) => assert.ok(Math.abs(a.logprob - theirs.top[j].logprob) <= tolerance));
      });
    }
  });
}
