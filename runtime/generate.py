"""Text from a model: priming with a prompt, streaming generation, stop strings, batches, scoring."""

import collections
import dataclasses
import math
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from charlstm.core import limits
from charlstm.core.sampling import MAX_TOP, MESSAGES
from charlstm.core.errors import BadInput
from charlstm.runtime.model import Model, State
from charlstm.runtime.regex import Constraint
from charlstm.runtime.rng import SEED_LIMIT
from charlstm.runtime.sampler import Picker, SamplingOptions, is_int, log_probabilities, top_ids



def lane_seeds(seed: int, num_samples: int) -> list[int]:
    """The seeding rule: sample i of a batch uses seed + i (mod 2^64), so lane i of a batch run
    equals a single run with seed + i."""
    return [(seed + i) % SEED_LIMIT for i in range(num_samples)]


class _StopMatcher:
    """Holds back text that may be the start of a stop string; the stop itself is not emitted."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending, self.done = "", False

    def push(self, ch: str, can_end=None) -> str:
        """The text `ch` lets out; `can_end(k)`: whether the text may end k characters back
        (a regex constraint's say), else every stop string ends it."""
        if not self.stops:
            return ch
        self.pending += ch
        for stop in self.stops:
            if self.pending.endswith(stop) and (can_end is None or can_end(len(stop))):
                self.done = True
                return self.pending[: -len(stop)]
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])),
                   default=0)
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.done else self.pending), ""
        return out

    def end(self) -> str:
        """The text ends here (a regex constraint's end): what was held back, then nothing."""
        out = self.flush()
        self.done = True
        return out


def _stop_strings(stop) -> list[str]:
    """One stop string, or a sequence of them."""
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if not all(isinstance(s, str) for s in stops):
        raise BadInput("stop must be a string or a list of strings")
    return stops


def sampling_options(options: SamplingOptions | None, overrides: dict) -> SamplingOptions:
    """`options` (default: SamplingOptions()) with the fields named in `overrides` replaced."""
    return dataclasses.replace(options or SamplingOptions(), **overrides)


def stream_batch(model: Model, prompt: str = "", n: int = 500, *, num_samples: int = 1,
                 seed: int | None = None, stop: Sequence[str] = (), state: State | None = None,
                 unknown: str = "error", options: SamplingOptions | None = None,
                 **sampling) -> Iterator[list[str]]:
    """Generate `num_samples` independent continuations of `prompt` at once, in one batch.

    Checks the arguments and feeds the prompt at once (so errors come from this call), then
    yields, after each step, the new text of every sample (a list, "" where nothing is new).
    `n` caps the generated characters of each sample; a sample also ends at the first of its
    `stop` strings (one string, or a list; not included). `options` says how characters are drawn; keyword arguments
    named like its fields (temperature=..., top_p=...) override them. `state` (batch 1)
    continues an earlier text: the prompt is fed from it (to continue seamlessly, keep the state
    from before the text's last character and pass that character as the prompt). An empty
    prompt feeds the start token first (Model.start_token). Sample i uses the seed `seed + i`
    (lane_seeds); seed=None draws fresh entropy."""
    run = _start(model, prompt, n, num_samples, seed, stop, state, unknown, sampling_options(options, sampling))
    return (pieces for pieces, _ in _steps(*run))


def stream_logprobs(model: Model, prompt: str = "", n: int = 500, top: int = 5, *, seed: int | None = None,
                    stop: Sequence[str] = (), state: State | None = None, unknown: str = "error",
                    options: SamplingOptions | None = None, **sampling) -> Iterator["Logprob"]:
    """One continuation of `prompt` as records, one per character of its text: the character,
    its log-probability under the distribution it was drawn from and the `top` (0 to
    MAX_TOP) likeliest characters that could have been drawn (docs/formats.md, section 4,
    step 13); other arguments as stream_batch, with one sample."""
    if not is_int(top) or not 0 <= top <= MAX_TOP:
        raise BadInput(f"{MESSAGES['logprobs']}, not {top!r}")
    run = _start(model, prompt, n, 1, seed, stop, state, unknown, sampling_options(options, sampling))
    return _records(_steps(*run, top=top))


def start_lanes(model: Model, prompt: str = "", n: int = 500, *, num_samples: int = 1, seed: int, stop=(),
                unknown: str = "error", options: SamplingOptions | None = None, top: int | None = None,
                **sampling) -> tuple["Lanes", np.ndarray, State]:
    """What stream_batch starts from, for a caller that calls the model itself (charlstm-serve
    steps many texts as one batch): the arguments checked and the prompt fed as stream_batch
    does, then the lanes, the logits they draw from first (num_samples, V) and their state.
    Drive it as the loop does: `tokens, pieces, records = lanes.draw(logits)`, then, unless
    `lanes.done`, the next logits and state from the model's step on `tokens`."""
    if top is not None and (not is_int(top) or not 0 <= top <= MAX_TOP):
        raise BadInput(f"{MESSAGES['logprobs']}, not {top!r}")
    model, logits, state, n, options, picker, recent, stop, _ = _start(
        model, prompt, n, num_samples, seed, stop, None, unknown, sampling_options(options, sampling))
    return Lanes(model, options, picker, recent, stop, n, top), logits, state


def _records(steps) -> Iterator["Logprob"]:
    """The record of each character of the text, in order: the stop matcher emits drawn
    characters in the order they came and drops those of a stop string."""
    drawn = collections.deque()
    for pieces, records in steps:
        drawn.extend(records or ())
        for _ in pieces[0]:
            yield drawn.popleft()


def _start(model, prompt, n, num_samples, seed, stop, state, unknown, options: SamplingOptions) -> tuple:
    """The checked arguments of the generation loop, the prompt fed."""
    stop = _stop_strings(stop)
    if not isinstance(prompt, str):
        raise BadInput(f"the prompt must be a string, not {type(prompt).__name__}")
    if not is_int(n) or not is_int(num_samples) or not 0 <= n <= limits.MAX_LENGTH or num_samples < 1:
        raise BadInput(f"the length must be an integer from 0 to {limits.MAX_LENGTH:,} and the number of samples"
                       " an integer >= 1")
    model.check_batch(num_samples)
    if seed is not None and (not is_int(seed) or not 0 <= seed < SEED_LIMIT):
        raise BadInput(f"the seed must be >= 0 and an integer below 2^64, not {seed!r}")
    if isinstance(state, State) and state.batch != 1:
        raise BadInput("a state to continue from must have batch 1; use State.select([lane])")
    ids = model.encode(prompt, unknown) if prompt else np.array([], np.int64)
    seed = secrets.randbits(64) if seed is None else seed
    picker = Picker(options, lane_seeds(seed, num_samples), model.vocab)
    if picker.dfa is not None and picker.dfa.distance[0] > n:
        raise BadInput(f"--regex: the shortest text matching {options.regex!r} has {picker.dfa.distance[0]} characters;"
                       f" -n is {n}")
    logits, primed = model.prime(ids if len(ids) else [model.start_token], state)
    recent = np.full((num_samples, options.repetition_window), -1, np.int64)
    recent[:, max(0, options.repetition_window - len(ids)):] = ids[-options.repetition_window:]
    return (model, np.repeat(logits, num_samples, 0), primed.select([0] * num_samples), n, options, picker, recent,
            stop, max(len(ids), 1))


def _steps(model, logits, state, n, options, picker, recent, stop, fed, top=None):
    """The generation loop, once its arguments are checked and `fed` ids of the prompt fed:
    yields each step's new text of every lane and, with `top`, the drawn characters' records."""
    lanes = Lanes(model, options, picker, recent, stop, n, top)
    while not lanes.done:
        tokens, pieces, records = lanes.draw(logits)
        yield pieces, records
        if not lanes.done:
            logits, state = model._step(tokens, state, fed + lanes.t)
    yield lanes.flush(), None


class Lanes:
    """The lanes of one text between two calls of the model: what a step draws from their
    logits, the text it lets out, when they end. The generation loop drives it one batch at a
    time; charlstm-serve drives many in one batch (each lane's logits are the same either way)."""

    def __init__(self, model: Model, options: SamplingOptions, picker: Picker, recent: np.ndarray,
                 stop: Sequence[str], n: int, top: int | None = None):
        self.model, self.options, self.picker, self.recent, self.n, self.top = model, options, picker, recent, n, top
        self.matchers = [_StopMatcher(stop) for _ in range(len(recent))]
        self.constraint = Constraint(picker.dfa, len(recent), model.start_token) if picker.dfa is not None else None
        self.t, self.done = 0, n == 0

    def draw(self, logits: np.ndarray) -> tuple[np.ndarray, list[str], list | None]:
        """logits (B, V) → the drawn ids (B,), each lane's new text and, with `top`, the records."""
        z = self.picker.scores(logits, self.recent)
        if self.constraint is not None:
            z = np.where(self.constraint.mask(self.n - self.t), z, -np.inf)  # characters that break the match: banned
        tokens = self.picker.choose(logits, z=z)  # (B,)
        records = None if self.top is None else _logprobs(self.model, z, tokens, self.options, self.top)
        pieces = _emit(self.model, self.matchers, tokens, self.constraint)
        self.t += 1
        self.done = self.t == self.n or all(m.done for m in self.matchers)
        if not self.done and self.options.repetition_penalty != 1.0:
            self.recent = np.concatenate([self.recent[:, 1:], tokens[:, None]], axis=1)
        return tokens, pieces, records

    def flush(self) -> list[str]:
        """What each lane held back for a stop string that did not come (after the last draw)."""
        return [m.flush() for m in self.matchers]

    def stopped(self) -> list[bool]:
        """Whether each lane ended at a stop string or its regex's end (else at its length)."""
        return [m.done for m in self.matchers]


def _emit(model, matchers, tokens, constraint) -> list[str]:
    """Each lane's new text: its drawn character through its stop matcher, or, where the
    constraint says the draw ended the text, what the matcher held back."""
    if constraint is None:
        return [m.push(model.vocab[tok]) if not m.done else "" for m, tok in zip(matchers, tokens.tolist())]
    ended = constraint.advance(tokens)
    return ["" if m.done else m.end() if stop else m.push(model.vocab[tok], lambda k, b=b: constraint.can_end(b, k))
            for b, (m, tok, stop) in enumerate(zip(matchers, tokens.tolist(), ended))]


@dataclass(frozen=True)
class Logprob:
    """One generated character: its id, its log-probability under the distribution it was drawn
    from, and the likeliest characters that could have been drawn, as (char, id, logprob)."""

    char: str
    id: int
    logprob: float
    top: tuple[tuple[str, int, float], ...]

    def to_dict(self) -> dict:
        return {"char": self.char, "id": self.id, "logprob": self.logprob,
                "top": [{"char": c, "id": i, "logprob": lp} for c, i, lp in self.top]}


def _logprobs(model, z, tokens, options, top) -> list[Logprob]:
    logp = log_probabilities(z, options)
    return [Logprob(model.vocab[tok], tok, float(logp[b, tok]),
                    tuple((model.vocab[i], i, float(logp[b, i])) for i in top_ids(z[b], logp[b], top)))
            for b, tok in enumerate(tokens.tolist())]


def stream(model: Model, prompt: str = "", n: int = 500, **kwargs) -> Iterator[str]:
    """One continuation of `prompt`, character by character; arguments as stream_batch."""
    return (pieces[0] for pieces in stream_batch(model, prompt, n, num_samples=1, **kwargs) if pieces[0])


def generate(model: Model, prompt: str = "", n: int = 500, **kwargs) -> str:
    """One continuation of `prompt` (without the prompt); arguments as stream_batch."""
    return "".join(stream(model, prompt, n, **kwargs))


def check_held(n, num_samples) -> None:
    """BadInput when `num_samples` texts of `n` characters, held until the end, pass limits.MAX_HELD."""
    if is_int(n) and is_int(num_samples) and num_samples > 1 and n * num_samples > limits.MAX_HELD:
        raise BadInput(f"{num_samples:,} samples of {n:,} characters, held until the last one ends, pass the cap of"
                       f" {limits.MAX_HELD:,} characters; ask for fewer or shorter samples")


def generate_batch(model: Model, prompt: str = "", n: int = 500, num_samples: int = 1,
                   **kwargs) -> list[str]:
    """`num_samples` continuations of `prompt`, computed in one batch; arguments as stream_batch.
    The texts are held until the last step: n x num_samples is at most limits.MAX_HELD."""
    check_held(n, num_samples)
    pieces = list(stream_batch(model, prompt, n, num_samples=num_samples, **kwargs))  # (steps, B)
    return ["".join(lane) for lane in zip(*pieces)]


@dataclass(frozen=True)
class Score:
    nats_per_char: float
    chars: int  # characters predicted: all but the first, which starts from zero state

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_char)

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)


def score(model: Model, text: str, unknown: str = "error", chunk: int = 4096) -> Score:
    """Mean cross-entropy of each character of `text` given those before it, from zero state."""
    ids = model.encode(text, unknown)
    if len(ids) < 2:
        raise BadInput("scoring needs a text of at least 2 known characters")
    state, total = model.new_state(1), 0.0
    for start in range(0, len(ids) - 1, chunk):
        inputs, targets = ids[start : start + chunk], ids[start + 1 : start + chunk + 1]
        logits, state = model.feed(inputs[: len(targets)], state, at=start + 1)  # (T, V)
        z = logits.astype(np.float64)
        top = z.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        total += float((log_norm - z[np.arange(len(targets)), targets]).sum())
    return Score(total / (len(ids) - 1), len(ids) - 1)
