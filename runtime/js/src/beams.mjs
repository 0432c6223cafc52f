// Beam search: the K likeliest continuations of a prompt, batched over the beams, as
// docs/formats.md section 10 specifies (and as the Python runtime's beams.py does).

import { CONTRACT } from "./contract.mjs";
import { BadInput } from "./errors.mjs";
import { StopMatcher } from "./generate.mjs";
import { logProbabilities, Picker } from "./sampler.mjs";

const MAX_BEAMS = 64;
const MAX_LENGTH_PENALTY = 10;

const score = (h, lengthPenalty) => h.logprob / Math.max(1, h.ids.length) ** lengthPenalty;

/**
 * The `beams` best continuations of `prompt` (at most n characters; a beam also ends at a stop
 * string), best first: [{ text, logprob, score }]. Ranked by the model's log-probabilities at
 * temperature 1 after logitBias, ban and the repetition penalty; deterministic. Options: n
 * (default 200), beams (4), lengthPenalty (0), stop, state, unknown, logitBias, ban,
 * repetitionPenalty, repetitionWindow.
 */
export async function beamSearch(model, prompt = "", options = {}) {
  const { n = 200, beams = 4, lengthPenalty = 0, stop = [], state = null, unknown = "error", logitBias = {}, ban = "",
    repetitionPenalty = 1, repetitionWindow = 32 } = options;
  const sampling = { temperature: 1, logitBias, ban, repetitionPenalty, repetitionWindow };
  const picker = new Picker(sampling, 0n, model.vocab);
  const o = picker.options;
  if (!Number.isInteger(beams) || beams < 1 || beams > MAX_BEAMS) {
    throw new BadInput(`beams must be an integer from 1 to ${MAX_BEAMS}, not ${beams}`);
  }
  if (typeof lengthPenalty !== "number" || !(lengthPenalty >= 0 && lengthPenalty <= MAX_LENGTH_PENALTY)) {
    throw new BadInput(`the length penalty must be a number from 0 to ${MAX_LENGTH_PENALTY}`);
  }
  if (!Number.isInteger(n) || n < 0 || n > CONTRACT.limits.maxLength) {
    throw new BadInput(`the length must be an integer from 0 to ${CONTRACT.limits.maxLength.toLocaleString("en-US")}`);
  }
  const stops = typeof stop === "string" ? [stop] : Array.from(stop);
  model.checkBatch(beams);
  const ids = prompt ? model.encode(prompt, unknown) : [];
  let { logits, state: current } = await model.prime(ids.length ? ids : [model.startToken], state);
  const V = model.vocabSize;
  let recent = [[...Array(Math.max(0, repetitionWindow - ids.length)).fill(-1), ...ids.slice(-repetitionWindow)]];
  let hypotheses = [{ ids: [], logprob: 0, matcher: new StopMatcher(stops), text: "", lane: 0, done: false }];
  for (let t = 0; t < n; t++) {
    let live = hypotheses.filter((h) => !h.done);
    if (!live.length) break;
    const logp = live.map((h, b) => logProbabilities(picker.scores(logits.subarray(b * V, (b + 1) * V), recent[b]), o));
    hypotheses = best(hypotheses, live, logp, beams, lengthPenalty);
    live = hypotheses.filter((h) => !h.done && h.ids.length === t + 1);
    for (const h of live) {
      h.text += h.matcher.push(model.vocab[h.ids[h.ids.length - 1]]);
      h.done = h.matcher.done;
    }
    live = live.filter((h) => !h.done);
    if (!live.length || t === n - 1) break;
    const tokens = live.map((h) => h.ids[h.ids.length - 1]);
    const parents = live.map((h) => h.lane);
    recent = parents.map((p, i) => [...recent[p].slice(1), tokens[i]]);
    ({ logits, state: current } = await model.stepUnchecked(tokens,
      current.select(parents, model.numLayers, model.hiddenSize), Math.max(ids.length, 1) + t + 1));
    live.forEach((h, lane) => { h.lane = lane; });
  }
  return hypotheses.map((h) => ({ text: h.text + h.matcher.flush(), logprob: h.logprob, score: score(h, lengthPenalty) }));
}

/** The `beams` best of the finished hypotheses and every live one extended by every id it can
 * draw: by score from the highest; ties by the rank of the hypothesis extended, then its
 * finished self before its extensions, then the lower id. */
function best(hypotheses, live, logp, beams, lengthPenalty) {
  const entries = [];
  let row = 0;
  hypotheses.forEach((h, rank) => {
    if (h.done) {
      entries.push({ score: score(h, lengthPenalty), rank, char: -1, h, total: null });
      return;
    }
    const lp = logp[row];
    for (let j = 0; j < lp.length; j++) {
      const total = h.logprob + lp[j];
      const s = lengthPenalty ? total / (h.ids.length + 1) ** lengthPenalty : total;
      if (Number.isFinite(s)) entries.push({ score: s, rank, char: j, h, total, row });
    }
    row++;
  });
  entries.sort((a, b) => (b.score - a.score) || (a.rank - b.rank) || (a.char - b.char));
  return entries.slice(0, beams).map((e) => {
    if (e.total === null) return e.h;
    const matcher = new StopMatcher(e.h.matcher.stops);
    [matcher.pending, matcher.done] = [e.h.matcher.pending, e.h.matcher.done];
    return { ids: [...e.h.ids, e.char], logprob: e.total, matcher, text: e.h.text, lane: e.row, done: false };
  });
}
