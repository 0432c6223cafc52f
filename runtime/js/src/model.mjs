// A charlstm ONNX model in onnxruntime (Node or web): its metadata checked against its graph,
// its vocabulary, state and single step — the JavaScript twin of runtime/model.py.

import { CONTRACT } from "./contract.mjs";
import { BadInput, plural } from "./errors.mjs";
import { externalTensor, readModelHeader } from "./protobuf.mjs";
import { pyList, pyRepr, pyTuple } from "./pyformat.mjs";

export const FORMAT = CONTRACT.format;
const LIMITS = CONTRACT.limits;
const SIZE_CAPS = { num_layers: LIMITS.maxLayers, hidden_size: LIMITS.maxHidden, vocab_size: LIMITS.maxVocab };
const INPUTS = ["tokens", "h_in", "c_in"];
const OUTPUTS = ["logits", "h_out", "c_out"];
const isNode = typeof process !== "undefined" && Boolean(process.versions?.node);

// As the Python runtime (runtime/model.py): idle workers spin 200 us, long enough to span the
// gap between two steps, short enough to leave the cores soon after the last one.

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
  const lone = vocab.find((v) => /^[\ud800-\udfff]$/.test(v));
  if (lone !== undefined) return `the vocabulary holds '\\u${lone.charCodeAt(0).toString(16)}', half of a UTF-16 pair, which no UTF-8 text holds`;
  const seen = new Set();
  const twice = [...new Set(vocab.filter((v) => seen.has(v) || !seen.add(v)))].sort(byCodePoint);
  if (twice.length) return `the vocabulary holds ${twice.slice(0, 5).map(pyRepr).join(", ")} more than once`;
  return null;
}

/** The header of a step or prefill graph, checked as the Python runtime checks it; first of
 * all, that the file is self-contained (no ONNX external data, which onnxruntime would read). */
function checkedHeader(bytes, name, kind) {
  let header;
  let external;
  try {
    external = externalTensor(bytes);
    header = readModelHeader(bytes);
  } catch (e) {
    throw new BadInput(`${name} is not an ONNX model onnxruntime can load (${e.message})`);
  }
  if (external !== null) {
    throw new BadInput(`${name} keeps the data of tensor '${external.slice(0, 78)}' in another file (ONNX external data);`
      + " charlstm runs self-contained files only, and reads no file but the one named");
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
  for (const key of ["num_layers", "hidden_size", "vocab_size"]) {
    const value = meta[`charlstm.${key}`];
    sizes[key] = /^[0-9]{1,10}$/.test(value) ? Number(value) : 0; // ASCII digits only (core/limits.py: decimal)
    if (!(sizes[key] >= 1 && sizes[key] <= SIZE_CAPS[key])) {
      throw new BadInput(`${name} has broken charlstm metadata (charlstm.${key} is ${pyRepr(value.slice(0, 40))};`
        + ` sizes are written in ASCII digits, from 1 to ${SIZE_CAPS[key].toLocaleString("en-US")})`);
    }
  }
  try {
    vocab = JSON.parse(meta["charlstm.vocab"]);
  } catch (e) {
    const why = e instanceof RangeError ? "RecursionError" : "JSONDecodeError";
    throw new BadInput(`${name} has broken charlstm metadata (charlstm.vocab is not a JSON list: ${why})`);
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
    throw new BadInput(`${name} has inputs ${pyTuple(names[0])} and outputs ${pyTuple(names[1])}; a charlstm ${kind}`
      + ` graph has ${pyTuple(INPUTS)} and ${pyTuple(OUTPUTS)}`);
  }
  for (const arg of [...header.inputs, ...header.outputs]) {
    const [type, dims] = expected[arg.name];
    const shape = arg.shape ?? [];
    const fits = shape.length === dims.length
      && dims.every((want, i) => (typeof want === "number" ? shape[i] === want : typeof shape[i] !== "number"));
    if (arg.type !== type || !fits) {
      throw new BadInput(`${name} does not match its charlstm metadata: ${arg.name} is ${arg.type}`
        + ` ${pyList(shape)}, the metadata says ${type} ${pyList(dims)}`);
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
   * a path, when it exists; left aside, with a note, when it names another step graph) or null;
   * `threads`: onnxruntime's intra-op threads (1 to 256); `onNote(message)`: what is told of a
   * prefill graph left aside (default: console.warn).
   */
  static async load(source, { ort, prefill = "auto", threads, sessionOptions, onNote = console.warn } = {}) {
    ort = ort ?? await defaultOrt();
    const name = typeof source === "string" || source instanceof URL ? String(source) : "<bytes>";
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= LIMITS.maxThreads)) {
      throw new BadInput(`threads must be an integer from 1 to ${LIMITS.maxThreads}, not ${threads}`);
    }
    const options = { executionMode: "sequential", interOpNumThreads: 1, logSeverityLevel: 4, ...sessionOptions };
    threads = threads ?? (isNode ? await defaultThreads() : undefined);
    if (threads !== undefined) options.intraOpNumThreads = threads;
    options.extra = { ...sessionExtra(CONTRACT.sessionConfig), ...options.extra };
    const bytes = await readBytes(source, "model");
    const header = checkedHeader(bytes, name, "step");
    const session = await open(ort, bytes, name, options);
    const model = new Model(ort, session, header, name);
    const auto = prefill === "auto";
    if (auto) prefill = await besidePath(source);
    if (prefill) await model.#openPrefill(prefill, options, bytes, auto ? onNote : null);
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

  /** Open the prefill graph if it names this step graph (`stepBytes`) by sha256 (or, exported
   * before it did, shares its checkpoint); else refuse it or, with `onNote`, leave it aside. */
  async #openPrefill(prefill, options, stepBytes, onNote) {
    const name = typeof prefill === "string" || prefill instanceof URL ? String(prefill) : "<prefill bytes>";
    const bytes = await readBytes(prefill, "prefill graph");
    const header = checkedHeader(bytes, name, "prefill");
    const problem = await this.#pairProblem(header, name, stepBytes);
    if (problem === null) this.#prefill = await open(this.#ort, bytes, name, options);
    else if (onNote) onNote(`${problem}; prompts are fed one step at a time (export again to use it)`);
    else throw new BadInput(`${problem}; export both again, or load the model with prefill: null`);
  }

  async #pairProblem(header, name, stepBytes) {
    const named = header.meta[CONTRACT.meta.stepSha256];
    let same;
    if (named !== undefined) {
      same = named === await sha256Hex(stepBytes);
    } else {
      const ours = this.metadata[CONTRACT.meta.checkpointSha256];
      const theirs = header.meta[CONTRACT.meta.checkpointSha256];
      if (ours === undefined || theirs === undefined) {
        return `${ours === undefined ? this.name : name} has no charlstm.checkpoint_sha256, so nothing says`
          + ` that ${name} belongs to ${this.name}`;
      }
      same = ours === theirs;
    }
    const shape = [header.vocab, header.numLayers, header.hiddenSize];
    if (!same || JSON.stringify(shape) !== JSON.stringify([this.vocab, this.numLayers, this.hiddenSize])) {
      return `${name} was exported with another step graph than ${this.name}`;
    }
    return null;
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

  /** BadInput unless `batch` lanes fit the caps (core/limits.py: MAX_BATCH, MAX_STATE_FLOATS). */
  checkBatch(batch) {
    if (!Number.isInteger(batch) || batch < 1) throw new BadInput(`batch must be an integer >= 1, not ${batch}`);
    const most = Math.min(LIMITS.maxBatch, Math.floor(LIMITS.maxStateFloats / (this.numLayers * this.hiddenSize)));
    if (batch > most) {
      throw new BadInput(`a batch of ${batch.toLocaleString("en-US")} lanes is more than this model runs at once`
        + ` (${most.toLocaleString("en-US")})`);
    }
  }

  newState(batch = 1) {
    this.checkBatch(batch);
    const size = this.numLayers * batch * this.hiddenSize;
    return new State(new Float32Array(size), new Float32Array(size), batch);
  }

  /** One character for each of B streams: tokens (B ids) → {logits: Float32Array (B, V), state}. */
  async step(tokens, state) {
    tokens = this.#ids(tokens, "tokens");
    this.#checkState(state, tokens.length);
    return this.#run(this.#session, tokens, [tokens.length], state);
  }

  /** Feed ids to one stream: {logits: Float32Array (T, V) after each, state after the last};
   * `at`: the step number of the first id in messages. */
  async feed(ids, state = null, chunk = 4096, at = 1) {
    ids = this.#ids(ids, "ids", true);
    state = state ?? this.newState(1);
    this.#checkState(state, 1);
    const logits = new Float32Array(ids.length * this.vocabSize);
    if (this.#prefill === null) {
      for (let t = 0; t < ids.length; t++) {
        const out = await this.#run(this.#session, [ids[t]], [1], state, at + t);
        logits.set(out.logits, t * this.vocabSize);
        state = out.state;
      }
      return { logits, state };
    }
    for (let start = 0; start < ids.length; start += chunk) {
      const part = ids.slice(start, start + chunk);
      const out = await this.#run(this.#prefill, part, [part.length, 1], state, at + start);
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

  /** step() for arguments known to fit (generation's own loop); `at` numbers the step in messages. */
  async stepUnchecked(tokens, state, at = 1) {
    return this.#run(this.#session, tokens, [tokens.length], state, at);
  }

  /** One call of a graph, its outputs checked as runtime/model.py checks them: the shapes the
   * metadata promised and finite logits. */
  async #run(session, tokens, tokenShape, state, at = 1) {
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
    const shapes = { logits: [...tokenShape, this.vocabSize], h_out: dims, c_out: dims };
    for (const [key, shape] of Object.entries(shapes)) {
      const got = out[key];
      if (got?.type !== "float32" || got.dims.join() !== shape.join() || got.data.length !== shape.reduce((a, b) => a * b)) {
        throw new BadInput(`${this.name} gave ${key} of shape (${got?.dims?.join(", ")}) (${got?.type}) where its metadata`
          + ` says (${shape.join(", ")}) (float32); the file is broken`);
      }
    }
    const logits = out.logits.data;
    for (let i = 0; i < logits.length; i++) {
      if (!Number.isFinite(logits[i])) {
        const row = Math.floor(i / this.vocabSize);
        throw new BadInput(`${this.name} gave logits that are not finite numbers (NaN or infinite) at step`
          + ` ${at + Math.floor(row / state.batch)} of the text (lane ${row % state.batch}); the model file is broken`);
      }
    }
    return { logits, state: new State(out.h_out.data, out.c_out.data, state.batch) };
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

/** onnxruntime-js's `extra` session option from dotted config keys: {"a.b.c": v} → {a: {b: {c: v}}}. */
function sessionExtra(config) {
  const extra = {};
  for (const [key, value] of Object.entries(config)) {
    const parts = key.split(".");
    const leaf = parts.slice(0, -1).reduce((node, part) => (node[part] ??= {}), extra);
    leaf[parts.at(-1)] = value;
  }
  return extra;
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

async function sha256Hex(bytes) {
  const subtle = globalThis.crypto?.subtle ?? (await import("node:crypto")).webcrypto.subtle;
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function firstLine(e) {
  return String(e?.message ?? e).trim().split("\n")[0].slice(0, 150);
}

function byCodePoint(a, b) {
  return a.codePointAt(0) - b.codePointAt(0);
}
