// A charlstm ONNX model in onnxruntime (Node or web): its metadata checked against its graph,
// its vocabulary, state and single step — the JavaScript twin of runtime/model.py.

import { BadInput, plural } from "./errors.mjs";
import { readModelHeader } from "./protobuf.mjs";
import { pyRepr } from "./pyformat.mjs";

export const FORMAT = "charlstm-onnx/1";
const INPUTS = ["tokens", "h_in", "c_in"];
const OUTPUTS = ["logits", "h_out", "c_out"];
const isNode = typeof process !== "undefined" && Boolean(process.versions?.node);

// As the Python runtime (runtime/model.py): idle workers spin 200 us, long enough to span the
// gap between two steps, short enough to leave the cores soon after the last one.
const SPIN_DURATION_US = "200";

/** Intra-op threads in Node: all cores of a small device, at most 4 (runtime/model.py's rule). */
async function defaultThreads() {
  const os = await import("node:os");
  return Math.max(1, Math.min(4, os.availableParallelism?.() ?? os.cpus().length));
}

/** The runtime the app chose, or the one that is installed: onnxruntime-node, else onnxruntime-web. */
async function defaultOrt() {
  if (globalThis.ort?.InferenceSession) return globalThis.ort;
  for (const name of isNode ? ["onnxruntime-node", "onnxruntime-web"] : ["onnxruntime-web"]) {
    try {
      return await import(name);
    } catch {
      // try the next one
    }
  }
  throw new BadInput("no onnxruntime found: install onnxruntime-node or onnxruntime-web, or pass { ort }");
}

/** The bytes of a model: Uint8Array/ArrayBuffer as given, a URL fetched, a path read (Node). */
async function readBytes(source, what) {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  const text = String(source);
  if (isNode && !/^(https?|blob|data):/.test(text)) {
    const fs = await import("node:fs/promises");
    try {
      return new Uint8Array(await fs.readFile(source instanceof URL ? source : text));
    } catch (e) {
      throw new BadInput(e.code === "ENOENT" ? `${what} ${text} does not exist` : `${what} ${text} is not a file`);
    }
  }
  const response = await fetch(source);
  if (!response.ok) throw new BadInput(`${what} ${text}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function codePoints(s) {
  return [...s];
}

/** Why `vocab` is not a list of distinct single characters, or null (core/formats.py's rule). */
function vocabProblem(vocab) {
  if (!Array.isArray(vocab) || vocab.length === 0) return "the vocabulary is not a non-empty list";
  const bad = vocab.find((v) => typeof v !== "string" || codePoints(v).length !== 1);
  if (bad !== undefined) return `the vocabulary holds ${JSON.stringify(bad)}, which is not a single character`;
  if (new Set(vocab).size !== vocab.length) return "the vocabulary holds a character more than once";
  return null;
}

/** The header of a step or prefill graph, checked as the Python runtime checks it. */
function checkedHeader(bytes, name, kind) {
  let header;
  try {
    header = readModelHeader(bytes);
  } catch (e) {
    throw new BadInput(`${name} is not an ONNX model (${e.message})`);
  }
  const meta = header.metadata;
  if (!("charlstm.format" in meta)) {
    throw new BadInput(`${name} is an ONNX file without charlstm metadata; make it with charlstm-export`);
  }
  if (meta["charlstm.format"] !== FORMAT) {
    throw new BadInput(`${name} has format '${meta["charlstm.format"]}'; this runtime reads '${FORMAT}'`);
  }
  const graph = meta["charlstm.graph"] ?? "step";
  if (graph !== kind) throw new BadInput(`${name} is a charlstm ${graph} graph; give the ${kind} graph`);
  let vocab;
  const sizes = {};
  for (const key of ["vocab", "num_layers", "hidden_size", "vocab_size"]) {
    if (!(`charlstm.${key}` in meta)) throw new BadInput(`${name} has broken charlstm metadata (no charlstm.${key})`);
  }
  try {
    vocab = JSON.parse(meta["charlstm.vocab"]);
  } catch {
    throw new BadInput(`${name} has broken charlstm metadata (the vocabulary is not JSON)`);
  }
  for (const key of ["num_layers", "hidden_size", "vocab_size"]) {
    const value = meta[`charlstm.${key}`];
    if (!/^-?\d+$/.test(value.trim())) throw new BadInput(`${name} has broken charlstm metadata (charlstm.${key} is ${value})`);
    sizes[key] = Number(value);
  }
  const problem = vocabProblem(vocab) ?? (vocab.length === sizes.vocab_size ? null
    : `charlstm.vocab_size is ${sizes.vocab_size} but the vocabulary holds ${vocab.length}`);
  if (problem) throw new BadInput(`${name} has broken charlstm metadata: ${problem}`);
  checkIo(header, name, kind, sizes.num_layers, sizes.hidden_size, sizes.vocab_size);
  return { meta, vocab, numLayers: sizes.num_layers, hiddenSize: sizes.hidden_size };
}

function checkIo(header, name, kind, layers, hidden, vocab) {
  const sequence = kind === "prefill" ? ["steps"] : [];
  const state = ["tensor(float)", [layers, "batch", hidden]];
  const expected = {
    tokens: ["tensor(int64)", [...sequence, "batch"]], h_in: state, c_in: state,
    logits: ["tensor(float)", [...sequence, "batch", vocab]], h_out: state, c_out: state,
  };
  const names = [header.inputs.map((i) => i.name), header.outputs.map((o) => o.name)];
  if (names[0].join() !== INPUTS.join() || names[1].join() !== OUTPUTS.join()) {
    throw new BadInput(`${name} has inputs ${names[0]} and outputs ${names[1]}; a charlstm ${kind} graph has`
      + ` ${INPUTS} and ${OUTPUTS}`);
  }
  for (const arg of [...header.inputs, ...header.outputs]) {
    const [type, dims] = expected[arg.name];
    const shape = arg.shape ?? [];
    const fits = shape.length === dims.length
      && dims.every((want, i) => (typeof want === "number" ? shape[i] === want : typeof shape[i] !== "number"));
    if (arg.type !== type || !fits) {
      throw new BadInput(`${name} does not match its charlstm metadata: ${arg.name} is ${arg.type}`
        + ` [${shape}], the metadata says ${type} [${dims}]`);
    }
  }
}

/** The LSTM state of B streams: h and c, Float32Array (L, B, H) each; zeros start a text. */
export class State {
  constructor(h, c, batch) {
    this.h = h;
    this.c = c;
    this.batch = batch;
  }

  copy() {
    return new State(this.h.slice(), this.c.slice(), this.batch);
  }

  /** The state of some lanes (indices, repeats allowed): fork or narrow a batch. */
  select(lanes, numLayers, hiddenSize) {
    const pick = (x) => {
      const out = new Float32Array(numLayers * lanes.length * hiddenSize);
      for (let l = 0; l < numLayers; l++) {
        lanes.forEach((lane, i) => out.set(x.subarray((l * this.batch + lane) * hiddenSize,
          (l * this.batch + lane + 1) * hiddenSize), (l * lanes.length + i) * hiddenSize));
      }
      return out;
    };
    return new State(pick(this.h), pick(this.c), lanes.length);
  }
}

export class Model {
  /**
   * Load a model from its bytes, a URL, or (in Node) a path. `ort` is the onnxruntime module
   * the app uses (onnxruntime-node or onnxruntime-web; default: whichever is installed);
   * `prefill`: the prefill graph (bytes, URL or path), "auto" (Node: MODEL.prefill.onnx beside
   * a path, when it exists) or null; `threads`: onnxruntime's intra-op threads.
   */
  static async load(source, { ort, prefill = "auto", threads, sessionOptions } = {}) {
    ort = ort ?? await defaultOrt();
    const name = typeof source === "string" || source instanceof URL ? String(source) : "<bytes>";
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
      throw new BadInput(`threads must be an integer >= 1, not ${threads}`);
    }
    const options = { executionMode: "sequential", interOpNumThreads: 1, logSeverityLevel: 4, ...sessionOptions };
    threads = threads ?? (isNode ? await defaultThreads() : undefined);
    if (threads !== undefined) options.intraOpNumThreads = threads;
    options.extra = { session: { intra_op: { spin_duration_us: SPIN_DURATION_US } }, ...options.extra };
    const bytes = await readBytes(source, "model");
    const header = checkedHeader(bytes, name, "step");
    const session = await open(ort, bytes, name, options);
    const model = new Model(ort, session, header, name);
    if (prefill === "auto") prefill = await besidePath(source);
    if (prefill) await model.#openPrefill(prefill, options);
    return model;
  }

  #ort;
  #session;
  #prefill = null;
  #index;

  constructor(ort, session, header, name) {
    this.#ort = ort;
    this.#session = session;
    this.name = name;
    this.metadata = header.meta;
    this.vocab = header.vocab;
    this.vocabSize = header.vocab.length;
    this.numLayers = header.numLayers;
    this.hiddenSize = header.hiddenSize;
    this.#index = new Map(header.vocab.map((ch, i) => [ch, i]));
  }

  async #openPrefill(prefill, options) {
    const name = typeof prefill === "string" || prefill instanceof URL ? String(prefill) : "<prefill bytes>";
    const bytes = await readBytes(prefill, "prefill graph");
    const header = checkedHeader(bytes, name, "prefill");
    const ours = this.metadata["charlstm.checkpoint_sha256"];
    const theirs = header.meta["charlstm.checkpoint_sha256"];
    if (ours === undefined || theirs === undefined) {
      throw new BadInput(`${ours === undefined ? this.name : name} has no charlstm.checkpoint_sha256, so nothing says`
        + ` that ${name} belongs to ${this.name}; export both again, or load the model with prefill: null`);
    }
    if (ours !== theirs || JSON.stringify(header.vocab) !== JSON.stringify(this.vocab)) {
      throw new BadInput(`${name} was exported from another checkpoint than ${this.name}; export both again, or delete it`);
    }
    this.#prefill = await open(this.#ort, bytes, name, options);
  }

  get hasPrefill() {
    return this.#prefill !== null;
  }

  /** What an empty prompt feeds first: a line break if the vocabulary has one, else id 0. */
  get startToken() {
    return this.#index.get("\n") ?? 0;
  }

  /** Token ids of a text (code points); unknown characters throw BadInput, or are dropped with "skip". */
  encode(text, unknown = "error") {
    if (unknown !== "error" && unknown !== "skip") throw new BadInput(`unknown must be 'error' or 'skip', not '${unknown}'`);
    const chars = codePoints(text);
    const missing = [...new Set(chars.filter((ch) => !this.#index.has(ch)))].sort(byCodePoint);
    if (missing.length && unknown !== "skip") {
      const shown = missing.slice(0, 10).map(pyRepr).join(", ") + (missing.length > 10 ? " ..." : "");
      throw new BadInput(`text has ${plural(missing.length, "character")} not in the model's vocabulary: ${shown}`);
    }
    return chars.filter((ch) => this.#index.has(ch)).map((ch) => this.#index.get(ch));
  }

  decode(ids) {
    return this.#ids(ids, "ids", true).map((i) => this.vocab[i]).join("");
  }

  newState(batch = 1) {
    if (!Number.isInteger(batch) || batch < 1) throw new BadInput(`batch must be an integer >= 1, not ${batch}`);
    const size = this.numLayers * batch * this.hiddenSize;
    return new State(new Float32Array(size), new Float32Array(size), batch);
  }

  /** One character for each of B streams: tokens (B ids) → {logits: Float32Array (B, V), state}. */
  async step(tokens, state) {
    tokens = this.#ids(tokens, "tokens");
    this.#checkState(state, tokens.length);
    return this.#run(this.#session, tokens, [tokens.length], state);
  }

  /** Feed ids to one stream: {logits: Float32Array (T, V) after each, state after the last}. */
  async feed(ids, state = null, chunk = 4096) {
    ids = this.#ids(ids, "ids", true);
    state = state ?? this.newState(1);
    this.#checkState(state, 1);
    const logits = new Float32Array(ids.length * this.vocabSize);
    if (this.#prefill === null) {
      for (let t = 0; t < ids.length; t++) {
        const out = await this.#run(this.#session, [ids[t]], [1], state);
        logits.set(out.logits, t * this.vocabSize);
        state = out.state;
      }
      return { logits, state };
    }
    for (let start = 0; start < ids.length; start += chunk) {
      const part = ids.slice(start, start + chunk);
      const out = await this.#run(this.#prefill, part, [part.length, 1], state);
      logits.set(out.logits, start * this.vocabSize);
      state = out.state;
    }
    return { logits, state };
  }

  /** Feed a prompt's ids (at least one) to one stream: {logits (V) after the last, state}. */
  async prime(ids, state = null) {
    if (!ids || ids.length === 0) throw new BadInput("prime needs at least one token");
    const out = await this.feed(ids, state);
    return { logits: out.logits.subarray(out.logits.length - this.vocabSize), state: out.state };
  }

  /** step() for arguments known to fit (generation's own loop). */
  async stepUnchecked(tokens, state) {
    return this.#run(this.#session, tokens, [tokens.length], state);
  }

  async #run(session, tokens, tokenShape, state) {
    const T = this.#ort.Tensor;
    const dims = [this.numLayers, state.batch, this.hiddenSize];
    const feeds = {
      tokens: new T("int64", BigInt64Array.from(tokens, (t) => BigInt(t)), tokenShape),
      h_in: new T("float32", state.h, dims),
      c_in: new T("float32", state.c, dims),
    };
    let out;
    try {
      out = await session.run(feeds);
    } catch (e) {
      throw new BadInput(`${this.name} failed in onnxruntime, the file may be damaged (${firstLine(e)})`);
    }
    return { logits: out.logits.data, state: new State(out.h_out.data, out.c_out.data, state.batch) };
  }

  #ids(ids, what, allowEmpty = false) {
    const list = typeof ids === "number" || typeof ids === "bigint" ? [ids] : Array.from(ids ?? []);
    if (list.length === 0 && !allowEmpty) throw new BadInput(`${what} must hold at least one id`);
    for (const id of list) {
      const n = Number(id);
      if (!Number.isInteger(n)) throw new BadInput(`${what} must be integer token ids, not ${id}`);
      if (n < 0 || n >= this.vocabSize) throw new BadInput(`${what} must lie in [0, ${this.vocabSize}) for this model; got ${n}`);
    }
    return list.map(Number);
  }

  #checkState(state, batch) {
    if (!(state instanceof State)) throw new BadInput("state must be a charlstm State (model.newState())");
    const size = this.numLayers * batch * this.hiddenSize;
    for (const [name, part] of [["h", state.h], ["c", state.c]]) {
      if (!(part instanceof Float32Array)) throw new BadInput(`state.${name} must be a Float32Array`);
      if (part.length !== size || state.batch !== batch) {
        throw new BadInput(`state.${name} holds ${part.length} numbers for batch ${state.batch}; this model and batch`
          + ` need (layers, batch, hidden) = (${this.numLayers}, ${batch}, ${this.hiddenSize})`);
      }
    }
  }
}

async function open(ort, bytes, name, options) {
  try {
    return await ort.InferenceSession.create(bytes, options);
  } catch (e) {
    throw new BadInput(`${name} is not an ONNX model onnxruntime can load (${firstLine(e)})`);
  }
}

async function besidePath(source) {
  if (!isNode || typeof source !== "string" || !source.endsWith(".onnx") || /^(https?|blob|data):/.test(source)) return null;
  const path = source.slice(0, -".onnx".length) + ".prefill.onnx";
  const fs = await import("node:fs/promises");
  try {
    return (await fs.stat(path)).isFile() ? path : null;
  } catch {
    return null;
  }
}

function firstLine(e) {
  return String(e?.message ?? e).trim().split("\n")[0].slice(0, 150);
}

function byCodePoint(a, b) {
  return a.codePointAt(0) - b.codePointAt(0);
}
