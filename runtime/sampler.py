"""Choosing the next character from logits: temperature, top-k, top-p, repetition penalty, greedy."""

import math
from dataclasses import dataclass

import numpy as np

from charlstm.core.errors import BadInput


# Beyond these a penalty changes nothing more (a penalized character is already never drawn)
# and the arithmetic would overflow.
MIN_PENALTY, MAX_PENALTY = 1e-6, 1e6


@dataclass(frozen=True)
class SamplingOptions:
    """How the next character is drawn. temperature 0 or greedy=True picks the most likely one."""

    temperature: float = 0.8
    top_k: int | None = None  # keep the k most likely characters
    top_p: float | None = None  # keep the smallest set of most likely characters reaching p
    repetition_penalty: float = 1.0  # > 1 discourages the characters of the recent window
    repetition_window: int = 32  # characters looked back by the penalty
    greedy: bool = False

    def __post_init__(self) -> None:
        checks = [
            (math.isfinite(self.temperature) and self.temperature >= 0,
             "temperature must be a finite number >= 0"),
            (self.top_k is None or self.top_k >= 1, "top-k must be at least 1"),
            (self.top_p is None or 0 < self.top_p <= 1, "top-p must be in (0, 1]"),
            (MIN_PENALTY <= self.repetition_penalty <= MAX_PENALTY,
             f"repetition penalty must be between {MIN_PENALTY:g} and {MAX_PENALTY:g}"),
            (self.repetition_window >= 1, "repetition window must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInput(message)

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


def penalize(logits: np.ndarray, recent: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL's repetition penalty: logits (B, V) of the ids in recent (B, W), -1 = empty,
    are divided by `penalty` when positive and multiplied by it when negative (in float64)."""
    logits = logits.astype(np.float64)
    batch, vocab = logits.shape
    seen = np.zeros((batch, vocab + 1), dtype=bool)
    np.put_along_axis(seen, np.where(recent < 0, vocab, recent), True, axis=1)
    seen = seen[:, :vocab]
    return np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)


def distribution(logits: np.ndarray, options: SamplingOptions) -> tuple[np.ndarray, np.ndarray]:
    """The filtered, tempered distribution: (order, probs), both (B, V), the ids sorted by
    descending logit (ties: lower id first) and their probabilities (zero where filtered)."""
    order = np.argsort(-logits, axis=1, kind="stable")  # (B, V)
    z = np.take_along_axis(logits.astype(np.float64), order, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (z - z[:, :1]) / max(options.temperature, 1e-300)  # ≤ 0; the top one is 0
    probs = np.exp(np.where(np.isnan(scaled), -np.inf, scaled))
    if options.top_k is not None:
        probs[:, options.top_k:] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    if options.top_p is not None:
        before = np.cumsum(probs, axis=1) - probs  # mass of the more likely characters
        probs[before >= options.top_p - 1e-12] = 0.0
        probs /= probs.sum(axis=1, keepdims=True)
    return order, probs


def choose(logits: np.ndarray, options: SamplingOptions, rngs: list[np.random.Generator],
           recent: np.ndarray | None = None) -> np.ndarray:
    """The next token of each stream: logits (B, V) → ids (B,) int64, one rng per stream."""
    if options.repetition_penalty != 1.0 and recent is not None:
        logits = penalize(logits, recent, options.repetition_penalty)
    if options.is_greedy:
        return logits.argmax(axis=1).astype(np.int64)
    if options.top_k is None and options.top_p is None:  # no filter: no sort needed
        cdf, order = logits.astype(np.float64), None  # (B, V), in place from here on
        cdf -= cdf.max(axis=1, keepdims=True)
        cdf /= options.temperature
        np.exp(cdf, out=cdf)
    else:
        order, cdf = distribution(logits, options)
    np.add.accumulate(cdf, axis=1, out=cdf)  # (B, V) cumulative sums (np.cumsum, less call overhead)
    pick = _inverse_cdf(cdf, [rng.random() for rng in rngs])
    return pick if order is None else order[np.arange(len(order)), pick]


def _inverse_cdf(cdf: np.ndarray, uniforms: list[float]) -> np.ndarray:
    """The id of each row whose cumulative mass first exceeds uniform * total: (B,) int64.
    One stream (generation's common case) takes a binary search instead of a full compare."""
    vocab = cdf.shape[1]
    if len(uniforms) == 1:
        pick = np.searchsorted(cdf[0], uniforms[0] * cdf[0, -1], side="right")
        return np.array([min(pick, vocab - 1)], np.int64)
    u = np.array(uniforms) * cdf[:, -1]  # (B,)
    return np.minimum((cdf <= u[:, None]).sum(axis=1), vocab - 1)
