"""An exported model in onnxruntime: its metadata, vocabulary, state and single step."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from charlstm.runtime import formats as fmt
from charlstm.runtime.common import BadInput


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

    `source` is a path or the file's bytes. `threads` sets onnxruntime's intra-op threads;
    `session_options` and `providers` are passed to onnxruntime as they are."""

    def __init__(self, source: str | os.PathLike | bytes, *, threads: int | None = None,
                 session_options: ort.SessionOptions | None = None, providers: list | None = None):
        self.name = "<bytes>" if isinstance(source, bytes) else str(source)
        self._session = _open_session(source, self.name, threads, session_options, providers)
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self._read_metadata()
        self._index = {ch: i for i, ch in enumerate(self.vocab)}

    def _read_metadata(self) -> None:
        meta, name = self.metadata, self.name
        if fmt.META_FORMAT not in meta:
            raise BadInput(f"{name} is an ONNX file without charlstm metadata; make it with charlstm-export")
        if meta[fmt.META_FORMAT] != fmt.ONNX_FORMAT:
            raise BadInput(f"{name} has format {meta[fmt.META_FORMAT]!r}; this runtime reads {fmt.ONNX_FORMAT!r}")
        try:
            self.vocab: list[str] = json.loads(meta[fmt.META_VOCAB])
            self.num_layers = int(meta[fmt.META_NUM_LAYERS])
            self.hidden_size = int(meta[fmt.META_HIDDEN_SIZE])
            self.vocab_size = int(meta[fmt.META_VOCAB_SIZE])
        except (KeyError, ValueError) as e:
            raise BadInput(f"{name} has broken charlstm metadata ({e})") from None
        inputs = tuple(i.name for i in self._session.get_inputs())
        outputs = tuple(o.name for o in self._session.get_outputs())
        if len(self.vocab) != self.vocab_size or inputs != fmt.INPUT_NAMES or outputs != fmt.OUTPUT_NAMES:
            raise BadInput(f"{name} does not match its charlstm metadata (inputs, outputs or vocabulary)")

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

    def prime(self, ids, state: State | None = None) -> tuple[np.ndarray, State]:
        """Feed a prompt's ids (T,), T ≥ 1, to one stream; the logits (1, V) after its last one."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            raise ValueError("prime needs at least one token")
        state = state or self.new_state(1)
        for token in ids:
            logits, state = self.step(token[None], state)
        return logits, state


def _open_session(source, name, threads, session_options, providers) -> ort.InferenceSession:
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"model {path} does not exist" if not path.exists() else f"model {path} is not a file")
        source = str(path)
    options = session_options or _session_options(threads)
    try:
        return ort.InferenceSession(source, sess_options=options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for foreign files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(f"{name} is not an ONNX model onnxruntime can load ({first[:150]})") from None


def _session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no warnings on a user's terminal
    return options
