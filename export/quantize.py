"""int8 graphs: onnxruntime's dynamic quantization of the LSTM and output-layer weights."""

import contextlib
import logging
import tempfile
from pathlib import Path

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
