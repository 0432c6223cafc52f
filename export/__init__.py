"""Export stage (needs the `train` extra): a checkpoint to the single-step ONNX graph, validated.

    from charlstm.export import export
    result = export("model.pt")          # writes model.onnx; result.report has the parity table
"""

from charlstm.core.errors import BadInput
from charlstm.core.lazy import lazy_exports

_API = {"export": "exporter", "ExportOptions": "exporter", "ExportResult": "exporter", "ValidationFailed": "exporter",
        "validate": "validation", "Report": "validation", "export_step_graph": "onnx_graph"}
__all__ = sorted([*_API, "BadInput"])
__getattr__ = lazy_exports(__name__, _API)
