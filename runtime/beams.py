"""Beam search: the K likeliest continuations of a prompt, batched over the beams, as docs/formats.md section 10 specifies."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from charlstm.core import limits, sampling
from charlstm.core.errors import BadInput
from charlstm.runtime.generate import _StopMatcher, _stop_strings
from charlstm.runtime.model import Model, State
from charlstm.runtime.regex import masks
from charlstm.runtime.sampler import Picker, SamplingOptions, _is_number, is_int, log_probabilities



@dataclass(frozen=True)
class Beam:
    """One continuation: its text (without a stop string), the sum of its characters'
    log-probabilities, and the score beams are ranked by: logprob / length^length_penalty."""

    text: str
    logprob: float
    score: float


@dataclass
class _Hypothesis:
    ids: list = field(default_factory=list)  # drawn ids
    logprob: float = 0.0
    matcher: _StopMatcher | None = None
    text: str = ""  # what the matcher let out
    lane: int = 0  # its row in the batch of the last step
    done: bool = False
    states: list = field(default_factory=lambda: [0])  # with a regex: its DFA states, one per id drawn, from the start

    def score(self, length_penalty: float) -> float:
        return self.logprob / max(1, len(self.ids)) ** length_penalty


def beam_search(model: Model, prompt: str = "", n: int = 200, beams: int = 4, *, length_penalty: float = 0.0,
                stop: Sequence[str] = (), state: State | None = None, unknown: str = "error",
                logit_bias=(), ban=(), repetition_penalty: float = 1.0, repetition_window: int = 32,
                regex: str | None = None) -> list[Beam]:
    """The `beams` best continuations of `prompt` of at most `n` characters (a beam also ends at
    a stop string), best first. Ranked by the model's log-probabilities at temperature 1 after
    `logit_bias`, `ban` and the repetition penalty; with `regex`, every beam's text matches it
    (docs/formats.md sections 10 and 11); deterministic."""
    options = SamplingOptions(temperature=1.0, logit_bias=logit_bias, ban=ban, repetition_penalty=repetition_penalty,
                              repetition_window=repetition_window, regex=regex)
    if not is_int(beams) or not 1 <= beams <= sampling.MAX_BEAMS:
        raise BadInput(f"{sampling.MESSAGES['beams']}, not {beams!r}")
    if not _is_number(length_penalty) or not 0 <= length_penalty <= sampling.MAX_LENGTH_PENALTY:
        raise BadInput(sampling.MESSAGES["length_penalty"])
    if not is_int(n) or not 0 <= n <= limits.MAX_LENGTH:
        raise BadInput(f"the length must be an integer from 0 to {limits.MAX_LENGTH:,}")
    stops = _stop_strings(stop)
    model.check_batch(beams)
    picker = Picker(options, [0], model.vocab)
    dfa = picker.dfa
    if dfa is not None and dfa.distance[0] > n:
        raise BadInput(f"--regex: the shortest text matching {regex!r} has {dfa.distance[0]} characters; -n is {n}")
    ids = model.encode(prompt, unknown) if prompt else np.array([], np.int64)
    logits, state = model.prime(ids if len(ids) else [model.start_token], state)
    window = repetition_window
    recent = np.full((1, window), -1, np.int64)
    recent[:, max(0, window - len(ids)):] = ids[-window:]
    hypotheses = [_Hypothesis(matcher=_StopMatcher(stops))]
    for t in range(n):
        live = [h for h in hypotheses if not h.done]
        if not live:
            break
        logp = log_probabilities(picker.scores(logits, recent), options)  # (B, V), B = len(live)
        ends = np.zeros(len(live), bool)
        if dfa is not None:  # the model's own log-probabilities, of the characters the pattern allows
            allowed, ends = masks(dfa, np.array([h.states[-1] for h in live]), n - t, model.start_token)
            logp = np.where(allowed, logp, -np.inf)
        hypotheses = _best(hypotheses, live, logp, beams, length_penalty, ends, model.start_token, dfa)
        live = [h for h in hypotheses if not h.done and h.ids and len(h.ids) == t + 1]
        for h in live:
            can_end = None if dfa is None else (lambda k, h=h: len(h.states) > k and bool(dfa.accepting[h.states[-1 - k]]))
            h.text += h.matcher.push(model.vocab[h.ids[-1]], can_end)
            h.done = h.matcher.done
        live = [h for h in live if not h.done]
        if not live or t == n - 1:
            break
        tokens = np.array([h.ids[-1] for h in live], np.int64)
        parents = [h.lane for h in live]
        recent = np.concatenate([recent[parents, 1:], tokens[:, None]], axis=1)
        logits, state = model._step(tokens, state.select(parents), max(len(ids), 1) + t + 1)
        for lane, h in enumerate(live):
            h.lane = lane
    for h in hypotheses:
        h.text += h.matcher.flush()
    return [Beam(h.text, h.logprob, h.score(length_penalty)) for h in hypotheses]


def _best(hypotheses, live, logp, beams: int, length_penalty: float, ends, end: int, dfa) -> list:
    """The `beams` best of the finished hypotheses and every live one extended by every id it
    can draw: by score from the highest; ties by the rank of the hypothesis extended, then its
    finished self before its extensions, then the lower id. Where `ends[row]`, drawing `end`
    finishes the text (a regex's end)."""
    vocab = logp.shape[1]
    ranks = np.array([r for r, h in enumerate(hypotheses) if not h.done], np.int64)  # (B,), live in rank order
    totals = np.array([h.logprob for h in live])[:, None] + logp  # (B, V)
    lengths = np.array([len(h.ids) + 1 for h in live], np.float64)[:, None]
    scores = totals / lengths ** length_penalty if length_penalty else totals
    keep = np.isfinite(scores.ravel())
    done = [(r, h) for r, h in enumerate(hypotheses) if h.done]
    score = np.concatenate([scores.ravel()[keep], [h.score(length_penalty) for _, h in done]])
    rank = np.concatenate([np.repeat(ranks, vocab)[keep], [r for r, _ in done]]).astype(np.int64)
    char = np.concatenate([np.tile(np.arange(vocab), len(live))[keep], [-1] * len(done)]).astype(np.int64)
    row = np.concatenate([np.repeat(np.arange(len(live)), vocab)[keep], [-1] * len(done)]).astype(np.int64)
    chosen = []
    for k in np.lexsort((char, rank, -score))[:beams].tolist():
        if char[k] < 0:
            chosen.append(hypotheses[rank[k]])
            continue
        parent, j = live[row[k]], int(char[k])
        matcher = _StopMatcher(parent.matcher.stops)
        matcher.pending, matcher.done = parent.matcher.pending, parent.matcher.done
        child = _Hypothesis(parent.ids + [j], float(totals[row[k], j]), matcher, parent.text, int(row[k]))
        if ends[row[k]] and j == end:
            child.text, child.done, child.states = parent.text + matcher.end(), True, parent.states
        elif dfa is not None:
            child.states = parent.states + [int(dfa.next[parent.states[-1], j])]
        chosen.append(child)
    return chosen
