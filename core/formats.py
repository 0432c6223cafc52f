"""The file-format contract: format versions, ONNX input/output names and metadata keys (docs/formats.md)."""

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
