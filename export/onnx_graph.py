"""The ONNX graphs of a model — the single-step graph and the prefill graph — with metadata, readable names, checks."""

import io
import json
import warnings

import onnx
import torch
from torch import nn

from charlstm.core import formats as fmt
from charlstm.train.model import CharLSTM

# Opset 17 runs on every onnxruntime since 1.11 (mobile and web builds included) and has all
# we use; the LSTM op has not changed since opset 14.
OPSET = 17
# The exporter is torch's TorchScript one (dynamo=False, in _export): it emits one native ONNX
# LSTM node per layer with its weights as plain initializers (what onnxruntime's int8 quantizer
# needs), keeps everything in one file, and gives the same bytes on every run. The dynamo
# exporter reorders the gate weights at run time (Slice/Concat), writes a side file by default,
# and keeps the example's length in sequence graphs (docs/formats.md, MEASURED).


class StepModule(nn.Module):
    """CharLSTM driven one character at a time, with the state as explicit inputs and outputs."""

    def __init__(self, model: CharLSTM):
        super().__init__()
        self.model = model

    def forward(self, tokens, h, c):  # (B,), (L, B, H), (L, B, H)
        logits, (h, c) = self.model(tokens[None], (h, c))  # (1, B, V)
        return logits[0], h, c


class PrefillModule(nn.Module):
    """CharLSTM over a whole sequence (a prompt, a text to score), with the same state I/O."""

    def __init__(self, model: CharLSTM):
        super().__init__()
        self.model = model

    def forward(self, tokens, h, c):  # (T, B), (L, B, H), (L, B, H)
        logits, (h, c) = self.model(tokens, (h, c))  # (T, B, V)
        return logits, h, c


def export_step_graph(model: CharLSTM, vocab: list[str], provenance: dict) -> onnx.ModelProto:
    """The model as the single-step graph of the ONNX contract, with its charlstm metadata."""
    return _export(StepModule(model), (2,), {0: fmt.BATCH_AXIS}, fmt.GRAPH_STEP, vocab, provenance)


def export_prefill_graph(model: CharLSTM, vocab: list[str], provenance: dict) -> onnx.ModelProto:
    """The optional sequence graph: tokens [steps, batch] → logits [steps, batch, vocab]."""
    axes = {0: fmt.STEPS_AXIS, 1: fmt.BATCH_AXIS}
    return _export(PrefillModule(model), (3, 2), axes, fmt.GRAPH_PREFILL, vocab, provenance)


def _export(module: nn.Module, token_shape, token_axes, kind, vocab, provenance) -> onnx.ModelProto:
    cfg = module.model.eval().config
    state = torch.zeros(cfg.num_layers, 2, cfg.hidden_size)
    axes = {fmt.INPUT_TOKENS: token_axes, fmt.OUTPUT_LOGITS: token_axes}
    axes.update({n: {1: fmt.BATCH_AXIS} for n in (fmt.INPUT_H, fmt.INPUT_C, fmt.OUTPUT_H, fmt.OUTPUT_C)})
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, (torch.zeros(token_shape, dtype=torch.long), state, state.clone()), buffer,
                          dynamo=False, opset_version=OPSET, input_names=list(fmt.INPUT_NAMES),
                          output_names=list(fmt.OUTPUT_NAMES), dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    _name_lstm_weights(proto)
    _describe(proto, cfg, kind, vocab, provenance)
    return proto


def _name_lstm_weights(proto: onnx.ModelProto) -> None:
    """Rename the exporter's `onnx::LSTM_123` initializers to lstm.l{layer}.{W,R,B}."""
    renames = {}
    for layer, node in enumerate(n for n in proto.graph.node if n.op_type == "LSTM"):
        for slot, role in zip((1, 2, 3), "WRB"):
            renames[node.input[slot]] = f"lstm.l{layer}.{role}"
    for init in proto.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]


_USAGE = {
    fmt.GRAPH_STEP: "one step for a batch of independent streams. Feed `tokens` (int64 [batch], ids"
                    " into the charlstm.vocab metadata) with `h_in`/`c_in` (float32 [num_layers, batch,"
                    " hidden_size]; zeros start a text); read `logits` (float32 [batch, vocab_size],"
                    " next-character scores) and feed `h_out`/`c_out` back as the next step's state.",
    fmt.GRAPH_PREFILL: "a whole sequence at once (prompt priming, scoring), beside the step graph. Feed"
                       " `tokens` (int64 [steps, batch]) with `h_in`/`c_in` as for the step graph; read"
                       " `logits` (float32 [steps, batch, vocab_size]) and the state after the last step.",
}


def _describe(proto: onnx.ModelProto, cfg, kind: str, vocab: list[str], provenance: dict) -> None:
    proto.doc_string = proto.graph.doc_string = (
        f"charlstm character-level LSTM ({cfg.num_layers} x {cfg.hidden_size}, {cfg.vocab_size}"
        f" characters), {_USAGE[kind]}"
    )
    proto.graph.name = f"charlstm_{kind}"
    meta = {
        fmt.META_FORMAT: fmt.ONNX_FORMAT,
        fmt.META_GRAPH: kind,
        fmt.META_VOCAB: json.dumps(vocab, ensure_ascii=False),
        fmt.META_NUM_LAYERS: str(cfg.num_layers),
        fmt.META_HIDDEN_SIZE: str(cfg.hidden_size),
        fmt.META_VOCAB_SIZE: str(cfg.vocab_size),
        fmt.META_CHECKPOINT_SHA256: provenance["checkpoint_sha256"],
        fmt.META_VAL_LOSS: provenance["val_loss"],
        fmt.META_SOURCE: provenance["source"],
    }
    onnx.helper.set_model_props(proto, meta)


def check_graph(proto: onnx.ModelProto) -> None:
    """onnx's full checker and strict shape inference; raises onnx's errors."""
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def op_inventory(proto: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
