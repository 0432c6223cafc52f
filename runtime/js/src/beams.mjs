// Beam search: the K likeliest continuations of a prompt, batched over the beams, as
// docs/formats.md section 10 specifies (and as the Python runtime's beams.py does).

import { CONTRACT } from "./contract.mjs";
import { BadInput } from "./errors.mjs";
import { StopMatcher } from "./generate.mjs";
import { pyRepr } from "./pyformat.mjs";
import { mask } from "./regex.mjs";
import { logProbabilities, Picker } from "./sampler.mjs";

const S = CONTRACT.sampling;

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
    repetitionPenalty = 1, repetitionWindow = 32, regex = null } = options;
  const sampling = { temperature: 1, logitBias, ban, repetitionPenalty, repetitionWindow, regex };
  const picker = new Picker(sampling, 0n, model.vocab);
  const o = picker.options;
  if (!Number.isInteger(beams) || beams < 1 || beams > S.maxBeams) throw new BadInput(`${S.messages.beams}, not ${beams}`);
  if (typeof lengthPenalty !== "number" || !(lengthPenalty >= 0 && lengthPenalty <= S.maxLengthPenalty)) {
    throw new BadInput(S.messages.length_penalty);
  }
  if (!Number.isInteger(n) || n < 0 || n > CONTRACT.limits.maxLength) {
    throw new BadInput(`the length must be an integer from 0 to ${CONTRACT.limits.maxLength.toLocaleString("en-US")}`);
  }
  const { dfa } = picker;
  if (dfa !== null && dfa.distance[0] > n) {
    throw new BadInput(`--regex: the shortest text matching ${pyRepr(regex)} has ${dfa.distance[0]} characters; -n is ${n}`);
  }
  const stops = typeof stop === "string" ? [stop] : Array.from(stop);
  model.checkBatch(beams);
  const ids = prompt ? model.encode(prompt, unknown) : [];
  let { logits, state: current } = await model.prime(ids.length ? ids : [model.startToken], state);
  const V = model.vocabSize;
  let recent = [[...Array(Math.max(0, repetitionWindow - ids.length)).fill(-1), ...ids.slice(-repetitionWindow)]];
  let hypotheses = [{ ids: [], logprob: 0, matcher: new StopMatcher(stops), text: "", lane: 0, done: false, states: [0] }];
  const end = model.startToken;
  for (let t = 0; t < n; t++) {
    let live = hypotheses.filter((h) => !h.done);
    if (!live.length) break;
    const logp = live.map((h, b) => logProbabilities(picker.scores(logits.subarray(b * V, (b + 1) * V), recent[b]), o));
    const ends = live.map(() => false);
    if (dfa !== null) { // the model's own log-probabilities, of the characters the pattern allows
      live.forEach((h, b) => {
        const [ok, stops] = mask(dfa, h.states[h.states.length - 1], n - t, end);
        ends[b] = stops;
        ok.forEach((yes, j) => { if (!yes) logp[b][j] = -Infinity; });
      });
    }
    hypotheses = best(hypotheses, live, logp, beams, lengthPenalty, ends, end, dfa);
    live = hypotheses.filter((h) => !h.done && h.ids.length === t + 1);
    for (const h of live) {
      const canEnd = dfa === null ? null : (k) => h.states.length > k && dfa.accepting[h.states[h.states.length - 1 - k]];
      h.text += h.matcher.push(model.vocab[h.ids[h.ids.length - 1]], canEnd);
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
 * finished self before its extensions, then the lower id. Where ends[row], drawing `end`
 * finishes the text (a regex's end). */
function best(hypotheses, live, logp, beams, lengthPenalty, ends, end, dfa) {
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
    const child = { ids: [...e.h.ids, e.char], logprob: e.total, matcher, text: e.h.text, lane: e.row, done: false,
      states: e.h.states };
    if (ends[e.row] && e.char === end) Object.assign(child, { text: e.h.text + matcher.end(), done: true });
    else if (dfa !== null) child.states = [...e.h.states, dfa.next[e.h.states[e.h.states.length - 1]][e.char]];
    return child;
  });
}
