// The parts of an ONNX ModelProto a runtime needs, read with no dependency: metadata_props and
// the graph's declared inputs and outputs (onnxruntime's JavaScript API does not expose the
// former). Field numbers from onnx.proto: ModelProto.graph = 7, .metadata_props = 14;
// GraphProto.initializer = 5, .input = 11, .output = 12; ValueInfoProto.name = 1, .type = 2;
// TypeProto.tensor_type = 1; Tensor.elem_type = 1, .shape = 2; TensorShapeProto.dim = 1;
// Dimension.dim_value = 1, .dim_param = 2; TensorProto.name = 8; StringStringEntry key 1, value 2.

import { BadInput } from "./errors.mjs";

const ELEMENT_TYPES = { 1: "tensor(float)", 7: "tensor(int64)" };
const utf8 = new TextDecoder("utf-8", { fatal: true });

function varint(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= bytes.length) throw new BadInput("truncated protobuf");
    const byte = bytes[pos++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, pos];
    scale *= 128;
  }
}

/** The fields of one message: {field, wire, value} (varint) or {field, wire, start, end} (bytes),
 * each with `begin` and `stop`, where the whole field, tag included, starts and ends. */
export function* fields(bytes, start = 0, end = bytes.length) {
  let pos = start;
  while (pos < end) {
    const begin = pos;
    const [key, next] = varint(bytes, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    pos = next;
    if (wire === 0) {
      const [value, after] = varint(bytes, pos);
      pos = after;
      yield { field, wire, value, begin, stop: after };
    } else if (wire === 2) {
      const [length, after] = varint(bytes, pos);
      if (after + length > end) throw new BadInput("truncated protobuf");
      yield { field, wire, start: after, end: after + length, begin, stop: after + length };
      pos = after + length;
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
    } else {
      throw new BadInput(`protobuf wire type ${wire} is not one ONNX uses`);
    }
  }
  if (pos !== end) throw new BadInput("truncated protobuf");
}

function text(bytes, f) {
  try {
    return utf8.decode(bytes.subarray(f.start, f.end));
  } catch {
    throw new BadInput("names or metadata that are not UTF-8 text");
  }
}

function valueInfo(bytes, f) {
  const info = { name: "", type: "?", shape: null };
  for (const g of fields(bytes, f.start, f.end)) {
    if (g.field === 1 && g.wire === 2) info.name = text(bytes, g);
    if (g.field !== 2 || g.wire !== 2) continue;
    for (const t of fields(bytes, g.start, g.end)) {
      if (t.field !== 1 || t.wire !== 2) continue;
      for (const tensor of fields(bytes, t.start, t.end)) {
        if (tensor.field === 1 && tensor.wire === 0) info.type = ELEMENT_TYPES[tensor.value] ?? `tensor(type ${tensor.value})`;
        if (tensor.field === 2 && tensor.wire === 2) info.shape = dims(bytes, tensor);
      }
    }
  }
  return info;
}

function dims(bytes, shape) {
  const out = [];
  for (const d of fields(bytes, shape.start, shape.end)) {
    if (d.field !== 1 || d.wire !== 2) continue;
    let dim = null;
    for (const v of fields(bytes, d.start, d.end)) {
      if (v.field === 1 && v.wire === 0) dim = v.value;
      if (v.field === 2 && v.wire === 2) dim = text(bytes, v);
    }
    out.push(dim);
  }
  return out;
}

/** {metadata: {key: value}, inputs: [{name, type, shape}], outputs: [...]} of an ONNX file. */
export function readModelHeader(bytes) {
  const metadata = {};
  const header = { metadata, inputs: [], outputs: [] };
  for (const f of fields(bytes)) {
    if (f.field === 14 && f.wire === 2) {
      let key = "";
      let value = "";
      for (const e of fields(bytes, f.start, f.end)) {
        if (e.field === 1 && e.wire === 2) key = text(bytes, e);
        if (e.field === 2 && e.wire === 2) value = text(bytes, e);
      }
      metadata[key] = value;
    } else if (f.field === 7 && f.wire === 2) {
      const initializers = new Set();
      const inputs = [];
      for (const g of fields(bytes, f.start, f.end)) {
        if (g.field === 5 && g.wire === 2) {
          for (const t of fields(bytes, g.start, g.end)) if (t.field === 8 && t.wire === 2) initializers.add(text(bytes, t));
        } else if (g.field === 11 && g.wire === 2) inputs.push(valueInfo(bytes, g));
        else if (g.field === 12 && g.wire === 2) header.outputs.push(valueInfo(bytes, g));
      }
      header.inputs = inputs.filter((i) => !initializers.has(i.name)); // old IRs list weights as inputs
    }
  }
  return header;
}

// Where tensors live (core/onnxproto.py holds the same table): message kind → {field: nested kind}.
const SCHEMA = {
  model: { 7: "graph", 20: "training", 25: "function" },
  training: { 1: "graph", 2: "graph" },
  graph: { 1: "node", 5: "tensor", 15: "sparse" },
  node: { 5: "attribute" },
  function: { 7: "node", 11: "attribute" },
  attribute: { 5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse" },
  sparse: { 1: "tensor", 2: "tensor" },
};
const EXTERNAL = 1; // TensorProto.data_location = EXTERNAL; TensorProto.external_data is field 13

/** The name of the first tensor anywhere in the model that keeps its data in another file ("" if
 * unnamed), or null: onnxruntime would read that file, so a runtime refuses the model first. */
export function externalTensor(bytes) {
  const stack = [["model", 0, bytes.length]];
  while (stack.length) {
    const [kind, start, end] = stack.pop();
    if (kind === "tensor") {
      let name = "";
      let external = false;
      for (const f of fields(bytes, start, end)) {
        if (f.field === 8 && f.wire === 2) name = new TextDecoder().decode(bytes.subarray(f.start, f.end));
        if ((f.field === 14 && f.wire === 0 && f.value === EXTERNAL) || f.field === 13) external = true;
      }
      if (external) return name;
      continue;
    }
    for (const f of fields(bytes, start, end)) {
      const nested = SCHEMA[kind][f.field];
      if (nested && f.wire === 2) stack.push([nested, f.start, f.end]);
    }
  }
  return null;
}
