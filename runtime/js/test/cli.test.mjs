// bin/charlstm-sample.mjs as a user runs it: output, flags, and bad input in one line with exit 2.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { pyFixed, pyPath } from "../src/pyformat.mjs";
import { golden, MODELS } from "./helpers.mjs";

const BIN = fileURLToPath(new URL("../bin/charlstm-sample.mjs", import.meta.url));

function run(args, input) {
  return spawnSync(process.execPath, [BIN, ...args.map(String)], { input, encoding: "utf8", timeout: 120_000 });
}

function badInput(proc, ...words) {
  const lines = proc.stderr.trim().split("\n");
  assert.equal(proc.status, 2, proc.stderr);
  assert.equal(lines.length, 1, proc.stderr);
  assert.ok(lines[0].startsWith("charlstm-sample: error: "), lines[0]);
  for (const word of words) assert.ok(lines[0].toLowerCase().includes(word.toLowerCase()), `${word} in ${lines[0]}`);
}

test("it samples, and a drawn seed is printed and reproduces", () => {
  const first = run([MODELS.tiny, "-n", 60, "--no-echo"]);
  assert.equal(first.status, 0, first.stderr);
  const seed = first.stderr.split(" ")[1];
  assert.match(first.stderr, /^seed \d+ \(pass --seed \d+ to get this text again\)\n$/);
  assert.equal(run([MODELS.tiny, "-n", 60, "--no-echo", "--seed", seed]).stdout, first.stdout);
  const greedy = run([MODELS.tiny, "--prime", "ab", "-n", 20, "--greedy"]);
  assert.equal(greedy.stderr, "", "greedy text does not depend on a seed: none is printed");
  assert.equal(run([MODELS.tiny, "--prime", "-", "-n", 20, "--greedy"], "ab").stdout, greedy.stdout);
});

test("bad input: one line, exit 2", () => {
  const cases = [
    [["--temperature", "-1"], ["temperature"]], [["--top-p", "0"], ["top-p"]], [["--top-k", "0"], ["top-k"]],
    [["-n", "-5"], ["-n"]], [["--prime", "abcxyz"], ["'x', 'y', 'z'", "vocabulary"]], [["--seed", "abc"], ["--seed"]],
    [["--seed", "-5"], ["--seed", "x>=0"]], [["--temperature", "inf"], ["finite"]], [["--bogus"], ["--bogus"]],
    [["--score", "x.txt", "--seed", "3"], ["--score", "drop --seed"]], [["--unknown", "maybe"], ["--unknown"]],
  ];
  for (const [args, words] of cases) badInput(run([MODELS.tiny, ...args]), ...words);
  badInput(run(["/nonexistent.onnx"]), "does not exist");
  badInput(run([MODELS.tiny, "--prime", "-"], Buffer.from([0x61, 0xfe])), "standard input is not UTF-8 (byte 0xfe at offset 1)");
});

test("--help lists the flags", () => {
  const help = run(["--help"]);
  assert.equal(help.status, 0);
  for (const flag of ["--prime", "--temperature", "--top-k", "--top-p", "--greedy", "--repetition-penalty", "--seed",
    "--num-samples", "--stop", "--score", "Without MODEL"]) assert.ok(help.stdout.includes(flag), flag);
});

test("numbers are formatted as Python formats them, exact ties to even", () => {
  assert.equal(pyFixed(0.125, 2), "0.12");
  assert.equal(pyFixed(0.375, 2), "0.38");
  assert.equal(pyFixed(2.5, 0), "2");
  assert.equal(pyFixed(1.0000499999, 4), "1.0000");
  assert.equal(pyFixed(0.79114, 4), "0.7911");
  assert.equal(pyFixed(-0.125, 2), "-0.12");
  assert.equal(pyPath("./a//b/./c.txt"), "a/b/c.txt");
  assert.equal(pyPath("/tmp/x/"), "/tmp/x");
});

test("the Node CLI prints the Python CLI's transcripts: stdout, stderr and exit status", () => {
  const folder = fileURLToPath(new URL("../../../tests/golden/", import.meta.url));
  for (const c of golden("transcripts.json")) {
    const proc = spawnSync(process.execPath, [BIN, ...c.argv], { cwd: folder, encoding: "utf8" });
    assert.deepEqual([proc.stdout, proc.stderr, proc.status], [c.stdout, c.stderr, c.status], c.argv.join(" "));
  }
});
