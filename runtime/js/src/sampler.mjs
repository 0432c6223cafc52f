// Choosing the next character from logits, exactly as docs/formats.md specifies (and as the
// Python runtime's sampler.py does): bias and bans, penalty, greedy, temperature, top-k, top-p,
// min-p, draw.

import { CONTRACT } from "./contract.mjs";
import { BadInput } from "./errors.mjs";
import { pyRepr } from "./pyformat.mjs";
import { compileRegex } from "./regex.mjs";
import { SplitMix64 } from "./rng.mjs";

const S = CONTRACT.sampling; // core/sampling.py's defaults, bounds and words
export const DEFAULTS = Object.freeze({
  temperature: S.defaults.temperature, topK: null, topP: null, repetitionPenalty: 1.0,
  repetitionWindow: S.defaults.repetitionWindow, greedy: false, minP: null, logitBias: {}, ban: "", regex: null,
});

/** Sampling options with the defaults filled in, checked as the Python SamplingOptions checks them. */
export function samplingOptions(given = {}) {
  const o = { ...DEFAULTS };
  for (const [key, value] of Object.entries(given)) {
    if (!(key in DEFAULTS)) throw new BadInput(`unknown sampling option ${key}`);
    if (value !== undefined) o[key] = value;
  }
  const t = o.temperature;
  const said = S.messages;
  const checks = [
    [typeof t === "number" && (t === 0 || (t >= S.minTemperature && t <= S.maxTemperature)), said.temperature],
    [o.topK === null || (Number.isInteger(o.topK) && o.topK >= 1), said.top_k],
    [o.topP === null || (o.topP > 0 && o.topP <= 1), said.top_p],
    [o.repetitionPenalty >= S.minPenalty && o.repetitionPenalty <= S.maxPenalty, said.repetition_penalty],
    [Number.isInteger(o.repetitionWindow) && o.repetitionWindow >= 1 && o.repetitionWindow <= CONTRACT.limits.maxWindow,
      said.repetition_window],
    [o.minP === null || (typeof o.minP === "number" && o.minP > 0 && o.minP <= 1), said.min_p],
    [o.logitBias !== null && typeof o.logitBias === "object" && Object.keys(o.logitBias).every((ch) => [...ch].length === 1),
      "logit_bias must name single characters"],
    [Object.values(o.logitBias ?? {}).every((v) => typeof v === "number" && v >= -S.maxBias && v <= S.maxBias),
      said.logit_bias],
    [typeof o.ban === "string", "ban must name single characters"],
    [o.regex === null || typeof o.regex === "string", "regex must be a string"],
  ];
  if (typeof o.greedy !== "boolean") throw new BadInput(`greedy must be True or False, not ${o.greedy}`);
  for (const [ok, message] of checks) if (!ok) throw new BadInput(message);
  o.greedy = o.greedy || o.temperature === 0;
  return Object.freeze(o);
}

/** What logitBias and ban do to the logits: [id, added value] pairs, -Infinity for a ban
 * (a character outside `vocab` is an error naming it); null when they change nothing. */
export function adjustment(options, vocab) {
  const bias = Object.entries(options.logitBias);
  const ban = [...new Set(options.ban)];
  if (!bias.length && !ban.length) return null;
  const index = new Map((vocab ?? []).map((ch, i) => [ch, i]));
  for (const [flag, chars] of [["logit_bias", bias.map(([ch]) => ch)], ["ban", ban]]) {
    const missing = chars.find((ch) => !index.has(ch));
    if (missing !== undefined) throw new BadInput(`${flag}: ${pyRepr(missing)} is not in the model's vocabulary`);
  }
  const add = new Map(bias.map(([ch, v]) => [index.get(ch), v]));
  for (const ch of ban) add.set(index.get(ch), -Infinity);
  if ([...index.values()].every((i) => add.get(i) === -Infinity)) {
    throw new BadInput(S.messages.ban_all);
  }
  return [...add.entries()];
}

/** Draws the next character of one stream: its options and its SplitMix64; `vocab` resolves
 * logitBias and ban. */
export class Picker {
  constructor(options, seed, vocab = null) {
    this.options = samplingOptions(options);
    this.stream = this.options.greedy ? null : new SplitMix64(seed);
    this.adjust = adjustment(this.options, vocab);
    const banned = new Set((this.adjust ?? []).filter(([, v]) => v === -Infinity).map(([id]) => id));
    this.dfa = this.options.regex === null ? null : compileRegex(this.options.regex, vocab ?? [], banned);
  }

  /** Steps 1-3 of the spec: logits (Float32Array, V) with bias, bans and penalty, as float64. */
  scores(logits, recent = []) {
    const o = this.options;
    const z = Float64Array.from(logits);
    if (this.adjust) for (const [id, value] of this.adjust) z[id] += value;
    if (o.repetitionPenalty !== 1) {
      const p = o.repetitionPenalty;
      for (const id of new Set(recent)) if (id >= 0) z[id] = z[id] > 0 ? z[id] / p : z[id] * p;
    }
    return z;
  }

  /** logits (Float32Array, V) and the recent ids (-1 = empty) (or their scores z) → the next id. */
  choose(logits, recent = [], z = this.scores(logits, recent)) {
    if (this.options.greedy) return argmax(z);
    const { order, weights, cdf, kept } = distribution(z, this.options);
    const size = z.length;
    const target = this.stream.uniform() * cdf[kept - 1];
    let pick = 0;
    while (pick < size && cdf[pick] <= target) pick++;
    if (pick >= kept) { // rounding put the target on the total: the last candidate that can be drawn
      pick = kept - 1;
      while (pick > 0 && weights[pick] <= 0) pick--;
    }
    return order ? order[pick] : pick;
  }
}

/** Steps 5-10 of the spec: the candidates (null: in id order), their weights, cumulative sums
 * and how many lead the draw. */
function distribution(z, o) {
  const filters = o.topK !== null || o.topP !== null || o.minP !== null;
  const order = filters ? sortedIds(z) : null;
  const size = z.length;
  const weights = new Float64Array(size);
  const cdf = new Float64Array(size);
  let max = -Infinity;
  for (let j = 0; j < size; j++) max = Math.max(max, z[order ? order[j] : j]);
  let sum = 0;
  for (let j = 0; j < size; j++) {
    weights[j] = Math.exp((z[order ? order[j] : j] - max) / o.temperature);
    sum += weights[j];
    cdf[j] = sum;
  }
  let kept = o.topK === null ? size : Math.min(o.topK, size);
  if (o.topP !== null) {
    const bound = (o.topP - S.topPSlack) * cdf[kept - 1];
    let inside = 0;
    while (inside < size && (inside === 0 ? 0 : cdf[inside - 1]) < bound) inside++;
    kept = Math.min(kept, Math.max(inside, 1));
  }
  if (o.minP !== null) { // the first candidate's weight is exp(0) = 1
    let likely = 0;
    for (let j = 0; j < size; j++) if (weights[j] >= o.minP) likely++;
    kept = Math.min(kept, Math.max(likely, 1));
  }
  return { order, weights, cdf, kept };
}

/** Step 13 of the spec: each id's log-probability (Float64Array, V) under the distribution the
 * draw is made from, ((z - m) / T) - ln(C[K-1]) for the kept candidates and -Infinity for the
 * others, at the temperature T (1 where it is 0); greedy mode reports the same distribution. */
export function logProbabilities(z, options) {
  const temperature = options.temperature || 1;
  const { order, cdf, kept } = distribution(z, { ...options, temperature });
  let max = -Infinity;
  for (const v of z) max = Math.max(max, v);
  const logTotal = Math.log(cdf[kept - 1]);
  const logp = new Float64Array(z.length).fill(-Infinity);
  for (let i = 0; i < kept; i++) {
    const id = order ? order[i] : i;
    logp[id] = (z[id] - max) / temperature - logTotal;
  }
  return logp;
}

/** The `count` most likely ids that can be drawn: by z from the largest, equal z in increasing id order. */
export function topIds(z, logp, count) {
  return sortedIds(z).filter((id) => logp[id] > -Infinity).slice(0, count);
}

function argmax(z) {
  let best = 0;
  for (let j = 1; j < z.length; j++) if (z[j] > z[best]) best = j; // ties: the lowest id
  return best;
}

/** Ids by logit, the higher first; between equal logits, the lower id first. */
function sortedIds(z) {
  const ids = Array.from(z.keys());
  return ids.sort((a, b) => (z[b] - z[a]) || (a - b));
}
