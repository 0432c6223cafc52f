"""Artifact names: where each file of a run lives, derived from the one path the user names."""

import os
from pathlib import Path

from charlstm.core.errors import BadInput
from charlstm.core.files import check_apart

LATEST = ".last"  # model.pt → model.last.pt, the resumable checkpoint
CURVE = ".loss.png"  # model.pt → model.loss.png, the loss curve
ONNX = ".onnx"  # model.pt → model.onnx, the exported step graph
PREFILL = ".prefill.onnx"  # model.onnx → model.prefill.onnx, its optional prefill graph
QUANTIZED = ".{kind}.onnx"  # model.pt → model.int8.onnx with --quantize int8
QUANTIZE_KINDS = ("int8", "int8-weights")  # int8 arithmetic; int8 storage (export/quantize.py)


def latest_path(out: str | Path) -> Path:
    """The resumable checkpoint of a run writing `out`: model.pt → model.last.pt."""
    out = Path(out)
    return out.with_name(out.stem + LATEST + (out.suffix or ".pt"))


def curve_path(out: str | Path) -> Path:
    """The loss curve of a run writing `out`: model.pt → model.loss.png."""
    out = Path(out)
    return out.with_name(out.stem + CURVE)


def onnx_path(checkpoint: str | Path, quantize: str | None = None) -> Path:
    """Where an export of `checkpoint` goes by default: model.pt → model.onnx (model.int8.onnx)."""
    return Path(checkpoint).with_suffix(QUANTIZED.format(kind=quantize) if quantize else ONNX)


def prefill_path(step: str | Path) -> Path:
    """The prefill graph that goes with a step graph: model.onnx → model.prefill.onnx."""
    step = Path(step)
    return step.with_name(step.name.removesuffix(ONNX) + PREFILL)


def _named(out: str | Path) -> Path:
    """An output path that names a file (not '' or a folder's '.'), as every derived name needs."""
    if not Path(out).name:
        raise BadInput(f"the output path {str(out)!r} names no file; choose a file name (-o model.pt)")
    return Path(out)


def train_outputs(out: str | Path) -> list[Path]:
    """Every file a training run writing `out` writes: the best and the resumable checkpoints, the curve."""
    out = _named(out)
    return [out, latest_path(out), curve_path(out)]


def check_train_paths(corpus, out, resume=None) -> None:
    """BadInput if a file a training run writes is its corpus or (unless it is the run's own
    resumable checkpoint, which a resumed run rewrites) the checkpoint it resumes."""
    inputs = {"the corpus": corpus}
    if resume is not None and os.path.realpath(resume) != os.path.realpath(latest_path(out)):
        inputs["the checkpoint to resume"] = resume
    check_apart(train_outputs(out), inputs)


def export_outputs(out: str | Path) -> list[Path]:
    """Every file an export writing `out` writes, or removes (a prefill graph it does not replace)."""
    out = _named(out)
    return [out, prefill_path(out)]
