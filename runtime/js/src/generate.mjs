// Text from a model: priming, streaming generation, stop strings, batches, scoring — as
// runtime/generate.py does it, so that the same seed gives the same text.

import { CONTRACT } from "./contract.mjs";
import { BadInput } from "./errors.mjs";
import { laneSeeds, SEED_LIMIT } from "./rng.mjs";
import { pyRepr } from "./pyformat.mjs";
import { Constraint } from "./regex.mjs";
import { logProbabilities, Picker, samplingOptions, topIds } from "./sampler.mjs";


const LIMITS = CONTRACT.limits;

/** Holds back text that may be the start of a stop string; the stop itself is not emitted. */
export class StopMatcher {
  constructor(stops) {
    this.stops = stops.filter((s) => s.length > 0);
    this.pending = "";
    this.done = false;
  }

  /** The text `ch` lets out; canEnd(k): whether the text may end k characters back (a regex
   * constraint's say), else every stop string ends it. */
  push(ch, canEnd = null) {
    if (this.stops.length === 0) return ch;
    this.pending += ch;
    for (const stop of this.stops) {
      if (this.pending.endsWith(stop) && (canEnd === null || canEnd([...stop].length))) {
        this.done = true;
        return this.pending.slice(0, this.pending.length - stop.length);
      }
    }
    let keep = 0;
    for (const stop of this.stops) {
      for (let k = 1; k < stop.length; k++) if (k > keep && this.pending.endsWith(stop.slice(0, k))) keep = k;
    }
    const out = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return out;
  }

  flush() {
    const out = this.done ? "" : this.pending;
    this.pending = "";
    return out;
  }

  /** The text ends here (a regex constraint's end): what was held back, then nothing. */
  end() {
    const out = this.flush();
    this.done = true;
    return out;
  }
}

function stopStrings(stop) {
  const stops = typeof stop === "string" ? [stop] : Array.from(stop ?? []);
  if (!stops.every((s) => typeof s === "string")) throw new BadInput("stop must be a string or a list of strings");
  return stops;
}

function randomSeed() {
  const words = new Uint32Array(2);
  globalThis.crypto.getRandomValues(words);
  return (BigInt(words[0]) << 32n) | BigInt(words[1]);
}

/**
 * Generate `numSamples` continuations of `prompt` in one batch: checks the arguments and
 * feeds the prompt first (so errors come from this call), then returns an async iterator
 * yielding, after each step, the new text of every sample ("" where nothing is new).
 * Options: n (default 500), numSamples, seed (number, bigint or decimal string; sample i uses
 * seed + i), stop (string or list), state (batch 1, to continue from), unknown ("error" |
 * "skip"), and the sampling options temperature, topK, topP, minP, repetitionPenalty, greedy,
 * logitBias ({character: value}) and ban (a string of characters).
 */
export async function streamBatch(model, prompt = "", options = {}) {
  const run = await start(model, prompt, options);
  return (async function* () {
    for await (const [pieces] of steps(...run)) yield pieces;
  })();
}

/** One continuation of `prompt` as records, one per character of its text: { char, id, logprob,
 * top: [{ char, id, logprob }] } — its log-probability under the distribution it was drawn
 * from and the `top` (0 to 256) likeliest characters that could have been drawn (docs/formats.md,
 * section 4, step 13). Options as streamBatch, with one sample, and top (default 5). */
export async function streamLogprobs(model, prompt = "", options = {}) {
  const { top = 5, ...rest } = options;
  if (!Number.isInteger(top) || top < 0 || top > CONTRACT.sampling.maxTop) {
    throw new BadInput(`${CONTRACT.sampling.messages.logprobs}, not ${top}`);
  }
  const run = await start(model, prompt, { ...rest, numSamples: 1 });
  return (async function* () {
    const drawn = [];
    for await (const [pieces, records] of steps(...run, top)) {
      drawn.push(...(records ?? []));
      for (let k = [...pieces[0]].length; k > 0; k--) yield drawn.shift();
    }
  })();
}

async function start(model, prompt, options) {
  const { n = 500, numSamples = 1, seed = null, stop = [], state = null, unknown = "error", ...sampling } = options;
  const o = samplingOptions(sampling);
  const stops = stopStrings(stop);
  if (typeof prompt !== "string") throw new BadInput("the prompt must be a string");
  if (!Number.isInteger(n) || !Number.isInteger(numSamples) || n < 0 || n > LIMITS.maxLength || numSamples < 1) {
    throw new BadInput(`the length must be an integer from 0 to ${LIMITS.maxLength.toLocaleString("en-US")} and the`
      + " number of samples an integer >= 1");
  }
  model.checkBatch(numSamples);
  const seedValue = seed === null || seed === undefined ? randomSeed() : parseSeed(seed);
  if (state !== null && state.batch !== 1) {
    throw new BadInput("a state to continue from must have batch 1; use state.select([lane], model.numLayers, model.hiddenSize)");
  }
  const ids = prompt ? model.encode(prompt, unknown) : [];
  const pickers = laneSeeds(seedValue, numSamples).map((s) => new Picker(o, s, model.vocab));
  const dfa = pickers[0].dfa;
  if (dfa !== null && dfa.distance[0] > n) {
    throw new BadInput(`--regex: the shortest text matching ${pyRepr(o.regex)} has ${dfa.distance[0]} characters; -n is ${n}`);
  }
  const primed = await model.prime(ids.length ? ids : [model.startToken], state);
  const window = o.repetitionWindow;
  const recent = Array.from({ length: numSamples }, () => [...Array(Math.max(0, window - ids.length)).fill(-1),
    ...ids.slice(-window)]);
  return [model, primed, n, o, pickers, recent, stops, Math.max(ids.length, 1)];
}

/** BadInput when `numSamples` texts of `n` characters, held until the end, pass the cap (core/limits.py). */
export function checkHeld(n, numSamples) {
  if (numSamples > 1 && n * numSamples > LIMITS.maxHeld) {
    throw new BadInput(`${numSamples.toLocaleString("en-US")} samples of ${n.toLocaleString("en-US")} characters, held`
      + ` until the last one ends, pass the cap of ${LIMITS.maxHeld.toLocaleString("en-US")} characters; ask for fewer`
      + " or shorter samples");
  }
}

function parseSeed(seed) {
  let value;
  try {
    value = BigInt(seed);
  } catch {
    throw new BadInput(`the seed must be >= 0 and an integer below 2^64, not ${seed}`);
  }
  if (value < 0n || value >= SEED_LIMIT || (typeof seed === "number" && !Number.isSafeInteger(seed))) {
    throw new BadInput(`the seed must be >= 0 and an integer below 2^64, not ${seed}`);
  }
  return value;
}

/** The generation loop: yields each step's new text of every lane and, with `top`, the drawn
 * characters' records. */
async function* steps(model, primed, n, o, pickers, recent, stops, fed, top = null) {
  const batch = pickers.length;
  const V = model.vocabSize;
  const matchers = pickers.map(() => new StopMatcher(stops));
  let logits = new Float32Array(batch * V);
  for (let b = 0; b < batch; b++) logits.set(primed.logits, b * V);
  let state = primed.state.select(Array(batch).fill(0), model.numLayers, model.hiddenSize);
  const constraint = pickers[0].dfa === null ? null : new Constraint(pickers[0].dfa, batch, model.startToken);
  for (let t = 0; t < n; t++) {
    const scores = pickers.map((p, b) => p.scores(logits.subarray(b * V, (b + 1) * V), recent[b]));
    if (constraint) {
      scores.forEach((z, b) => constraint.mask(b, n - t).forEach((ok, j) => { if (!ok) z[j] = -Infinity; }));
    }
    const tokens = pickers.map((p, b) => p.choose(null, null, scores[b]));
    const records = top === null ? null : tokens.map((tok, b) => record(model, scores[b], tok, o, top));
    yield [tokens.map((tok, b) => emit(model, matchers[b], tok, constraint, b)), records];
    if (matchers.every((m) => m.done) || t === n - 1) break;
    if (o.repetitionPenalty !== 1) tokens.forEach((tok, b) => { recent[b].shift(); recent[b].push(tok); });
    ({ logits, state } = await model.stepUnchecked(tokens, state, fed + t + 1));
  }
  yield [matchers.map((m) => m.flush()), null];
}

/** A lane's new text: its drawn character through its stop matcher, or, where the constraint
 * says the draw ended the text, what the matcher held back. */
function emit(model, matcher, tok, constraint, b) {
  if (!constraint) return matcher.done ? "" : matcher.push(model.vocab[tok]);
  const stop = constraint.advance(b, tok);
  if (matcher.done) return "";
  return stop ? matcher.end() : matcher.push(model.vocab[tok], (k) => constraint.canEnd(b, k));
}

function record(model, z, tok, options, top) {
  const logp = logProbabilities(z, options);
  return { char: model.vocab[tok], id: tok, logprob: logp[tok],
    top: topIds(z, logp, top).map((id) => ({ char: model.vocab[id], id, logprob: logp[id] })) };
}

/** One continuation of `prompt`, piece by piece (an async iterator of strings); options as streamBatch. */
export async function stream(model, prompt = "", options = {}) {
  const pieces = await streamBatch(model, prompt, { ...options, numSamples: 1 });
  return (async function* () {
    for await (const [piece] of pieces) if (piece) yield piece;
  })();
}

/** One continuation of `prompt` (without the prompt); options as streamBatch. */
export async function generate(model, prompt = "", options = {}) {
  let text = "";
  for await (const piece of await stream(model, prompt, options)) text += piece;
  return text;
}

/** `numSamples` continuations of `prompt`, computed in one batch; options as streamBatch. The
 * texts are held until the last step: n x numSamples is at most the cap (checkHeld). */
export async function generateBatch(model, prompt = "", options = {}) {
  checkHeld(options.n ?? 500, options.numSamples ?? 1);
  const texts = Array(options.numSamples ?? 1).fill("");
  for await (const pieces of await streamBatch(model, prompt, options)) {
    pieces.forEach((piece, b) => { texts[b] += piece; });
  }
  return texts;
}

/** Mean cross-entropy of each character of `text` given those before it, from zero state. */
export async function score(model, text, unknown = "error", chunk = 4096) {
  const ids = model.encode(text, unknown);
  if (ids.length < 2) throw new BadInput("scoring needs a text of at least 2 known characters");
  const V = model.vocabSize;
  let state = model.newState(1);
  let total = 0;
  for (let start = 0; start < ids.length - 1; start += chunk) {
    const targets = ids.slice(start + 1, start + chunk + 1);
    const out = await model.feed(ids.slice(start, start + targets.length), state, chunk, start + 1);
    state = out.state;
    targets.forEach((target, t) => {
      const z = out.logits.subarray(t * V, (t + 1) * V);
      let top = -Infinity;
      for (const x of z) top = Math.max(top, x);
      let sum = 0;
      for (const x of z) sum += Math.exp(x - top);
      total += top + Math.log(sum) - z[target];
    });
  }
  const nats = total / (ids.length - 1);
  return { natsPerChar: nats, chars: ids.length - 1, bitsPerChar: nats / Math.LN2, perplexity: Math.exp(nats) };
}
