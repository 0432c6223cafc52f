// charlstm's JavaScript runtime: load a .onnx made by charlstm-export and generate the same
// text as the Python runtime for the same seed (docs/formats.md is the spec both follow).
//
//   import * as ort from "onnxruntime-node";           // or "onnxruntime-web"
//   import { Model, generate } from "charlstm";
//   const model = await Model.load("moliere.onnx", { ort });
//   console.log(await generate(model, "ALCESTE.", { n: 300, seed: 1 }));

export { beamSearch } from "./beams.mjs";
export { BadInput } from "./errors.mjs";
export { Model, State } from "./model.mjs";
export { laneSeeds, SplitMix64 } from "./rng.mjs";
export { DEFAULTS, logProbabilities, Picker, samplingOptions } from "./sampler.mjs";
export { generate, generateBatch, score, stream, streamBatch, streamLogprobs, StopMatcher } from "./generate.mjs";
