#!/usr/bin/env node
// charlstm-sample for Node (onnxruntime-node): the Python CLI's flags, meanings and output, so that
// the same model, prompt, options and seed print the same bytes.

import fs from "node:fs";
import { fileURLToPath } from "node:url";

import { CONTRACT } from "../src/contract.mjs";
import { HELP, LONG_OPTIONS } from "../src/help.mjs"; // click's help and options of the Python CLI, generated
import { closeMatches } from "../src/difflib.mjs";
import { BadInput, oneLine, plural } from "../src/errors.mjs";
import { Model } from "../src/model.mjs";
import { laneSeeds } from "../src/rng.mjs";
import { samplingOptions, DEFAULTS } from "../src/sampler.mjs";
import { beamSearch } from "../src/beams.mjs";
import { checkHeld, score, stream, streamBatch, streamLogprobs } from "../src/generate.mjs";
import { pyFixed, pyFloat, pyPath, pyRepr } from "../src/pyformat.mjs";

const PROG = "charlstm-sample";
const LIMITS = CONTRACT.limits;
// onnxruntime-node (1.30, Linux) matches a pattern against the process's command line with a
// recursion per character while it creates a session: a command line of about 28,000 characters
// or more overflows the stack and the process dies (SIGSEGV). Longer prompts come from a file.
const MAX_ARGV = 16384;
const DEFAULT_MODEL = fileURLToPath(new URL("../../../models/moliere.onnx", import.meta.url));

// name → [key, kind]; kind: "text", "int", "float", "flag", "many" (repeatable text)
const OPTIONS = {
  "--prime": ["prime", "text"], "--prime-file": ["primeFile", "text"], "-n": ["length", "int"], "--length": ["length", "int"],
  "--temperature": ["temperature", "float"], "--top-k": ["topK", "int"], "--top-p": ["topP", "float"],
  "--min-p": ["minP", "float"], "--bias": ["bias", "many"], "--ban": ["ban", "text"], "--regex": ["regex", "text"],
  "--greedy": ["greedy", "flag"], "--repetition-penalty": ["repetitionPenalty", "float"], "--seed": ["seed", "int"],
  "--num-samples": ["numSamples", "int"], "--logprobs": ["logprobs", "int"], "--beams": ["beams", "int"],
  "--length-penalty": ["lengthPenalty", "float"], "--stop": ["stop", "many"], "--unknown": ["unknown", "text"],
  "--echo": ["echo", "flag"], "--no-echo": ["echo", "off"], "--score": ["score", "text"], "--threads": ["threads", "int"],
};
// What --score does not use: given with it, they would be ignored, so they are refused.
const GENERATION_ONLY = { prime: "--prime", primeFile: "--prime-file", length: "-n", temperature: "--temperature", topK: "--top-k",
  topP: "--top-p", minP: "--min-p", bias: "--bias", ban: "--ban", regex: "--regex", greedy: "--greedy",
  repetitionPenalty: "--repetition-penalty", seed: "--seed",
  numSamples: "--num-samples", stop: "--stop", echo: "--echo/--no-echo", logprobs: "--logprobs", beams: "--beams",
  lengthPenalty: "--length-penalty" };
// What --beams does not use: it ranks by the model's probabilities and draws nothing.
const NOT_WITH_BEAMS = { temperature: "--temperature", topK: "--top-k", topP: "--top-p", minP: "--min-p",
  greedy: "--greedy", seed: "--seed", numSamples: "--num-samples", logprobs: "--logprobs" };

function parseArgs(argv) {
  const given = { stop: [], bias: [] };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    if (arg === "-h" || arg === "--help") return { help: true };
    let value;
    if (arg.startsWith("--") && arg.includes("=")) [arg, value] = [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)];
    else if (/^-n./.test(arg)) [arg, value] = ["-n", arg.slice(2)];
    if (!arg.startsWith("-") || arg === "-") {
      positional.push(arg);
      continue;
    }
    const spec = OPTIONS[arg];
    if (!spec) throw new BadInput(`${noSuchOption(arg)} (see ${PROG} --help)`);
    const [key, kind] = spec;
    if (kind === "flag" || kind === "off") {
      given[key] = kind === "flag";
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new BadInput(`Option '${arg}' requires an argument. (see ${PROG} --help)`);
      value = argv[++i];
    }
    const parsed = convert(value, kind, arg);
    if (kind === "many") given[key].push(parsed);
    else given[key] = parsed;
  }
  if (positional.length > 1) throw new BadInput(`Got unexpected extra argument (${positional[1]}) (see ${PROG} --help)`);
  return { given, model: positional[0] };
}

/** click's words for an unknown option: a long one gets up to three suggestions; of a short
 * one ("-xyz"), click reads the letters one by one and names the first. */
function noSuchOption(arg) {
  if (!arg.startsWith("--")) return `No such option ${pyRepr(arg.slice(0, 2))}.`;
  const close = closeMatches(arg, LONG_OPTIONS).sort();
  const names = close.map(pyRepr).join(", ");
  const hint = close.length === 0 ? "" : close.length === 1 ? ` Did you mean ${names}?` : ` (Did you mean one of: ${names}?)`;
  return `No such option ${pyRepr(arg)}.${hint}`;
}

function convert(value, kind, flag) {
  const text = value.trim();
  if (kind === "int") {
    if (!/^[+-]?\d+$/.test(text)) throw new BadInput(`Invalid value for '${flag}': '${value}' is not a valid integer. (see ${PROG} --help)`);
    return BigInt(text);
  }
  if (kind === "float") {
    const special = /^[+-]?(inf|infinity|nan)$/i.test(text);
    const number = special ? (text.toLowerCase().includes("nan") ? NaN : (text.startsWith("-") ? -Infinity : Infinity)) : Number(text);
    if (text === "" || (!special && !/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text))) {
      throw new BadInput(`Invalid value for '${flag}': '${value}' is not a valid float. (see ${PROG} --help)`);
    }
    return number;
  }
  return value;
}

/** --bias CHAR=VALUE, each once: the character (one, before the last '=') and a number. */
function biases(given) {
  const out = {};
  for (const item of given) {
    const at = item.lastIndexOf("=");
    const [char, value] = [item.slice(0, at), item.slice(at + 1)];
    let number = null;
    try {
      number = convert(value, "float", "--bias");
    } catch {
      // not a number: the message below
    }
    if (at < 0 || [...char].length !== 1 || number === null) {
      throw new BadInput(`--bias ${pyRepr(item)}: write one character, '=' and a number (--bias '!=2.5')`);
    }
    if (char in out) throw new BadInput(`--bias names ${pyRepr(char)} twice`);
    out[char] = number;
  }
  return out;
}

function rangeChecks(g) {
  if (g.seed !== undefined && g.seed < 0n) {
    throw new BadInput(`Invalid value for '--seed': ${g.seed} is not in the range x>=0. (see ${PROG} --help)`);
  }
  const ranges = [["length", "'-n' / '--length'", 0, LIMITS.maxLength], ["numSamples", "'--num-samples'", 1, LIMITS.maxBatch],
    ["threads", "'--threads'", 1, LIMITS.maxThreads], ["logprobs", "'--logprobs'", 0, CONTRACT.sampling.maxTop],
    ["beams", "'--beams'", 1, CONTRACT.sampling.maxBeams]];
  for (const [key, flag, low, high] of ranges) {
    if (g[key] !== undefined && (g[key] < BigInt(low) || g[key] > BigInt(high))) {
      throw new BadInput(`Invalid value for ${flag}: ${g[key]} is not in the range ${low}<=x<=${high}. (see ${PROG} --help)`);
    }
  }
  if (g.unknown !== undefined && !["error", "skip"].includes(g.unknown)) {
    throw new BadInput(`Invalid value for '--unknown': '${g.unknown}' is not one of 'error', 'skip'. (see ${PROG} --help)`);
  }
}

function readStdin() {
  const data = fs.readFileSync(0);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch {
    let offset = 0; // find the first byte that is not valid UTF-8, to name it as Python does
    for (; offset < data.length; offset++) {
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(0, offset + 1), { stream: true });
      } catch {
        break;
      }
    }
    throw new BadInput(`standard input is not UTF-8 (byte 0x${data[offset].toString(16).padStart(2, "0")} at offset ${offset})`);
  }
}

let interrupted = false;

async function main() {
  const size = process.argv.slice(2).reduce((sum, arg) => sum + arg.length + 1, 0);
  if (size > MAX_ARGV) {
    throw new BadInput(`the command line holds ${size.toLocaleString("en-US")} characters, more than onnxruntime-node`
      + ` survives (${MAX_ARGV.toLocaleString("en-US")} here); give a long prompt with --prime-file FILE or --prime -`);
  }
  const parsed = parseArgs(process.argv.slice(2));
  if (parsed.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const g = parsed.given;
  rangeChecks(g);
  const modelPath = parsed.model ?? DEFAULT_MODEL;
  if (parsed.model === undefined && !fs.existsSync(DEFAULT_MODEL)) {
    throw new BadInput("no MODEL given and no default model is installed; pass a .onnx file made by charlstm-export");
  }
  const ort = await import("onnxruntime-node");
  const threads = g.threads === undefined ? undefined : Number(g.threads);
  if (g.score !== undefined) {
    const extra = Object.entries(GENERATION_ONLY).filter(([key]) => Array.isArray(g[key]) ? g[key].length : key in g)
      .map(([, flag]) => flag);
    if (extra.length) throw new BadInput(`--score measures a text and does not generate: drop ${extra.join(", ")}`);
    return scoreFile(await Model.load(modelPath, { ort, threads, onNote }), g.score, g.unknown ?? "error");
  }
  if (g.beams !== undefined) {
    const extra = Object.entries(NOT_WITH_BEAMS).filter(([key]) => key in g).map(([, flag]) => flag);
    if (extra.length) {
      throw new BadInput(`--beams ranks continuations by the model's probabilities and draws nothing: drop ${extra.join(", ")}`);
    }
  } else if (g.lengthPenalty !== undefined) throw new BadInput("--length-penalty goes with --beams");
  const sampling = {
    temperature: g.temperature ?? DEFAULTS.temperature, topK: g.topK === undefined ? null : Number(g.topK),
    topP: g.topP ?? null, repetitionPenalty: g.repetitionPenalty ?? DEFAULTS.repetitionPenalty, greedy: g.greedy ?? false,
    minP: g.minP ?? null, logitBias: biases(g.bias), ban: g.ban ?? "", regex: g.regex ?? null,
  };
  const options = samplingOptions(sampling); // checks the values before the model loads
  const length = Number(g.length ?? 500n);
  const numSamples = Number(g.numSamples ?? 1n);
  checkHeld(length, numSamples);
  if (g.logprobs !== undefined && numSamples > 1) throw new BadInput("--logprobs describes one sample: drop --num-samples");
  if (g.primeFile !== undefined && g.prime) throw new BadInput("give the prompt once: --prime or --prime-file, not both");
  const model = await Model.load(modelPath, { ort, threads, onNote });
  const prime = g.primeFile !== undefined ? readText(g.primeFile, "--prime-file")
    : g.prime === "-" ? readStdin() : (g.prime ?? "");
  const chosenSeed = g.seed !== undefined;
  const seed = chosenSeed ? g.seed : BigInt(Math.floor(Math.random() * 2 ** 31));
  const unknown = g.unknown ?? "error";
  const common = { seed, stop: g.stop, unknown, ...sampling, n: length };
  const shown = g.echo === false ? "" : model.decode(model.encode(prime, unknown));
  if (g.beams !== undefined) {
    const found = await beamSearch(model, prime, { n: length, beams: Number(g.beams), lengthPenalty: g.lengthPenalty ?? 0,
      stop: g.stop, unknown, logitBias: sampling.logitBias, ban: sampling.ban, repetitionPenalty: sampling.repetitionPenalty,
      regex: sampling.regex });
    process.stdout.write(found.map((b, i) => `--- beam ${i + 1} (log-probability ${pyFixed(b.logprob, 4)}) ---\n${shown}${b.text}\n`)
      .join(""));
    return 0;
  }
  if (g.logprobs !== undefined) {
    const records = await streamLogprobs(model, prime, { ...common, top: Number(g.logprobs) });
    if (!chosenSeed && !options.greedy) process.stderr.write(`seed ${seed} (pass --seed ${seed} to get this text again)\n`);
    for await (const r of records) {
      process.stdout.write(`${jsonRecord(r)}\n`);
      if (interrupted) return 130;
    }
    return 0;
  }
  if (numSamples === 1) {
    const pieces = await stream(model, prime, common); // checks the prompt before printing
    if (!chosenSeed && !options.greedy) process.stderr.write(`seed ${seed} (pass --seed ${seed} to get this text again)\n`);
    process.stdout.write(shown);
    for await (const piece of pieces) {
      process.stdout.write(piece);
      if (interrupted) return 130;
    }
    process.stdout.write("\n");
    return 0;
  }
  const steps = await streamBatch(model, prime, { ...common, numSamples });
  const labels = laneSeeds(seed, numSamples).map((s, i) => `--- sample ${i + 1}${options.greedy ? "" : ` (seed ${s})`} ---`);
  const lanes = labels.map(() => []);
  for await (const pieces of steps) {
    pieces.forEach((piece, i) => lanes[i].push(piece));
    if (interrupted) break;
  }
  const note = interrupted ? " (interrupted)" : "";
  process.stdout.write(labels.map((label, i) => `${label}\n${shown}${lanes[i].join("")}${note}\n`).join(""));
  return interrupted ? 130 : 0;
}

/** A logprob record as Python's json.dumps(record, ensure_ascii=False, separators=(",", ":")) writes it. */
function jsonRecord(r) {
  const entry = (e) => `{"char":${JSON.stringify(e.char)},"id":${e.id},"logprob":${pyFloat(e.logprob)}`;
  return `${entry(r)},"top":[${r.top.map((t) => `${entry(t)}}`).join(",")}]}`;
}

/** A UTF-8 text file named on the command line, read as Python's read_text does (universal
 * newlines); never a pipe or a device, whose reading may never end. */
function readText(path, flag) {
  if (fs.existsSync(path) && !fs.statSync(path).isFile()) throw new BadInput(`${flag}: ${pyPath(path)} is not a regular file`);
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(fs.readFileSync(path));
  } catch (e) {
    if (e.code === "ENOENT") throw new BadInput(`text ${pyPath(path)} does not exist`);
    throw new BadInput(`cannot read ${pyPath(path)} as UTF-8 text (${e.code === "EISDIR" ? "IsADirectoryError" : "UnicodeDecodeError"})`);
  }
  return text.replace(/\r\n?/g, "\n");
}

function onNote(message) {
  process.stderr.write(`${PROG}: note: ${oneLine(message)}\n`);
}

async function scoreFile(model, path, unknown) {
  const text = readText(path, "--score");
  const s = await score(model, text, unknown);
  process.stdout.write(`${pyFixed(s.natsPerChar, 4)} nats/char (${pyFixed(s.bitsPerChar, 4)} bits/char, perplexity`
    + ` ${pyFixed(s.perplexity, 3)}) over ${plural(s.chars, "character")} of ${pyPath(path)}\n`);
  return 0;
}

function fail(message, status = 2) {
  process.stderr.write(`${PROG}: error: ${oneLine(message)}\n`);
  process.exitCode = status;
}

process.on("SIGINT", () => {
  if (interrupted) process.exit(130);
  interrupted = true;
});
process.stdout.on("error", (e) => {
  if (e.code === "EPIPE") process.exit(0); // the reader went away (| head -c 20): stop quietly
  throw e;
});

main().then((status) => {
  if (status === 130) fail("interrupted", 130);
  else process.exitCode = status;
}, (e) => {
  if (e instanceof BadInput) fail(e.message);
  else fail(`unexpected ${e?.name ?? "error"}: ${String(e?.message ?? e).split("\n")[0]}`, 1);
});
