"""Choosing the next character from logits, exactly as docs/formats.md specifies: bias and bans, penalty, greedy, temperature, top-k, top-p, min-p, draw."""

import dataclasses
from dataclasses import dataclass

import numpy as np

from charlstm.core import limits, sampling
from charlstm.core.errors import BadInput
from charlstm.runtime.regex import compile_regex
from charlstm.runtime.rng import Streams



@dataclass(frozen=True)
class SamplingOptions:
    """How the next character is drawn. temperature 0 or greedy=True picks the most likely one."""

    temperature: float = sampling.TEMPERATURE
    top_k: int | None = None  # keep the k most likely characters
    top_p: float | None = None  # keep the smallest set of most likely characters reaching p
    repetition_penalty: float = 1.0  # > 1 discourages the characters of the recent window
    repetition_window: int = sampling.REPETITION_WINDOW  # characters looked back by the penalty
    greedy: bool = False
    min_p: float | None = None  # keep the characters at least min_p times as likely as the likeliest
    logit_bias: tuple[tuple[str, float], ...] = ()  # (character, value added to its logit); a dict is accepted
    ban: tuple[str, ...] = ()  # characters never drawn; a string is accepted
    regex: str | None = None  # the whole text matches this pattern (runtime/regex.py's subset)

    def __post_init__(self) -> None:
        self._normalize_bias_and_ban()
        kinds = [(self.temperature, "temperature", _is_number), (self.top_k, "top_k", is_int),
                 (self.top_p, "top_p", _is_number), (self.repetition_penalty, "repetition_penalty", _is_number),
                 (self.repetition_window, "repetition_window", is_int), (self.greedy, "greedy", _is_bool)]
        for value, name, fits in kinds:
            if not fits(value) and not (value is None and name in ("top_k", "top_p")):
                raise BadInput(f"{name} must be {fits.__doc__}, not {value!r}")
        s, said = sampling, sampling.MESSAGES
        checks = [
            (self.temperature == 0 or s.MIN_TEMPERATURE <= self.temperature <= s.MAX_TEMPERATURE, said["temperature"]),
            (self.top_k is None or self.top_k >= 1, said["top_k"]),
            (self.top_p is None or 0 < self.top_p <= 1, said["top_p"]),
            (s.MIN_PENALTY <= self.repetition_penalty <= s.MAX_PENALTY, said["repetition_penalty"]),
            (1 <= self.repetition_window <= limits.MAX_WINDOW, said["repetition_window"]),
            (self.min_p is None or (_is_number(self.min_p) and 0 < self.min_p <= 1), said["min_p"]),
            (all(_is_number(v) and -s.MAX_BIAS <= v <= s.MAX_BIAS for _, v in self.logit_bias), said["logit_bias"]),
            (self.regex is None or isinstance(self.regex, str), "regex must be a string"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInput(message)

    def _normalize_bias_and_ban(self) -> None:
        """logit_bias as (character, value) pairs in code-point order, ban as distinct characters
        in code-point order: equal options compare equal, whichever form they were given in."""
        bias = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        try:
            bias = tuple(sorted((k, v) for k, v in bias))
        except (TypeError, ValueError):
            raise BadInput(f"logit_bias must map characters to numbers, not {self.logit_bias!r}") from None
        ban = tuple(sorted(set(self.ban))) if isinstance(self.ban, (str, list, tuple, set, frozenset)) else None
        for chars, name in (([k for k, _ in bias], "logit_bias"), (ban, "ban")):
            if chars is None or not all(isinstance(c, str) and len(c) == 1 for c in chars):
                raise BadInput(f"{name} must name single characters, not {getattr(self, name)!r}")
        if len({k for k, _ in bias}) != len(bias):
            raise BadInput("logit_bias names a character twice")
        object.__setattr__(self, "logit_bias", bias)
        object.__setattr__(self, "ban", ban)

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    @property
    def filters(self) -> bool:
        return self.top_k is not None or self.top_p is not None or self.min_p is not None


def _is_number(x) -> bool:
    """a number"""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def is_int(x) -> bool:
    """an integer"""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_bool(x) -> bool:
    """True or False"""
    return isinstance(x, (bool, np.bool_))


def penalize(logits: np.ndarray, recent: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL's repetition penalty, in float64: logits (B, V) of the ids in recent (B, W), -1 =
    empty, are divided by `penalty` when positive and multiplied by it otherwise (once each)."""
    logits = logits.astype(np.float64)
    batch, vocab = logits.shape
    seen = np.zeros((batch, vocab + 1), dtype=bool)
    np.put_along_axis(seen, np.where(recent < 0, vocab, recent), True, axis=1)
    seen = seen[:, :vocab]
    return np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)


def adjustment(options: SamplingOptions, vocab: list[str] | None) -> np.ndarray | None:
    """What logit_bias and ban add to the logits (V,) float64 — a bias, or -inf for a banned
    character — or None when they change nothing. A character outside `vocab` is an error."""
    if not options.logit_bias and not options.ban:
        return None
    index = {ch: i for i, ch in enumerate(vocab or [])}
    add = np.zeros(len(index), np.float64)
    for (ch, _), flag in [((ch, v), "logit_bias") for ch, v in options.logit_bias] + [((ch, 0), "ban") for ch in options.ban]:
        if ch not in index:
            raise BadInput(f"{flag}: {ch!r} is not in the model's vocabulary")
    for ch, value in options.logit_bias:
        add[index[ch]] = value
    for ch in options.ban:
        add[index[ch]] = -np.inf
    if np.isinf(add).all():
        raise BadInput(sampling.MESSAGES["ban_all"])
    return add


class Picker:
    """Draws the next character of B streams: the options, and stream i's SplitMix64 seeded
    with seeds[i] (the greedy picker draws nothing); `vocab` resolves logit_bias and ban."""

    def __init__(self, options: SamplingOptions, seeds: list[int], vocab: list[str] | None = None):
        self.options = options
        self.streams = None if options.is_greedy else Streams(seeds)
        self.adjust = adjustment(options, vocab)
        banned = frozenset(np.flatnonzero(np.isneginf(self.adjust)).tolist()) if self.adjust is not None else ()
        self.dfa = compile_regex(options.regex, vocab or [], banned) if options.regex is not None else None

    def scores(self, logits: np.ndarray, recent: np.ndarray | None = None) -> np.ndarray:
        """Steps 1-3 of the spec: logits (B, V) float32 with bias, bans and penalty applied."""
        o = self.options
        z = logits if self.adjust is None else logits.astype(np.float64) + self.adjust  # banned: -inf
        return penalize(z, recent, o.repetition_penalty) if o.repetition_penalty != 1.0 else z

    def choose(self, logits: np.ndarray, recent: np.ndarray | None = None, z: np.ndarray | None = None) -> np.ndarray:
        """logits (B, V) float32 and the recent ids (B, W) (or their scores z) → the next ids (B,) int64."""
        o = self.options
        z = self.scores(logits, recent) if z is None else z
        if o.is_greedy:
            return z.argmax(axis=1).astype(np.int64)  # ties: the lowest id
        if len(z) == 1 and not o.filters:
            return np.array([self._one(z[0])], np.int64)
        order, weights = candidates(z, o)  # (B, V) each
        cdf = np.add.accumulate(weights, axis=1)  # sums left to right, as the spec says
        kept = kept_count(weights, cdf, o)  # (B,)
        total = cdf[:, -1] if kept is None else cdf[np.arange(len(z)), kept - 1]
        target = self.streams.uniforms() * total
        pick = (cdf <= target[:, None]).sum(axis=1)  # the first candidate whose cdf passes the target
        limit = cdf.shape[1] if kept is None else kept
        missed = pick >= limit  # rounding put the target on the total: the last candidate that can be drawn
        if missed.any():
            last = np.broadcast_to(limit, pick.shape)
            pick[missed] = [int(np.flatnonzero(weights[r, :last[r]] > 0)[-1]) for r in np.flatnonzero(missed)]
        return pick if order is None else order[np.arange(len(z)), pick]


    def _one(self, z: np.ndarray) -> int:
        """choose() for one stream without filters (batch-1 generation's case): the same
        arithmetic on one row, half the numpy calls (the first cumulative sum above the target
        by binary search)."""
        w = z.astype(np.float64)
        w -= w.max()
        w /= self.options.temperature
        np.exp(w, out=w)
        cdf = np.add.accumulate(w)
        pick = int(np.searchsorted(cdf, self.streams.uniforms()[0] * cdf[-1], side="right"))
        return pick if pick < len(w) else int(np.flatnonzero(w > 0)[-1])


def candidates(z: np.ndarray, options: SamplingOptions) -> tuple[np.ndarray | None, np.ndarray]:
    """The candidates in the order they are drawn from, and their weights exp((z - max) / T)
    in float64: all ids in id order (order None), or, with top-k or top-p, sorted by logit,
    the higher first and, between equal logits, the lower id first."""
    order = np.argsort(-z, axis=1, kind="stable") if options.filters else None
    w = np.take_along_axis(z, order, axis=1).astype(np.float64) if order is not None else z.astype(np.float64)
    w -= w.max(axis=1, keepdims=True)
    w /= options.temperature
    np.exp(w, out=w)
    return order, w


def kept_count(weights: np.ndarray, cdf: np.ndarray, options: SamplingOptions) -> np.ndarray | None:
    """How many leading candidates may be drawn (B,): the first top_k; and of those, while the
    sum of the weights before a candidate is < (top_p - 1e-12) x their total; and of those,
    the ones whose weight is >= min_p (at least one each time). None: all."""
    if not options.filters:
        return None
    batch, vocab = weights.shape
    kept = np.full(batch, vocab if options.top_k is None else min(options.top_k, vocab))
    if options.top_p is not None:
        total = cdf[np.arange(batch), kept - 1]
        before = np.concatenate([np.zeros((batch, 1)), cdf[:, :-1]], axis=1)
        inside = (before < ((options.top_p - sampling.TOP_P_SLACK) * total)[:, None]).sum(axis=1)
        kept = np.minimum(kept, np.maximum(inside, 1))
    if options.min_p is not None:  # the first candidate's weight is exp(0) = 1
        kept = np.minimum(kept, np.maximum((weights >= options.min_p).sum(axis=1), 1))
    return kept


def log_probabilities(z: np.ndarray, options: SamplingOptions) -> np.ndarray:
    """Step 13 of the spec: the log-probability (B, V) float64 of each id under the distribution
    the draw is made from — ((z - m) / T) - ln(C_{K-1}) for the kept candidates, -inf for the
    others — at the temperature T (1 where it is 0); greedy mode reports the same distribution."""
    temperature = options.temperature or 1.0
    drawn = dataclasses.replace(options, temperature=temperature, greedy=False)
    order, weights = candidates(z, drawn)
    cdf = np.add.accumulate(weights, axis=1)
    kept = kept_count(weights, cdf, drawn)
    rows = np.arange(len(z))
    total = cdf[:, -1] if kept is None else cdf[rows, kept - 1]
    z = z.astype(np.float64)
    logp = (z - z.max(axis=1, keepdims=True)) / temperature - np.log(total)[:, None]
    if kept is not None:
        outside = np.arange(z.shape[1])[None, :] >= kept[:, None]  # positions in the sorted order
        np.put_along_axis(logp, order, np.where(outside, -np.inf, np.take_along_axis(logp, order, axis=1)), axis=1)
    return logp


def top_ids(z: np.ndarray, logp: np.ndarray, count: int) -> list[int]:
    """The `count` most likely ids of one row that can be drawn: by z from the largest, equal z
    in increasing id order."""
    order = np.argsort(-z, kind="stable")
    return [int(i) for i in order if np.isfinite(logp[i])][:count]
