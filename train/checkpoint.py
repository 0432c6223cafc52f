"""The checkpoint file `model.pt`: writing it atomically, reading and checking it safely."""

import re
from pathlib import Path

import torch

from charlstm.runtime.common import BadInput, atomic_write
from charlstm.runtime.formats import CHECKPOINT_FORMAT
from charlstm.train.config import ModelConfig
from charlstm.train.model import CharLSTM


def save(path: str | Path, payload: dict) -> None:
    """Write a checkpoint dict (tensors moved to the CPU) atomically."""
    with atomic_write(path) as f:
        torch.save(_to_cpu(payload), f)


def _to_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def load(path: str | Path) -> dict:
    """Read and check a charlstm checkpoint; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise BadInput(f"{path} is not a readable charlstm checkpoint ({_reason(e)})") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise BadInput(f"{path} is not a charlstm checkpoint (no 'format' key)")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise BadInput(
            f"{path} has format {ckpt['format']!r}; this charlstm reads {CHECKPOINT_FORMAT!r}"
        )
    missing = {"config", "vocab", "state_dict", "train"} - ckpt.keys()
    if missing:
        raise BadInput(f"{path} is not a complete charlstm checkpoint (missing {', '.join(sorted(missing))})")
    return ckpt


def _reason(e: Exception) -> str:
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    if unsafe:
        return f"it holds a pickled {unsafe.group(1)}, and charlstm loads tensors and plain data only"
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:120]


def build_model(ckpt: dict) -> CharLSTM:
    """The model a checkpoint describes, with its weights, in eval mode on the CPU."""
    try:
        model = CharLSTM(ModelConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise BadInput(f"checkpoint config and weights disagree ({str(e).splitlines()[0][:120]})") from None
    if len(ckpt["vocab"]) != model.config.vocab_size:
        raise BadInput("checkpoint vocabulary size disagrees with its config")
    broken = [name for name, w in model.state_dict().items() if not torch.isfinite(w).all()]
    if broken:
        raise BadInput(f"checkpoint has NaN or infinite weights ({', '.join(broken[:3])}): its training"
                       " diverged; train again with a lower --lr")
    return model.eval()
