"""int8 graphs: onnxruntime's dynamic quantization (int8 arithmetic), or int8 storage of the weights alone."""

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from charlstm.core.artifacts import QUANTIZE_KINDS

# LSTM → com.microsoft DynamicQuantizeLSTM (int8 weights, needs them as plain initializers,
# which the TorchScript exporter gives); MatMul → MatMulInteger with activations quantized per
# call. The embedding (a Gather) stays float: it is read one row per step.
QUANTIZED_OPS = ["LSTM", "MatMul"]


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """The same graph, I/O and metadata, with int8 weights (signed, per tensor)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger(), tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
        return dst.read_bytes()


# Matrices smaller than this stay float: their scales would cost more than they save.
SMALLEST_QUANTIZED = 1024


def quantize_weights(onnx_bytes: bytes) -> bytes:
    """The same graph, I/O and metadata, with every float weight matrix stored as int8 and a
    DequantizeLinear before its use: symmetric, one scale per row (per gate row of an LSTM's W
    and R). A quarter of the size; onnxruntime folds the DequantizeLinear when it makes the
    session (with session.disable_quant_qdq, core.formats.SESSION_CONFIG), after which every
    step is the fp32 graph's, with the rounded weights. Standard ONNX operators only."""
    proto = onnx.load_from_string(onnx_bytes)
    graph = proto.graph
    chosen = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2
              and min(t.dims[-2:]) >= 2 and np.prod(t.dims) >= SMALLEST_QUANTIZED]  # not the biases (1, 8H)
    nodes = []
    for tensor in chosen:
        w = numpy_helper.to_array(tensor)  # (..., R, C): rows along axis ndim - 2
        axis = w.ndim - 2
        scale = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis)) / 127  # (R,)
        scale = np.where(scale > 0, scale, 1).astype(np.float32)
        rows = scale.reshape([-1 if a == axis else 1 for a in range(w.ndim)])
        q = np.clip(np.rint(w / rows), -127, 127).astype(np.int8)
        name = tensor.name
        graph.initializer.remove(tensor)
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}.int8"),
                                  numpy_helper.from_array(scale, f"{name}.scale"),
                                  numpy_helper.from_array(np.zeros_like(q, shape=scale.shape), f"{name}.zero")])
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}.int8", f"{name}.scale", f"{name}.zero"], [name],
                                      name=f"{name}.dequantize", axis=axis))
    users = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + users)  # the dequantizing first: the graph stays topologically sorted
    return proto.SerializeToString()


QUANTIZERS = dict(zip(QUANTIZE_KINDS, (quantize_int8, quantize_weights)))


@contextlib.contextmanager
def _quiet_root_logger():
    """The quantizer logs its advice to pre-process through the root logger; silence it for
    this call only, and give the application its logging back afterwards."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
