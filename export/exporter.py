"""`model.pt` → `model.onnx`: export, check, validate against torch, then write atomically."""

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from charlstm.core import formats as fmt
from charlstm.core import limits
from charlstm.core.artifacts import export_outputs, onnx_path, prefill_path
from charlstm.core.errors import BadInput
from charlstm.core.files import atomic_write, check_apart, claim
from charlstm.core.onnxproto import check_self_contained
from charlstm.export.agreement import ATOL, MAX_KL, MAX_STEPS, RTOL, STEPS
from charlstm.export.foreign import CHARLSTM, read_model
from charlstm.export.onnx_graph import check_graph, export_prefill_graph, export_step_graph, op_inventory
from charlstm.export.quantize import QUANTIZERS
from charlstm.export.validation import Report, validate
from charlstm.export.vocabulary import Vocabulary, as_vocab, problem
from charlstm.train import checkpoint


class ValidationFailed(Exception):
    """The exported graph disagrees with torch beyond the tolerance; nothing was written."""

    def __init__(self, report: Report):
        super().__init__("exported graph disagrees with the torch model")
        self.report = report


@dataclass(frozen=True)
class ExportOptions:
    """How a model is exported and checked: charlstm-export's flags, each checked here."""

    validate: bool = True  # run the graphs in onnxruntime beside torch before writing them
    atol: float = ATOL  # |torch - onnxruntime| may reach atol + rtol * |torch|
    rtol: float = RTOL
    steps: int = STEPS  # autoregressive steps per validation scenario
    prefill: bool = True  # also write the prefill graph beside the step graph
    quantize: str | None = None  # None, "int8" (int8 arithmetic) or "int8-weights" (int8 storage)
    max_kl: float = MAX_KL  # int8: the largest mean KL divergence from torch, nats/char
    max_params: int = limits.MAX_PARAMETERS  # the largest model read
    vocab: Vocabulary | None = None  # for a file without one (characters in id order are made a Vocabulary)
    vocab_key: str | None = None  # which of the file's vocabularies, where it holds several

    def __post_init__(self) -> None:
        if self.vocab is not None and not isinstance(self.vocab, Vocabulary):
            given = as_vocab(self.vocab, "the vocabulary given")
            if given is None:
                raise BadInput(f"the vocabulary given is not one: {problem(self.vocab)}")
            object.__setattr__(self, "vocab", given)
        checks = [
            (all(isinstance(x, bool) for x in (self.validate, self.prefill)), "validate and prefill must be True or False"),
            (all(_is_number(x) and x >= 0 for x in (self.atol, self.rtol, self.max_kl)),
             "--atol, --rtol and --max-kl must be numbers >= 0"),
            (_is_int(self.steps) and 1 <= self.steps <= MAX_STEPS, f"--steps must be an integer from 1 to {MAX_STEPS:,}"),
            (self.quantize is None or self.quantize in QUANTIZERS,
             f"--quantize must be {' or '.join(QUANTIZERS)}, not {self.quantize!r}"),
            (_is_int(self.max_params) and self.max_params >= 1, "--max-params must be an integer of at least 1"),
            (self.vocab_key is None or (isinstance(self.vocab_key, str) and self.vocab_key != ""),
             "--vocab-key must be a name"),
            (self.vocab is None or self.vocab_key is None, "give --vocab-key or a vocabulary (--vocab, --vocab-corpus),"
                                                           " not both"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInput(message)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class ExportResult:
    path: Path
    size: int
    ops: dict[str, int]
    report: Report | None  # None with validate=False
    prefill: Path | None = None  # the prefill graph written beside, if any
    source: str = CHARLSTM  # what the file was: export.foreign's kinds
    vocab_found: bool = True  # the vocabulary came from the file, not from the options
    conversion: tuple[str, ...] = ()  # for a foreign file: what it was read as (foreign.conversion)


def export(checkpoint_path: str | Path, out: str | Path | None = None, options: ExportOptions | None = None, *,
           inputs: dict | None = None, **overrides) -> ExportResult:
    """Export a model to the single-step ONNX graph (and, with `options.prefill`, the sequence
    graph beside it: model.prefill.onnx); raises ValidationFailed (and writes nothing) when
    onnxruntime and torch disagree by more than atol + rtol * |torch| or, with quantize="int8",
    when the next-character distributions differ by more than `max_kl` nats per character.

    `checkpoint_path` is a charlstm checkpoint or a model trained elsewhere (export.foreign: a
    state_dict, a dict holding one, a pickled model, TorchScript), read once. `options`
    (default ExportOptions()) with the fields named in `overrides` replaced say how; `inputs`
    names other files the export read (the CLI's vocabulary files): like the checkpoint, none
    of them is ever an output."""
    options = dataclasses.replace(options or ExportOptions(), **overrides)
    out = Path(out or onnx_path(checkpoint_path, options.quantize))
    # the prefill path too: even --no-prefill removes a stale file there
    check_apart(export_outputs(out), {"the checkpoint": checkpoint_path, **(inputs or {})})
    with claim(export_outputs(out)):
        return _export(checkpoint_path, out, options)


def _export(checkpoint_path, out: Path, options: ExportOptions) -> ExportResult:
    found = read_model(checkpoint_path, options.vocab, options.vocab_key, options.max_params)
    ckpt = found.ckpt
    model = checkpoint.build_model(ckpt, options.max_params)
    provenance = {"checkpoint_sha256": found.sha256, "val_loss": repr(float(ckpt.train.val_loss)),
                  "source": found.kind}
    proto = export_step_graph(model, ckpt.vocab, provenance)
    check_graph(proto)
    ops = op_inventory(proto)
    data, prefill_data = proto.SerializeToString(), None
    if options.prefill:
        prefill_proto = export_prefill_graph(model, ckpt.vocab, provenance)
        check_graph(prefill_proto)
        prefill_data = prefill_proto.SerializeToString()
    if options.quantize:
        quantize = QUANTIZERS[options.quantize]
        data, prefill_data = quantize(data), prefill_data and quantize(prefill_data)
        ops = op_inventory(onnx.load_from_string(data))
    report = None
    if options.validate:
        report = validate(model, data, atol=options.atol, steps=options.steps, prefill_bytes=prefill_data,
                          max_kl=options.max_kl if options.quantize else None, rtol=options.rtol)
    if report is not None and not report.ok:
        raise ValidationFailed(report)
    if prefill_data is not None:
        prefill_data = _naming_step(prefill_data, data)
    _write_pair(out, data, prefill_data)
    return ExportResult(out, len(data), ops, report, prefill_path(out) if prefill_data else None, found.kind,
                        found.vocab_found, found.report)


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
