"""ONNX files read as protobuf with no dependency: the tensors that would make onnxruntime read another file.

An ONNX tensor may keep its bytes in another file (`TensorProto.data_location` = EXTERNAL,
`external_data` naming a `location`); onnxruntime then reads that file, relative to the model's
folder or, for a model given as bytes, to the working directory. charlstm's files are
self-contained, so a runtime refuses any such tensor before onnxruntime sees the file
(docs/formats.md, "Loading"; runtime/js/src/protobuf.mjs reads the same fields).
"""

from charlstm.core.errors import BadInput

EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
TENSOR, SPARSE, GRAPH, NODE, ATTRIBUTE, FUNCTION, TRAINING = "tensor", "sparse", "graph", "node", "attr", "fn", "train"
# Where tensors live, by onnx.proto's field numbers: message kind -> {field: kind of the nested message}.
SCHEMA = {
    "model": {7: GRAPH, 20: TRAINING, 25: FUNCTION},  # ModelProto.graph, .training_info, .functions
    TRAINING: {1: GRAPH, 2: GRAPH},  # TrainingInfoProto.initialization, .algorithm
    GRAPH: {1: NODE, 5: TENSOR, 15: SPARSE},  # GraphProto.node, .initializer, .sparse_initializer
    NODE: {5: ATTRIBUTE},  # NodeProto.attribute
    FUNCTION: {7: NODE, 11: ATTRIBUTE},  # FunctionProto.node, .attribute_proto
    ATTRIBUTE: {5: TENSOR, 6: GRAPH, 10: TENSOR, 11: GRAPH, 22: SPARSE, 23: SPARSE},  # t, g, tensors, graphs, ...
    SPARSE: {1: TENSOR, 2: TENSOR},  # SparseTensorProto.values, .indices
}
TENSOR_NAME, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 8, 13, 14


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise BadInput("truncated protobuf")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(data: bytes, start: int = 0, end: int | None = None):
    """(field number, wire type, value or (start, end) of a length-delimited field) of one message."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end)
            yield field, wire, value
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise BadInput("truncated protobuf")
            yield field, wire, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise BadInput(f"protobuf wire type {wire} is not one ONNX uses")
    if pos != end:
        raise BadInput("truncated protobuf")


def external_tensor(data: bytes) -> str | None:
    """The name of the first tensor anywhere in the model (graph, subgraphs, functions, training
    graphs) that keeps its data outside the file, '' if it has no name; None if there is none.
    Raises BadInput for bytes that are not protobuf."""
    stack = [("model", 0, len(data))]  # an explicit stack: nested graphs cannot exhaust Python's
    while stack:
        kind, start, end = stack.pop()
        if kind == TENSOR:
            found = _external(data, start, end)
            if found is not None:
                return found
            continue
        nested = SCHEMA[kind]
        for field, wire, value in fields(data, start, end):
            if wire == 2 and field in nested:
                stack.append((nested[field], *value))
    return None


def _external(data: bytes, start: int, end: int) -> str | None:
    name, external = "", False
    for field, wire, value in fields(data, start, end):
        if field == TENSOR_NAME and wire == 2:
            name = data[value[0]:value[1]].decode("utf-8", "replace")
        external |= (field == TENSOR_DATA_LOCATION and wire == 0 and value == EXTERNAL) or field == TENSOR_EXTERNAL_DATA
    return name if external else None


def check_self_contained(data: bytes, name: str) -> None:
    """BadInput if the bytes are not protobuf, or would make onnxruntime read another file."""
    try:
        tensor = external_tensor(data)
    except BadInput as e:
        raise BadInput(f"{name} is not an ONNX model onnxruntime can load ({e})") from None
    if tensor is not None:
        raise BadInput(f"{name} keeps the data of tensor {tensor!r:.80} in another file (ONNX external data);"
                       " charlstm runs self-contained files only, and reads no file but the one named")
