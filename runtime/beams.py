"""Beam search: the K likeliest continuations of a prompt, batched over the beams, as docs/formats.md section 10 specifies."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from charlstm.core import limits
from charlstm.core.errors import BadInput
from charlstm.runtime.generate import _StopMatcher, _stop_strings
from charlstm.runtime.model import Model, State
from charlstm.runtime.sampler import Picker, SamplingOptions, _is_number, is_int, log_probabilities

MAX_BEAMS = 64
MAX_LENGTH_PENALTY = 10.0


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

    def score(self, length_penalty: float) -> float:
        return self.logprob / max(1, len(self.ids)) ** length_penalty


def beam_search(model: Model, prompt: str = "", n: int = 200, beams: int = 4, *, length_penalty: float = 0.0,
                stop: Sequence[str] = (), state: State | None = None, unknown: str = "error",
                logit_bias=(), ban=(), repetition_penalty: float = 1.0, repetition_window: int = 32) -> list[Beam]:
    """The `beams` best continuations of `prompt` of at most `n` characters (a beam also ends at
    a stop string), best first. Ranked by the model's log-probabilities at temperature 1 after
    `logit_bias`, `ban` and the repetition penalty (docs/formats.md section 10); deterministic."""
    options = SamplingOptions(temperature=1.0, logit_bias=logit_bias, ban=ban, repetition_penalty=repetition_penalty,
                              repetition_window=repetition_window)
    if not is_int(beams) or not 1 <= beams <= MAX_BEAMS:
        raise BadInput(f"beams must be an integer from 1 to {MAX_BEAMS}, not {beams!r}")
    if not _is_number(length_penalty) or not 0 <= length_penalty <= MAX_LENGTH_PENALTY:
        raise BadInput(f"the length penalty must be a number from 0 to {MAX_LENGTH_PENALTY:g}")
    if not is_int(n) or not 0 <= n <= limits.MAX_LENGTH:
        raise BadInput(f"the length must be an integer from 0 to {limits.MAX_LENGTH:,}")
    stops = _stop_strings(stop)
    model.check_batch(beams)
    picker = Picker(options, [0], model.vocab)
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
        hypotheses = _best(hypotheses, live, logp, beams, length_penalty)
        live = [h for h in hypotheses if not h.done and h.ids and len(h.ids) == t + 1]
        for h in live:
            h.text += h.matcher.push(model.vocab[h.ids[-1]])
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


def _best(hypotheses, live, logp, beams: int, length_penalty: float) -> list:
    """The `beams` best of the finished hypotheses and every live one extended by every id it
    can draw: by score from the highest; ties by the rank of the hypothesis extended, then its
    finished self before its extensions, then the lower id."""
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
        parent = live[row[k]]
        matcher = _StopMatcher(parent.matcher.stops)
        matcher.pending, matcher.done = parent.matcher.pending, parent.matcher.done
        chosen.append(_Hypothesis(parent.ids + [int(char[k])], float(totals[row[k], char[k]]), matcher, parent.text,
                                  int(row[k])))
    return chosen
