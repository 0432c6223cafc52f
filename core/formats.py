"""The file-format contract: format versions, ONNX input/output names and metadata keys (docs/formats.md)."""

import collections

CHECKPOINT_FORMAT = "charlstm-checkpoint/1"
ONNX_FORMAT = "charlstm-onnx/1"

# The single-step graph: one character in, next-character logits and the next state out.
INPUT_TOKENS = "tokens"  # int64 (B,)
INPUT_H = "h_in"  # float32 (L, B, H)
INPUT_C = "c_in"  # float32 (L, B, H)
OUTPUT_LOGITS = "logits"  # float32 (B, V)
OUTPUT_H = "h_out"  # float32 (L, B, H)
OUTPUT_C = "c_out"  # float32 (L, B, H)
INPUT_NAMES = (INPUT_TOKENS, INPUT_H, INPUT_C)
OUTPUT_NAMES = (OUTPUT_LOGITS, OUTPUT_H, OUTPUT_C)
BATCH_AXIS = "batch"

# The optional prefill graph, written beside the step graph (artifacts.prefill_path): the same
# names, with tokens [steps, batch] and logits [steps, batch, vocab_size].
STEPS_AXIS = "steps"
GRAPH_STEP = "step"
GRAPH_PREFILL = "prefill"

# metadata_props of the ONNX file: everything a runtime needs, as strings.
META_FORMAT = "charlstm.format"
META_GRAPH = "charlstm.graph"  # GRAPH_STEP or GRAPH_PREFILL
META_VOCAB = "charlstm.vocab"  # JSON list of characters, index = token id
META_NUM_LAYERS = "charlstm.num_layers"
META_HIDDEN_SIZE = "charlstm.hidden_size"
META_VOCAB_SIZE = "charlstm.vocab_size"
META_CHECKPOINT_SHA256 = "charlstm.checkpoint_sha256"
META_VAL_LOSS = "charlstm.val_loss"
META_SOURCE = "charlstm.source"  # what was exported: a charlstm checkpoint, a state_dict, a pickled model, ...
META_STEP_SHA256 = "charlstm.step_sha256"  # in a prefill graph: the sha256 of the step graph file it goes with


# onnxruntime session entries every runtime sets (docs/formats.md, section 1). How long idle
# workers spin before they sleep: long enough to span the gap between two steps (the sampler
# takes ~10 us at batch 1), short enough that the cores are free soon after the last one
# (bench/README.md); onnxruntime 1.32 reads it, older versions ignore it. And the folding of
# DequantizeLinear on constant weights when the session is made (onnxruntime skips it by
# default, to keep QDQ patterns for int8 kernels): an int8-weights file then runs at fp32 speed.
SESSION_CONFIG = {"session.intra_op.spin_duration_us": "200", "session.disable_quant_qdq": "1"}


def vocab_problem(vocab) -> str | None:
    """Why `vocab` is not a valid vocabulary (a list of distinct single characters, index = token
    id), or None. Checked at export and when a runtime loads a model."""
    if not isinstance(vocab, list) or not vocab:
        return "the vocabulary is not a non-empty list"
    bad = next((v for v in vocab if not isinstance(v, str) or len(v) != 1), None)
    if bad is not None:
        return f"the vocabulary holds {bad!r}, which is not a single character"
    lone = next((v for v in vocab if "\ud800" <= v <= "\udfff"), None)
    if lone is not None:
        return f"the vocabulary holds {lone!r}, half of a UTF-16 pair, which no UTF-8 text holds"
    twice = sorted(v for v, n in collections.Counter(vocab).items() if n > 1)
    if twice:
        return f"the vocabulary holds {', '.join(map(repr, twice[:5]))} more than once"
    return None

