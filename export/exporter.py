"""`model.pt` → `model.onnx`: export, check, validate against torch, then write atomically."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import onnx

from charlstm.core import formats as fmt
from charlstm.core import limits
from charlstm.core.artifacts import export_outputs, onnx_path, prefill_path
from charlstm.core.errors import BadInput
from charlstm.core.files import atomic_write, check_apart, claim, sha256_file
from charlstm.core.onnxproto import check_self_contained
from charlstm.export.agreement import ATOL, MAX_KL, RTOL, STEPS
from charlstm.export.foreign import CHARLSTM, read_model
from charlstm.export.onnx_graph import check_graph, export_prefill_graph, export_step_graph, op_inventory
from charlstm.export.quantize import quantize_int8
from charlstm.export.validation import Report, validate
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
    source: str = CHARLSTM  # what the file was: export.foreign's kinds
    vocab_found: bool = True  # the vocabulary came from the file, not from `vocab`


def export(checkpoint_path: str | Path, out: str | Path | None = None, *, validate_graph: bool = True,
           atol: float = ATOL, steps: int = STEPS, prefill: bool = True, quantize: str | None = None,
           max_kl: float = MAX_KL, rtol: float = RTOL, vocab: list[str] | None = None,
           max_params: int = limits.MAX_PARAMETERS, inputs: dict | None = None) -> ExportResult:
    """Export a model to the single-step ONNX graph (and, with `prefill`, the sequence graph
    beside it: model.prefill.onnx); raises ValidationFailed (and writes nothing) when
    onnxruntime and torch disagree by more than atol + rtol * |torch| or, with quantize="int8",
    when the next-character distributions differ by more than `max_kl` nats per character.

    `checkpoint_path` is a charlstm checkpoint or a model trained elsewhere (export.foreign: a
    state_dict, a dict holding one, a pickled model, TorchScript); `vocab` (characters in id
    order) gives the vocabulary of a file that has none. A model of more than `max_params`
    weights is refused before it is built. `inputs` names other files the export read (the
    CLI's vocabulary files): like the checkpoint, none of them is ever an output."""
    if not (atol >= 0 and rtol >= 0 and max_kl >= 0):
        raise BadInput("--atol, --rtol and --max-kl must be >= 0")
    if quantize not in (None, "int8"):
        raise BadInput(f"--quantize must be int8, not {quantize!r}")
    out = Path(out or onnx_path(checkpoint_path, quantize))
    # the prefill path too: even --no-prefill removes a stale file there
    check_apart(export_outputs(out), {"the checkpoint": checkpoint_path, **(inputs or {})})
    with claim(export_outputs(out)):
        return _export(checkpoint_path, out, validate_graph, atol, rtol, steps, prefill, quantize, max_kl, vocab,
                       max_params)


def _export(checkpoint_path, out: Path, validate_graph, atol, rtol, steps, prefill, quantize, max_kl,
            vocab, max_params) -> ExportResult:
    found = read_model(checkpoint_path, vocab, max_params)
    ckpt = found.ckpt
    model = checkpoint.build_model(ckpt, max_params)
    provenance = {"checkpoint_sha256": sha256_file(checkpoint_path), "val_loss": repr(float(ckpt.train.val_loss)),
                  "source": found.kind}
    proto = export_step_graph(model, ckpt.vocab, provenance)
    check_graph(proto)
    ops = op_inventory(proto)
    data, prefill_data = proto.SerializeToString(), None
    if prefill:
        prefill_proto = export_prefill_graph(model, ckpt.vocab, provenance)
        check_graph(prefill_proto)
        prefill_data = prefill_proto.SerializeToString()
    if quantize:
        data, prefill_data = quantize_int8(data), prefill_data and quantize_int8(prefill_data)
        ops = op_inventory(onnx.load_from_string(data))
    report = None
    if validate_graph:
        report = validate(model, data, atol=atol, steps=steps, prefill_bytes=prefill_data,
                          max_kl=max_kl if quantize else None, rtol=rtol)
    if report is not None and not report.ok:
        raise ValidationFailed(report)
    if prefill_data is not None:
        prefill_data = _naming_step(prefill_data, data)
    _write_pair(out, data, prefill_data)
    return ExportResult(out, len(data), ops, report, prefill_path(out) if prefill_data else None, found.kind,
                        found.vocab_found)


def _naming_step(prefill_data: bytes, data: bytes) -> bytes:
    """The prefill graph with the sha256 of the step graph it goes with in its metadata."""
    proto = onnx.load_from_string(prefill_data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = fmt.META_STEP_SHA256, hashlib.sha256(data).hexdigest()
    return proto.SerializeToString()


def _write_pair(out: Path, data: bytes, prefill_data: bytes | None) -> None:
    """Write the step graph, then the prefill graph that names it by sha256; an old prefill
    file of `out` that this export does not replace is removed first. Interrupted anywhere, a
    reader finds a pair that matches or a prefill graph that names another step graph, which
    runtimes leave aside (docs/formats.md): never a mismatched pair in use."""
    for graph, name in ((data, out), (prefill_data, prefill_path(out))):
        if graph is not None:
            check_self_contained(graph, str(name))  # never a file that reads another
    beside = prefill_path(out)
    if prefill_data is None:
        beside.unlink(missing_ok=True)
    with atomic_write(out) as f:
        f.write(data)
    if prefill_data is not None:
        with atomic_write(beside) as f:
            f.write(prefill_data)
