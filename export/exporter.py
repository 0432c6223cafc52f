"""`model.pt` → `model.onnx`: export, check, validate against torch, then write atomically."""

from dataclasses import dataclass
from pathlib import Path

from charlstm.export.onnx_graph import check_graph, export_prefill_graph, export_step_graph, op_inventory
from charlstm.export.validation import DEFAULT_ATOL, Report, validate
from charlstm.runtime.common import BadInput, atomic_write, check_writable_destination, sha256_file
from charlstm.runtime.model import prefill_path
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
    prefill: Path | None = None  # the prefill graph written beside, if any


def default_output(checkpoint_path: str | Path) -> Path:
    """model.pt → model.onnx, beside it."""
    return Path(checkpoint_path).with_suffix(".onnx")


def export(checkpoint_path: str | Path, out: str | Path | None = None, *, validate_graph: bool = True,
           atol: float = DEFAULT_ATOL, steps: int = 300, prefill: bool = True) -> ExportResult:
    """Export a checkpoint to the single-step ONNX graph (and, with `prefill`, the sequence
    graph beside it: model.prefill.onnx); raises ValidationFailed (and writes nothing) when
    onnxruntime and torch disagree by more than `atol`."""
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
    prefill_data = None
    if prefill:
        prefill_proto = export_prefill_graph(model, ckpt["vocab"], provenance)
        check_graph(prefill_proto)
        prefill_data = prefill_proto.SerializeToString()
    report = validate(model, data, atol=atol, steps=steps, prefill_bytes=prefill_data) if validate_graph else None
    if report is not None and not report.ok:
        raise ValidationFailed(report)
    _write_pair(out, data, prefill_data)
    return ExportResult(out, len(data), op_inventory(proto), report,
                        prefill_path(out) if prefill_data else None)


def _write_pair(out: Path, data: bytes, prefill_data: bytes | None) -> None:
    """Write the step graph and its prefill graph; an old prefill file of `out` that this
    export does not replace is removed, so that the pair always comes from one checkpoint."""
    beside = prefill_path(out)
    if prefill_data is None:
        beside.unlink(missing_ok=True)
    else:
        with atomic_write(beside) as f:
            f.write(prefill_data)
    with atomic_write(out) as f:
        f.write(data)
