"""An exported model in onnxruntime: its metadata checked against its graph, vocabulary, state and single step."""

import contextlib
import hashlib
import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from charlstm.core import formats as fmt
from charlstm.core import limits
from charlstm.core.artifacts import prefill_path
from charlstm.core.errors import BadInput, Note, plural
from charlstm.core.files import read_regular
from charlstm.core.onnxproto import check_self_contained


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
        """A state written by save(): h and c of one shape (L, B, H), float32. Sizes are checked
        before anything is read (limits.py): a small file cannot ask for much memory."""
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"state {path} does not exist" if not path.exists() else f"state {path} is not a file")
        try:
            with zipfile.ZipFile(path) as z:
                return cls(*_saved_arrays(z, path))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise BadInput(f"state {path} is not a state saved by State.save ({type(e).__name__})") from None


def _saved_arrays(z: zipfile.ZipFile, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """h and c of a State file, each header checked before its array is read."""
    members = {info.filename: info for info in z.infolist()}
    if sorted(members) != ["c.npy", "h.npy"]:
        raise BadInput(f"state {path} is not a state saved by State.save (it holds {sorted(members)[:4]})")
    if sum(info.file_size for info in members.values()) > limits.unpack_cap(path.stat().st_size):
        raise BadInput(f"state {path} says it unpacks to far more than its own size; it is not a saved state")
    arrays = []
    for name in ("h.npy", "c.npy"):
        with z.open(name) as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if dtype != np.float32 or len(shape) != 3 or not 0 < np.prod(shape, dtype=object) <= limits.MAX_STATE_FLOATS:
                raise BadInput(f"state {path}: {name[0]} is {dtype} {shape}, not float32 (layers, batch, hidden)"
                               f" of at most {limits.MAX_STATE_FLOATS:,} numbers")
        with z.open(name) as f:
            arrays.append(np.lib.format.read_array(f, allow_pickle=False))
    if arrays[0].shape != arrays[1].shape:
        raise BadInput(f"state {path}: h is {arrays[0].shape} but c is {arrays[1].shape}")
    return arrays[0], arrays[1]


def check_threads(threads) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or not 1 <= threads <= limits.MAX_THREADS):
        raise BadInput(f"threads must be an integer from 1 to {limits.MAX_THREADS}, not {threads!r}")


def default_threads() -> int:
    """Intra-op threads: all cores of a small device, at most 4 (more only adds sync cost)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class _Header:
    """What a graph's metadata says, once checked against the graph itself."""

    meta: dict[str, str]
    vocab: list[str]
    num_layers: int
    hidden_size: int


class Model:
    """A charlstm ONNX model loaded in onnxruntime; everything it needs comes from the file.

    `source` is a path or the file's bytes. `prefill` is the optional prefill graph (a path or
    bytes) that feeds prompts and scores texts in one call; "auto" looks for model.prefill.onnx
    beside a model.onnx path and, if it does not belong to this file (an export interrupted
    between its two files, say), leaves it aside with a Note; None never uses one. `threads`
    (1 to limits.MAX_THREADS) sets onnxruntime's intra-op threads; `session_options` and
    `providers` go to onnxruntime as they are. A file that is not self-contained (ONNX external
    data) or whose metadata disagrees with its graph is refused with BadInput, as are token ids
    and states that do not fit the model, before they reach onnxruntime."""

    def __init__(self, source: str | os.PathLike | bytes, *, prefill="auto", threads: int | None = None,
                 session_options: ort.SessionOptions | None = None, providers: list | None = None):
        check_threads(threads)
        self.name = "<bytes>" if isinstance(source, bytes) else str(source)
        opened = (threads, session_options, providers)
        data = _file_bytes(source, self.name)
        self._session = _open_session(data, self.name, *opened)
        header = _read_header(self._session, self.name, fmt.GRAPH_STEP)
        self.metadata, self.vocab = header.meta, header.vocab
        self.num_layers, self.hidden_size, self.vocab_size = header.num_layers, header.hidden_size, len(header.vocab)
        self._index = {ch: i for i, ch in enumerate(self.vocab)}
        auto = prefill == "auto"
        if auto:
            beside = None if isinstance(source, bytes) else prefill_path(source)
            prefill = beside if beside is not None and beside.is_file() else None
        self._prefill = None
        if prefill is not None:
            name = "<prefill bytes>" if isinstance(prefill, bytes) else str(prefill)
            session = _open_session(_file_bytes(prefill, name), name, *opened, spin_after_run=False)
            problem = self._pair_problem(data, _read_header(session, name, fmt.GRAPH_PREFILL), name)
            if problem is None:
                self._prefill = session
            elif auto:  # a good step graph is never refused for what lies beside it
                warnings.warn(Note(f"{problem}; prompts are fed one step at a time (export again to use it)"),
                              stacklevel=2)
            else:
                raise BadInput(f"{problem}; export both again, or load the model with prefill=None")

    def _pair_problem(self, data: bytes, header: "_Header", name: str) -> str | None:
        """Why a prefill graph does not go with this step graph, or None. A prefill graph names
        its step graph by sha256; one exported before it did, by the checkpoint they share."""
        step_sha256 = header.meta.get(fmt.META_STEP_SHA256)
        if step_sha256 is not None:
            same = step_sha256 == hashlib.sha256(data).hexdigest()
        else:
            ours, theirs = self.metadata.get(fmt.META_CHECKPOINT_SHA256), header.meta.get(fmt.META_CHECKPOINT_SHA256)
            if ours is None or theirs is None:
                return (f"{self.name if ours is None else name} has no {fmt.META_CHECKPOINT_SHA256}, so nothing says"
                        f" that {name} belongs to {self.name}")
            same = ours == theirs
        if not same or (header.vocab, header.num_layers, header.hidden_size) != (
                self.vocab, self.num_layers, self.hidden_size):
            return f"{name} was exported with another step graph than {self.name}"
        return None

    @property
    def has_prefill(self) -> bool:
        return self._prefill is not None

    # -- text <-> ids ----------------------------------------------------------------
    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Token ids (T,) int64; characters outside the vocabulary raise BadInput, or are
        dropped with unknown="skip"."""
        if unknown not in ("error", "skip"):
            raise BadInput(f"unknown must be 'error' or 'skip', not {unknown!r}")
        missing = sorted({ch for ch in text if ch not in self._index})
        if missing and unknown != "skip":
            shown = ", ".join(repr(ch) for ch in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise BadInput(f"text has {plural(len(missing), 'character')} not in the model's vocabulary: {shown}")
        return np.fromiter((self._index[ch] for ch in text if ch in self._index), dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in self._ids(ids, "ids", allow_empty=True).tolist())

    @property
    def start_token(self) -> int:
        """What an empty prompt feeds first: a line break if the vocabulary has one, else id 0."""
        return self._index.get("\n", 0)

    # -- stepping ----------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> State:
        self.check_batch(batch)
        shape = (self.num_layers, batch, self.hidden_size)
        return State(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def check_batch(self, batch) -> None:
        """BadInput unless `batch` lanes fit the caps (limits.MAX_BATCH, MAX_STATE_FLOATS)."""
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise BadInput(f"batch must be an integer >= 1, not {batch!r}")
        most = min(limits.MAX_BATCH, limits.MAX_STATE_FLOATS // (self.num_layers * self.hidden_size))
        if batch > most:
            raise BadInput(f"a batch of {batch:,} lanes is more than this model runs at once ({most:,})")

    def step(self, tokens, state: State) -> tuple[np.ndarray, State]:
        """One character for each of B streams: tokens (B,) → logits (B, V) and the next state."""
        tokens = self._ids(tokens, "tokens")
        self._check_state(state, len(tokens))
        return self._step(tokens, state)

    def _step(self, tokens: np.ndarray, state: State, at: int = 1) -> tuple[np.ndarray, State]:
        """step() for arguments known to fit (generation's own loop); `at` numbers the step in
        messages (steps of a text count from 1, its first character)."""
        feed = {fmt.INPUT_TOKENS: tokens, fmt.INPUT_H: state.h, fmt.INPUT_C: state.c}
        logits, h, c = self._run(self._session, feed, (len(tokens),), at)
        return logits, State(h, c)

    def _run(self, session: ort.InferenceSession, feed: dict, lead: tuple, at: int) -> list[np.ndarray]:
        """One call of a graph, its outputs checked: the shapes the metadata promised (lead: the
        tokens' shape) and finite logits. A file damaged in a way its header cannot show fails here."""
        try:
            outputs = session.run(fmt.OUTPUT_NAMES, feed)
        except Exception as e:  # onnxruntime's own exception types
            raise BadInput(f"{self.name} failed in onnxruntime, the file may be damaged ({_first_line(e)})") from None
        state = (self.num_layers, lead[-1], self.hidden_size)
        for name, out, shape in zip(fmt.OUTPUT_NAMES, outputs, ((*lead, self.vocab_size), state, state)):
            if out.shape != shape or out.dtype != np.float32:
                raise BadInput(f"{self.name} gave {name} of shape {out.shape} ({out.dtype}) where its metadata says"
                               f" {shape} (float32); the file is broken")
        if not np.isfinite(outputs[0]).all():
            where = np.argwhere(~np.isfinite(outputs[0]).all(axis=-1).reshape(-1, lead[-1]))[0]  # (step, lane)
            raise BadInput(f"{self.name} gave logits that are not finite numbers (NaN or infinite) at step"
                           f" {at + where[0]} of the text (lane {where[1]}); the model file is broken")
        return outputs

    def feed(self, ids, state: State | None = None, chunk: int = 4096, at: int = 1) -> tuple[np.ndarray, State]:
        """Feed ids (T,) to one stream: the logits after each (T, V) and the state after the
        last. One prefill-graph call per `chunk` ids when there is a prefill graph. `at`: the
        step number of the first id in messages."""
        ids = self._ids(ids, "ids", allow_empty=True)
        if state is None:
            state = self.new_state(1)
        self._check_state(state, 1)
        logits = [np.zeros((0, self.vocab_size), np.float32)]
        if self._prefill is None:
            for t, token in enumerate(ids):
                out, state = self._step(token[None], state, at + t)
                logits.append(out)
            return np.concatenate(logits), state
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk, None]  # (T, 1)
            feed = {fmt.INPUT_TOKENS: part, fmt.INPUT_H: state.h, fmt.INPUT_C: state.c}
            out, h, c = self._run(self._prefill, feed, part.shape, at + start)  # (T, 1, V)
            logits.append(out[:, 0])
            state = State(h, c)
        return np.concatenate(logits), state

    def prime(self, ids, state: State | None = None) -> tuple[np.ndarray, State]:
        """Feed a prompt's ids (T,), T ≥ 1, to one stream; the logits (1, V) after its last one."""
        if np.asarray(ids).size == 0:
            raise BadInput("prime needs at least one token")
        logits, state = self.feed(ids, state)
        return logits[-1:], state

    # -- checks at the edge of the API ----------------------------------------------------
    def _ids(self, ids, what: str, allow_empty: bool = False) -> np.ndarray:
        """Token ids as int64 (N,): integers in [0, vocab_size), never wrapped or truncated."""
        array = np.asarray(ids)
        if array.ndim > 1:
            raise BadInput(f"{what} must be one id or a 1-D sequence of ids, not an array of shape {array.shape}")
        array = array.reshape(-1)
        if array.size == 0:
            if allow_empty:
                return array.astype(np.int64)
            raise BadInput(f"{what} must hold at least one id")
        if array.dtype.kind not in "iu":
            raise BadInput(f"{what} must be integer token ids, not {array.dtype} values")
        low, high = array.min(), array.max()
        if low < 0 or high >= self.vocab_size:
            raise BadInput(f"{what} must lie in [0, {self.vocab_size}) for this model; got {low if low < 0 else high}")
        return array.astype(np.int64, copy=False)

    def _check_state(self, state, batch: int) -> None:
        if not isinstance(state, State):
            raise BadInput(f"state must be a charlstm State, not {type(state).__name__}")
        expected = (self.num_layers, batch, self.hidden_size)
        for name, part in (("h", state.h), ("c", state.c)):
            if not isinstance(part, np.ndarray) or part.dtype != np.float32:
                kind = part.dtype if isinstance(part, np.ndarray) else type(part).__name__
                raise BadInput(f"state.{name} must be a float32 array, not {kind}")
            if part.shape != expected:
                raise BadInput(f"state.{name} has shape {part.shape}; this model and batch need (layers, batch,"
                               f" hidden) = {expected}")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:150]


def _read_header(session: ort.InferenceSession, name: str, kind: str) -> _Header:
    """The charlstm metadata of a step or prefill graph, checked against the graph's own
    declared inputs and outputs: names, element types, layers, hidden size, vocabulary size."""
    try:
        return _checked_header(session, name, kind)
    except UnicodeDecodeError:  # onnxruntime decodes names and metadata as it hands them over
        raise BadInput(f"{name} has names or metadata that are not UTF-8 text; the file is damaged") from None


def _checked_header(session: ort.InferenceSession, name: str, kind: str) -> _Header:
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if fmt.META_FORMAT not in meta:
        raise BadInput(f"{name} is an ONNX file without charlstm metadata; make it with charlstm-export")
    if meta[fmt.META_FORMAT] != fmt.ONNX_FORMAT:
        raise BadInput(f"{name} has format {meta[fmt.META_FORMAT]!r}; this runtime reads {fmt.ONNX_FORMAT!r}")
    graph = meta.get(fmt.META_GRAPH, fmt.GRAPH_STEP)  # files without the key are step graphs
    if graph != kind:
        raise BadInput(f"{name} is a charlstm {graph} graph; give the {kind} graph")
    missing = next((key for key in SIZE_KEYS + (fmt.META_VOCAB,) if key not in meta), None)
    if missing is not None:
        raise BadInput(f"{name} has broken charlstm metadata (no {missing})")
    layers, hidden, size = (_size(meta, key, name) for key in SIZE_KEYS)
    try:
        vocab = json.loads(meta[fmt.META_VOCAB])
    except (ValueError, RecursionError) as e:
        raise BadInput(f"{name} has broken charlstm metadata ({fmt.META_VOCAB} is not a JSON list:"
                       f" {type(e).__name__})") from None
    problem = fmt.vocab_problem(vocab) or (None if len(vocab) == size else
                                           f"{fmt.META_VOCAB_SIZE} is {size} but the vocabulary holds {len(vocab)}")
    if problem:
        raise BadInput(f"{name} has broken charlstm metadata: {problem}")
    _check_io(session, name, kind, layers, hidden, size)
    return _Header(meta, vocab, layers, hidden)


SIZE_KEYS = (fmt.META_NUM_LAYERS, fmt.META_HIDDEN_SIZE, fmt.META_VOCAB_SIZE)
SIZE_CAPS = {fmt.META_NUM_LAYERS: limits.MAX_LAYERS, fmt.META_HIDDEN_SIZE: limits.MAX_HIDDEN,
             fmt.META_VOCAB_SIZE: limits.MAX_VOCAB}


def _size(meta: dict, key: str, name: str) -> int:
    """A size in the metadata: ASCII digits (limits.decimal), from 1 to its cap."""
    value = limits.decimal(meta[key])
    if value is None or not 1 <= value <= SIZE_CAPS[key]:
        raise BadInput(f"{name} has broken charlstm metadata ({key} is {meta[key][:40]!r}; sizes are written in"
                       f" ASCII digits, from 1 to {SIZE_CAPS[key]:,})")
    return value


def _check_io(session: ort.InferenceSession, name: str, kind: str, layers: int, hidden: int, vocab: int) -> None:
    """The graph's declared inputs and outputs against the contract and the metadata's sizes."""
    sequence = ["steps"] if kind == fmt.GRAPH_PREFILL else []
    state = ("tensor(float)", [layers, "batch", hidden])
    expected = {fmt.INPUT_TOKENS: ("tensor(int64)", [*sequence, "batch"]), fmt.INPUT_H: state, fmt.INPUT_C: state,
                fmt.OUTPUT_LOGITS: ("tensor(float)", [*sequence, "batch", vocab]),
                fmt.OUTPUT_H: state, fmt.OUTPUT_C: state}
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = (tuple(i.name for i in inputs), tuple(o.name for o in outputs))
    if names != (fmt.INPUT_NAMES, fmt.OUTPUT_NAMES):
        raise BadInput(f"{name} has inputs {names[0]} and outputs {names[1]}; a charlstm {kind} graph has"
                       f" {fmt.INPUT_NAMES} and {fmt.OUTPUT_NAMES}")
    for arg in [*inputs, *outputs]:
        dtype, dims = expected[arg.name]
        fits = len(arg.shape) == len(dims) and all(  # sizes as in the metadata, batch and steps free
            got == want if isinstance(want, int) else not isinstance(got, int) for got, want in zip(arg.shape, dims))
        if arg.type != dtype or not fits:
            raise BadInput(f"{name} does not match its charlstm metadata: {arg.name} is {arg.type} {arg.shape},"
                           f" the metadata says {dtype} {dims}")


def _file_bytes(source, name: str) -> bytes:
    """The bytes of a model file (a path, or bytes as they are): a regular file, read once."""
    return source if isinstance(source, bytes) else read_regular(source, "model")


def _open_session(data: bytes, name, threads, session_options, providers, spin_after_run=True) -> ort.InferenceSession:
    """A session on the file's bytes, once they are known to be self-contained: given bytes,
    onnxruntime would look for external data in the working directory."""
    check_self_contained(data, name)
    options = session_options or _session_options(threads, spin_after_run)
    try:  # onnxruntime prints "EP Error" banners on stdout when it retries a file it cannot load
        with contextlib.redirect_stdout(io.StringIO()):
            return ort.InferenceSession(data, sess_options=options,
                                        providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for foreign files
        raise BadInput(f"{name} is not an ONNX model onnxruntime can load ({_first_line(e)})") from None


def _session_options(threads: int | None, spin_after_run: bool) -> ort.SessionOptions:
    """Our defaults. The step graph's workers must spin between steps; after a prefill call they
    would take the cores from the step loop that follows (3 x 512 on 2 cores: its first 200 steps
    at 1.8x their time), so that session stops them when its call returns, on every version."""
    options = ort.SessionOptions()
    for key, value in fmt.SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    if not spin_after_run:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4  # fatal only: what the API could refuse it refuses itself, in one line
    return options
