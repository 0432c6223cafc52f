"""`model.pt` → `model.onnx`: export, check, validate against torch, then write atomically."""

from dataclasses import dataclass
from pathlib import Path

from charlstm.export.onnx_graph import check_graph, export_step_graph, op_inventory
from charlstm.export.validation import DEFAULT_ATOL, Report, validate
from charlstm.runtime.common import BadInput, atomic_write, check_writable_destination, sha256_file
from charlstm.train import checkpoint


class ValidationFailed(Exception):
    """The exported graph disagrees with torch beyond the tolerance; nothing was written."""

    def __init__(self, report: Report):
        super().__init__("exported graph disagrees with the torch model")
        self.report = report


@dataclass
class ExportResult:
    path: Path
    size: int
    ops: dict[str, int]
    report: Report | None  # None with validate=False


def default_output(checkpoint_path: str | Path) -> Path:
    """model.pt → model.onnx, beside it."""
    return Path(checkpoint_path).with_suffix(".onnx")


def export(checkpoint_path: str | Path, out: str | Path | None = None, *, validate_graph: bool = True,
           atol: float = DEFAULT_ATOL, steps: int = 300) -> ExportResult:
    """Export a checkpoint to the single-step ONNX graph; raises ValidationFailed (and writes
    nothing) when onnxruntime and torch disagree by more than `atol`."""
    if not atol >= 0:
        raise BadInput("--atol must be >= 0")
    out = check_writable_destination(out or default_output(checkpoint_path))
    ckpt = checkpoint.load(checkpoint_path)
    model = checkpoint.build_model(ckpt)
    provenance = {"checkpoint_sha256": sha256_file(checkpoint_path),
                  "val_loss": repr(float(ckpt["train"].get("val_loss", float("nan"))))}
    proto = export_step_graph(model, ckpt["vocab"], provenance)
    check_graph(proto)
    data = proto.SerializeToString()
    report = validate(model, data, atol=atol, steps=steps) if validate_graph else None
    if report is not None and not report.ok:
        raise ValidationFailed(report)
    with atomic_write(out) as f:
        f.write(data)
    return ExportResult(out, len(data), op_inventory(proto), report)
