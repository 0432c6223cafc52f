"""An exported model in onnxruntime: its metadata, vocabulary, state and single step."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from charlstm.core import formats as fmt
from charlstm.core.artifacts import prefill_path
from charlstm.core.errors import BadInput


@dataclass
class State:
    """The LSTM state of B independent streams; zero state is the start of a text."""

    h: np.ndarray  # (L, B, H) float32
    c: np.ndarray  # (L, B, H) float32

    @property
    def batch(self) -> int:
        return self.h.shape[1]

    def copy(self) -> "State":
        return State(self.h.copy(), self.c.copy())

    def select(self, lanes) -> "State":
        """The state of some lanes (indices, repeats allowed): fork or narrow a batch."""
        lanes = np.asarray(lanes, dtype=np.int64)
        return State(self.h[:, lanes], self.c[:, lanes])

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            np.savez(f, h=self.h, c=self.c)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "State":
        with np.load(path) as z:
            return cls(z["h"].astype(np.float32), z["c"].astype(np.float32))


def default_threads() -> int:
    """Intra-op threads: all cores of a small device, at most 4 (more only adds sync cost)."""
    return max(1, min(4, os.cpu_count() or 1))


class Model:
    """A charlstm ONNX model loaded in onnxruntime; everything it needs comes from the file.

    `source` is a path or the file's bytes. `prefill` is the optional prefill graph (a path or
    bytes) that feeds prompts and scores texts in one call; "auto" looks for model.prefill.onnx
    beside a model.onnx path; None never uses one. `threads` sets onnxruntime's intra-op
    threads; `session_options` and `providers` go to onnxruntime as they are."""

    def __init__(self, source: str | os.PathLike | bytes, *, prefill="auto", threads: int | None = None,
                 session_options: ort.SessionOptions | None = None, providers: list | None = None):
        self.name = "<bytes>" if isinstance(source, bytes) else str(source)
        opened = (threads, session_options, providers)
        self._session = _open_session(source, self.name, *opened)
        self.metadata = _read_metadata(self._session, self.name, fmt.GRAPH_STEP)
        self.vocab: list[str] = json.loads(self.metadata[fmt.META_VOCAB])
        self.num_layers = int(self.metadata[fmt.META_NUM_LAYERS])
        self.hidden_size = int(self.metadata[fmt.META_HIDDEN_SIZE])
        self.vocab_size = int(self.metadata[fmt.META_VOCAB_SIZE])
        self._index = {ch: i for i, ch in enumerate(self.vocab)}
        if prefill == "auto":
            beside = None if isinstance(source, bytes) else prefill_path(source)
            prefill = beside if beside is not None and beside.is_file() else None
        self._prefill = self._open_prefill(prefill, opened) if prefill is not None else None

    def _open_prefill(self, prefill, opened) -> ort.InferenceSession:
        name = "<prefill bytes>" if isinstance(prefill, bytes) else str(prefill)
        session = _open_session(prefill, name, *opened, spin_after_run=False)
        meta = _read_metadata(session, name, fmt.GRAPH_PREFILL)
        if meta[fmt.META_CHECKPOINT_SHA256] != self.metadata[fmt.META_CHECKPOINT_SHA256]:
            raise BadInput(f"{name} was exported from another checkpoint than {self.name};"
                           " export both again, or delete it")
        return session

    @property
    def has_prefill(self) -> bool:
        return self._prefill is not None

    # -- text <-> ids ----------------------------------------------------------------
    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Token ids (T,) int64; characters outside the vocabulary raise BadInput, or are
        dropped with unknown="skip"."""
        missing = sorted({ch for ch in text if ch not in self._index})
        if missing and unknown != "skip":
            shown = ", ".join(repr(ch) for ch in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise BadInput(f"text has {len(missing)} character(s) not in the model's vocabulary: {shown}")
        return np.fromiter((self._index[ch] for ch in text if ch in self._index), dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in np.asarray(ids).reshape(-1))

    @property
    def start_token(self) -> int:
        """What an empty prompt feeds first: a line break if the vocabulary has one."""
        return self._index.get("\n", 0)

    # -- stepping ----------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> State:
        shape = (self.num_layers, batch, self.hidden_size)
        return State(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def step(self, tokens, state: State) -> tuple[np.ndarray, State]:
        """One character for each of B streams: tokens (B,) → logits (B, V) and the next state."""
        feed = {fmt.INPUT_TOKENS: np.asarray(tokens, dtype=np.int64).reshape(-1),
                fmt.INPUT_H: state.h, fmt.INPUT_C: state.c}
        logits, h, c = self._session.run(fmt.OUTPUT_NAMES, feed)
        return logits, State(h, c)

    def feed(self, ids, state: State | None = None, chunk: int = 4096) -> tuple[np.ndarray, State]:
        """Feed ids (T,) to one stream: the logits after each (T, V) and the state after the
        last. One prefill-graph call per `chunk` ids when there is a prefill graph."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        state = state or self.new_state(1)
        logits = [np.zeros((0, self.vocab_size), np.float32)]
        if self._prefill is None:
            for token in ids:
                out, state = self.step(token[None], state)
                logits.append(out)
            return np.concatenate(logits), state
        for start in range(0, len(ids), chunk):
            feed = {fmt.INPUT_TOKENS: ids[start : start + chunk, None], fmt.INPUT_H: state.h, fmt.INPUT_C: state.c}
            out, h, c = self._prefill.run(fmt.OUTPUT_NAMES, feed)  # (T, 1, V)
            logits.append(out[:, 0])
            state = State(h, c)
        return np.concatenate(logits), state

    def prime(self, ids, state: State | None = None) -> tuple[np.ndarray, State]:
        """Feed a prompt's ids (T,), T ≥ 1, to one stream; the logits (1, V) after its last one."""
        if np.asarray(ids).size == 0:
            raise BadInput("prime needs at least one token")
        logits, state = self.feed(ids, state)
        return logits[-1:], state


def _read_metadata(session: ort.InferenceSession, name: str, kind: str) -> dict[str, str]:
    """The charlstm metadata of a step or prefill graph, checked against its inputs and outputs."""
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if fmt.META_FORMAT not in meta:
        raise BadInput(f"{name} is an ONNX file without charlstm metadata; make it with charlstm-export")
    if meta[fmt.META_FORMAT] != fmt.ONNX_FORMAT:
        raise BadInput(f"{name} has format {meta[fmt.META_FORMAT]!r}; this runtime reads {fmt.ONNX_FORMAT!r}")
    graph = meta.get(fmt.META_GRAPH, fmt.GRAPH_STEP)  # files without the key are step graphs
    if graph != kind:
        raise BadInput(f"{name} is a charlstm {graph} graph; give the {kind} graph")
    try:
        vocab = json.loads(meta[fmt.META_VOCAB])
        sizes = [int(meta[key]) for key in (fmt.META_NUM_LAYERS, fmt.META_HIDDEN_SIZE, fmt.META_VOCAB_SIZE)]
    except (KeyError, ValueError) as e:
        raise BadInput(f"{name} has broken charlstm metadata ({e})") from None
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if len(vocab) != sizes[2] or inputs != fmt.INPUT_NAMES or outputs != fmt.OUTPUT_NAMES:
        raise BadInput(f"{name} does not match its charlstm metadata (inputs, outputs or vocabulary)")
    return meta


def _open_session(source, name, threads, session_options, providers, spin_after_run=True) -> ort.InferenceSession:
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"model {path} does not exist" if not path.exists() else f"model {path} is not a file")
        source = str(path)
    options = session_options or _session_options(threads, spin_after_run)
    try:
        return ort.InferenceSession(source, sess_options=options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for foreign files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(f"{name} is not an ONNX model onnxruntime can load ({first[:150]})") from None


# How long onnxruntime's idle workers spin before they sleep (read by onnxruntime 1.32; older
# versions ignore it and spin ~60 ms). Long enough to span the gap between two steps (the
# sampler takes ~10 us at batch 1); short enough that the cores are free, and idle, soon after
# the last step: for the prefill call that may follow, for the app, and for a device's battery.
# bench/README.md has the measurements.
SPIN_DURATION_US = 200


def _session_options(threads: int | None, spin_after_run: bool) -> ort.SessionOptions:
    """Our defaults. The step graph's workers must spin between steps; after a prefill call they
    would take the cores from the step loop that follows (3 x 512 on 2 cores: its first 200 steps
    at 1.8x their time), so that session stops them when its call returns, on every version."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_DURATION_US))
    if not spin_after_run:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no warnings on a user's terminal
    return options
