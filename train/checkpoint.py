"""The checkpoint file `model.pt` (docs/formats.md): its keys are written and read here, nowhere else."""

import dataclasses
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.core import limits
from charlstm.core.errors import BadInput
from charlstm.core.files import atomic_write, read_regular
from charlstm.core.formats import CHECKPOINT_FORMAT, vocab_problem
from charlstm.train import safeload
from charlstm.train.config import ModelConfig
from charlstm.train.model import CharLSTM

REQUIRED = ("config", "vocab", "state_dict", "train")
RESUMABLE = ("optimizer", "rng", "resume")


@dataclass
class Record:
    """The run that made the weights (the file's `train` dict): provenance, losses, history."""

    corpus_sha256: str = ""
    split: dict = field(default_factory=dict)  # val_fraction, train_chars, val_chars
    step: int = 0
    epoch: float = 0.0  # fractional
    train_loss: float = math.nan  # nats/char, mean since the previous validation
    val_loss: float = math.nan  # nats/char on the held-out tail
    seed: int = 0
    options: dict = field(default_factory=dict)  # TrainOptions.to_dict()
    versions: dict = field(default_factory=dict)
    device: str = "cpu"
    seconds: float = 0.0  # training wall time
    history: list = field(default_factory=list)  # one dict per validation: step, train_loss, val_loss, seconds


@dataclass
class Resume:
    """What a resumable checkpoint (`*.last.pt`) adds: optimizer, random and data state."""

    optimizer: dict
    rng: dict  # {"torch": ByteTensor, "cuda": ByteTensor | None}
    step: int
    best_val: float
    history: list
    losses: list  # training losses since the last validation
    h: torch.Tensor | None  # (L, B, H), the carried lane state; None at an epoch's start
    c: torch.Tensor | None
    threads: int | None = None  # torch's intra-op threads: another count sums in another order
    average: list | None = None  # with TrainOptions.ema: the averaged weights, in parameters() order


@dataclass
class Checkpoint:
    config: ModelConfig
    vocab: list[str]
    state_dict: dict[str, torch.Tensor]
    train: Record = field(default_factory=Record)
    resume: Resume | None = None  # only in the resumable checkpoint

    @classmethod
    def of(cls, model: CharLSTM, vocab: list[str], record: Record | None = None) -> "Checkpoint":
        """A checkpoint of a model's current weights (for a model not trained by a run: Record())."""
        return cls(model.config, list(vocab), model.state_dict(), record or Record())

    def to_dict(self) -> dict:
        payload = {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "vocab": list(self.vocab),
                   "state_dict": self.state_dict, "train": _fields(self.train)}
        if self.resume is not None:
            r = _fields(self.resume)
            payload["optimizer"], payload["rng"] = r.pop("optimizer"), r.pop("rng")
            payload["resume"] = r
        return payload


def _fields(obj) -> dict:
    """A dataclass as a dict, values shared, not copied (dataclasses.asdict deep-copies tensors)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def save(path: str | Path, ckpt: Checkpoint) -> None:
    """Write a checkpoint (tensors moved to the CPU) atomically."""
    buffer = io.BytesIO()  # torch's own writer reports a full disk as RuntimeError; a plain write, as OSError
    torch.save(_to_cpu(ckpt.to_dict()), buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def _to_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def load(path: str | Path) -> Checkpoint:
    """Read and check a charlstm checkpoint; never unpickles arbitrary objects."""
    path = Path(path)
    data = read_regular(path, "checkpoint")
    try:
        d = safeload.load(data, path)
    except BadInput:
        raise
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise BadInput(f"{path} is not a readable charlstm checkpoint ({reason(data, e)})") from None
    if not isinstance(d, dict) or "format" not in d:
        raise BadInput(f"{path} is not a charlstm checkpoint (no 'format' key)")
    return from_content(d, path)


def from_content(d: dict, path: Path) -> Checkpoint:
    """The checkpoint in what torch.load read from `path`: a dict with a `format` key."""
    if d["format"] != CHECKPOINT_FORMAT:
        raise BadInput(f"{path} has format {d['format']!r}; this charlstm reads {CHECKPOINT_FORMAT!r}")
    missing = set(REQUIRED) - d.keys()
    if missing:
        raise BadInput(f"{path} is not a complete charlstm checkpoint (missing {', '.join(sorted(missing))})")
    try:
        return Checkpoint(ModelConfig.from_dict(d["config"]), list(d["vocab"]), d["state_dict"],
                          _record(d["train"]), _resume(d) if set(RESUMABLE) <= d.keys() else None)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInput(f"{path} is not a well-formed charlstm checkpoint ({type(e).__name__}: {str(e)[:100]})") from None


def _record(d: dict) -> Record:
    return Record(**{f.name: d[f.name] for f in dataclasses.fields(Record) if f.name in d})


def _resume(d: dict) -> Resume:
    return Resume(optimizer=d["optimizer"], rng=d["rng"], **d["resume"])


def reason(data: bytes, e: Exception) -> str:
    """Why torch could not read a file of these bytes, in a few words a user can act on."""
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    if unsafe:
        return f"it holds a pickled {unsafe.group(1)}, and charlstm loads tensors and plain data only"
    if data[:4] == b"PK\x03\x04":  # torch.save's zip container
        return "it is truncated or damaged: torch cannot read its zip archive"
    if not data.startswith(b"\x80"):
        return "it is not a file written by torch.save"
    return f"it is a plain pickle, not a checkpoint of tensors and plain data ({first_sentence(str(e))})"


def first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of a library's message, without terminal colours, cut at a word."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    sentence = re.split(r"(?<=\.)\s|\n", text, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + " ..."


def build_model(ckpt: Checkpoint, max_params: int = limits.MAX_PARAMETERS) -> CharLSTM:
    """The model a checkpoint describes, with its weights, in eval mode on the CPU; its size
    is checked against `max_params` before it is built."""
    ckpt.config.check_size(max_params)
    if not isinstance(ckpt.state_dict, dict):
        raise BadInput(f"the checkpoint's state_dict is a {type(ckpt.state_dict).__name__}, not a dict of tensors")
    for name, value in ckpt.state_dict.items():
        safeload.check_weight(name, value, "checkpoint")
    model = CharLSTM(ckpt.config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in ckpt.state_dict]
    unexpected = [k for k in ckpt.state_dict if k not in expected]
    misshapen = [f"{k} {tuple(v.shape)} (config: {tuple(expected[k].shape)})" for k, v in ckpt.state_dict.items()
                 if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or misshapen:
        found = [f"missing {', '.join(missing[:5])}" if missing else "",
                 f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
                 f"of another shape {', '.join(misshapen[:3])}" if misshapen else ""]
        raise BadInput(f"checkpoint config and weights disagree: {'; '.join(f for f in found if f)}")
    model.load_state_dict(ckpt.state_dict)
    if len(ckpt.vocab) != ckpt.config.vocab_size:
        raise BadInput("checkpoint vocabulary size disagrees with its config")
    problem = vocab_problem(ckpt.vocab)
    if problem:
        raise BadInput(f"checkpoint: {problem}")
    broken = [name for name, w in model.state_dict().items() if not torch.isfinite(w).all()]
    if broken:
        raise BadInput(f"checkpoint has NaN or infinite weights ({', '.join(broken[:3])}): its training"
                       " diverged; train again with a lower --lr")
    return model.eval()
