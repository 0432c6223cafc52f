// Type declarations for charlstm's JavaScript runtime (src/index.mjs).

/** An onnxruntime module: onnxruntime-node or onnxruntime-web (`import * as ort from ...`). */
export type Ort = {
  InferenceSession: { create(model: Uint8Array, options?: object): Promise<unknown> };
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => unknown;
};

/** A model file: its bytes, a URL, or (in Node) a path. */
export type Source = Uint8Array | ArrayBuffer | URL | string;

/** A problem the caller can fix: a wrong file, option or argument. The message is one line. */
export class BadInput extends Error {
  name: "BadInput";
}

/** The LSTM state of `batch` independent streams: h and c, float32 [numLayers, batch, hiddenSize]. */
export class State {
  constructor(h: Float32Array, c: Float32Array, batch: number);
  h: Float32Array;
  c: Float32Array;
  batch: number;
  copy(): State;
  /** The state of some lanes (indices, repeats allowed): fork or narrow a batch. */
  select(lanes: number[], numLayers: number, hiddenSize: number): State;
}

export interface LoadOptions {
  /** The onnxruntime the app uses; default: onnxruntime-node, else onnxruntime-web. */
  ort?: Ort;
  /** The prefill graph; "auto": MODEL.prefill.onnx beside a path (Node), when it exists and names
   * this step graph (else left aside, with a note); null: none. */
  prefill?: Source | "auto" | null;
  /** onnxruntime's intra-op threads (Node), 1 to 256; in the browser, set ort.env.wasm.numThreads. */
  threads?: number;
  /** Told when a prefill graph beside the model is left aside; default: console.warn. */
  onNote?: (message: string) => void;
  /** Passed to InferenceSession.create as they are, over charlstm's defaults. */
  sessionOptions?: object;
}

export interface StepResult {
  /** [batch, vocabSize] (step) or [steps, vocabSize] (feed) logits, row-major. */
  logits: Float32Array;
  state: State;
}

export class Model {
  /** Load and check a charlstm model: metadata against the graph, vocabulary, format version. */
  static load(source: Source, options?: LoadOptions): Promise<Model>;
  readonly name: string;
  readonly metadata: Record<string, string>;
  readonly vocab: string[];
  readonly vocabSize: number;
  readonly numLayers: number;
  readonly hiddenSize: number;
  readonly hasPrefill: boolean;
  /** What an empty prompt feeds first: the id of "\n", or 0. */
  readonly startToken: number;
  encode(text: string, unknown?: "error" | "skip"): number[];
  decode(ids: Iterable<number>): string;
  /** BadInput unless a batch of this many lanes fits the caps (4096 lanes, 2^26 numbers per state array). */
  checkBatch(batch: number): void;
  newState(batch?: number): State;
  /** One character for each of the state's streams. */
  step(tokens: Iterable<number>, state: State): Promise<StepResult>;
  /** Feed ids to one stream: the logits after each, the state after the last. */
  feed(ids: Iterable<number>, state?: State | null, chunk?: number, at?: number): Promise<StepResult>;
  /** Feed a prompt's ids to one stream: the logits [vocabSize] after the last. */
  prime(ids: number[], state?: State | null): Promise<StepResult>;
}

export interface SamplingOptions {
  /** Default 0.8; 0 is greedy; otherwise in [1e-6, 1e6]. */
  temperature?: number;
  topK?: number | null;
  topP?: number | null;
  /** Keep the characters at least minP times as likely as the likeliest, (0, 1]. */
  minP?: number | null;
  /** Added to a character's logit before anything else, each value in [-100, 100]. */
  logitBias?: Record<string, number>;
  /** Characters never drawn. */
  ban?: string;
  /** CTRL's penalty over the last `repetitionWindow` characters; 1 = none. */
  repetitionPenalty?: number;
  repetitionWindow?: number;
  greedy?: boolean;
  /** The whole text matches this pattern (docs/formats.md section 11). */
  regex?: string | null;
}

export interface GenerateOptions extends SamplingOptions {
  /** Characters to generate per sample (default 500). */
  n?: number;
  /** Sample i uses seed + i (mod 2^64); default: drawn at random. */
  seed?: number | bigint | string | null;
  /** A sample ends at the first of these (not included). */
  stop?: string | string[];
  /** Continue an earlier text (batch 1). */
  state?: State | null;
  unknown?: "error" | "skip";
}

export interface Score {
  natsPerChar: number;
  bitsPerChar: number;
  perplexity: number;
  /** Characters predicted: all but the first. */
  chars: number;
}

export const DEFAULTS: Readonly<Required<SamplingOptions>>;
export function samplingOptions(options?: SamplingOptions): Readonly<Required<SamplingOptions>>;

/** The portable generator of the runtime spec. */
export class SplitMix64 {
  constructor(seed: number | bigint | string);
  state: bigint;
  next(): bigint;
  /** A double in [0, 1). */
  uniform(): number;
}

export function laneSeeds(seed: number | bigint | string, numSamples: number): bigint[];

/** Draws the next character of one stream. */
export class Picker {
  /** `vocab` (the model's characters) resolves logitBias and ban. */
  constructor(options: SamplingOptions, seed: number | bigint | string, vocab?: string[] | null);
  choose(logits: Float32Array, recent?: number[]): number;
}

export class StopMatcher {
  constructor(stops: string[]);
  done: boolean;
  push(ch: string): string;
  flush(): string;
}

export function generate(model: Model, prompt?: string, options?: GenerateOptions): Promise<string>;
export function stream(model: Model, prompt?: string, options?: GenerateOptions): Promise<AsyncIterable<string>>;
export function streamBatch(model: Model, prompt?: string,
  options?: GenerateOptions & { numSamples?: number }): Promise<AsyncIterable<string[]>>;
export function generateBatch(model: Model, prompt?: string,
  options?: GenerateOptions & { numSamples?: number }): Promise<string[]>;
export function score(model: Model, text: string, unknown?: "error" | "skip", chunk?: number): Promise<Score>;

export interface Alternative { char: string; id: number; logprob: number }
/** One character of a text: its log-probability under the distribution it was drawn from, and the likeliest alternatives. */
export interface Logprob extends Alternative { top: Alternative[] }
export function streamLogprobs(model: Model, prompt?: string,
  options?: GenerateOptions & { top?: number }): Promise<AsyncIterable<Logprob>>;
export function logProbabilities(z: Float64Array, options: SamplingOptions): Float64Array;

export interface Beam { text: string; logprob: number; score: number }
export interface BeamOptions {
  n?: number; beams?: number; lengthPenalty?: number; stop?: string | string[]; state?: State | null;
  unknown?: "error" | "skip"; logitBias?: Record<string, number>; ban?: string; repetitionPenalty?: number;
  repetitionWindow?: number; regex?: string | null;
}
/** The K likeliest continuations, best first (docs/formats.md section 10). */
export function beamSearch(model: Model, prompt?: string, options?: BeamOptions): Promise<Beam[]>;
