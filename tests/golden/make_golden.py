"""Regenerate the golden files that the Python and JavaScript suites both read (JSON).

    python tests/golden/make_golden.py        # needs the train extra; rewrites tests/golden/

- tiny.onnx, tiny.prefill.onnx: a tiny model (2 x 16, vocabulary "abcdef") and torch's
  outputs for it (steps.json: 100 steps x 3 lanes from random states; the greedy and a
  seeded text through the runtime's sampler on torch's logits).
- rng.json: SplitMix64's first outputs for some seeds, and their uniform doubles.
- sampler.json: logits, options, seed and window → the characters picked, step by step.
- regex.json: patterns over a small vocabulary → which strings match and what may follow, and refusals.
- refusals.json: edits of tiny.onnx's metadata → the line every runtime refuses the file with.
- stops.json: stop strings and a text fed one character at a time → what the matcher lets out.
- scores.json: a model and a text → nats per character (to 1e-9 across runtimes) and characters.
- transcripts.json: argv of charlstm-sample → its stdout, stderr and exit status.
- texts.json: the Python runtime's texts for the tiny and the shipped model, with every
  sampling option, stop strings and several samples: what any runtime must print.

Rerunning on another machine or torch version may change the tiny weights in the last bits;
the tests then pass against the new files, which is the point: they pin torch's outputs to
the graph, and the runtimes to each other.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "bench")]  # conftest, and what it imports

from charlstm.export import export  # noqa: E402
from charlstm.export.agreement import random_state  # noqa: E402
from charlstm.runtime import Model, SamplingOptions, beam_search, generate_batch, score, stream_logprobs  # noqa: E402
from charlstm.runtime.rng import Streams, splitmix64  # noqa: E402
from charlstm.runtime.sampler import Picker  # noqa: E402
from charlstm.runtime.regex import compile_regex  # noqa: E402
from charlstm.core.errors import BadInput  # noqa: E402
from charlstm.train import build_model, load_checkpoint  # noqa: E402
from conftest import markov_text, train_tiny  # noqa: E402

STEPS, BATCH = 100, 3
PROMPT, LENGTH, SEED = "abca", 120, 7
SAMPLING = {"temperature": 1.0, "top_k": 5}
SHIPPED = HERE.parents[1] / "models" / "moliere.onnx"
# (model, prompt, length, options, seed, stop strings, samples): each option alone and together
CASES = [
    ("tiny", "abc", 300, {"greedy": True}, None, [], 1),
    ("tiny", "", 300, {"temperature": 1.0}, 3, [], 1),
    ("tiny", "fed", 200, {"temperature": 1.3, "top_k": 3}, 11, [], 1),
    ("tiny", "a", 200, {"temperature": 0.9, "top_p": 0.8}, 12, [], 1),
    ("tiny", "ab", 200, {"temperature": 1.0, "repetition_penalty": 1.5}, 13, [], 1),
    ("tiny", "abcdef", 200, {"temperature": 1.1, "top_k": 4, "top_p": 0.9, "repetition_penalty": 0.8}, 14, ["ff"], 1),
    ("tiny", "de", 150, {"temperature": 1.2}, 2**64 - 2, ["ca", "eee"], 4),
    ("moliere", "ALCESTE.", 300, {"greedy": True}, None, [], 1),
    ("moliere", "", 300, {}, 1, [], 1),
    ("moliere", "\n", 300, {"temperature": 0.5}, 2, [], 1),
    ("moliere", "Monsieur, ", 300, {"temperature": 1.0, "top_k": 40}, 3, [], 1),
    ("moliere", "Je vous", 300, {"temperature": 0.9, "top_p": 0.9}, 4, [], 1),
    ("moliere", "TARTUFFE.", 300, {"repetition_penalty": 1.3}, 5, [], 1),
    ("moliere", "DORINE.\n", 400, {"temperature": 0.8, "top_k": 30, "top_p": 0.95, "repetition_penalty": 1.1},
     6, ["\n\n"], 3),
    ("tiny", "ab", 200, {"temperature": 1.0, "min_p": 0.1}, 15, [], 1),
    ("tiny", "c", 200, {"temperature": 1.2, "logit_bias": {"a": 2.0, "e": -1.0}, "ban": "f"}, 16, [], 2),
    ("moliere", "ALCESTE.", 300, {"temperature": 0.9, "min_p": 0.05}, 7, [], 1),
    ("moliere", "Je ", 300, {"ban": "e", "logit_bias": {"!": 1.5}, "top_p": 0.95, "min_p": 0.02}, 8, [], 1),
]
CASES += [
    ("moliere", "ALCESTE.\n", 200, {"regex": r"(Oui|Non), [a-z]+( [a-z]+)*\.", "temperature": 1.0}, 9, [], 1),
    ("tiny", "ab", 100, {"regex": "(abc|fed)+", "min_p": 0.1}, 17, [], 2),
    ("moliere", "", 150, {"regex": r"[A-Z]+\.\n[^\n]+", "ban": "x", "top_k": 20}, 10, ["!"], 1),
    ("moliere", "Je", 120, {"regex": r"( [a-zé]+){3,8}[.!?]", "greedy": True, "repetition_penalty": 1.3}, None, [], 1),
]
REGEX_VOCAB = list("abc01 \n-.é")
REGEX_PATTERNS = ["a*b", "(ab|c)+", "[a-c]{2,3}", "[^a]*", r"\d+(\.\d{1,2})?", "a?b?c?", "(a|b)*c{2}", r"[\-.a]+",
                  r"\w+\s\w+", "^a.b$", "(?:ab){0,2}c*", "[]a]", "a{3}", "[é-é]+", r"\x61\u0062", "(a|)(b|)"]
REGEX_REFUSED = ["a(?=b)", r"(a)\1", "a*?", "a++", "(a", "a)", "[a", "*a", r"a\b", "a^b", "[c-a]", "a{2,1}", "a{1001}",
                 "q", r"\q", "a\\"]
SAMPLER_VOCAB = list("abcdefghijkl")  # the characters of the sampler cases' 12 logits


def floats(array) -> list:
    """float32 values as JSON numbers that read back to the same float32 (their exact float64)."""
    return np.asarray(array, np.float32).astype(np.float64).tolist()


def torch_text(model, vocab, prompt: str, options: SamplingOptions, seed: int) -> str:
    """Generation with torch's logits and the runtime's sampler."""
    index = {ch: i for i, ch in enumerate(vocab)}
    picker = Picker(options, [seed])
    recent = np.full((1, options.repetition_window), -1)
    with torch.no_grad():
        logits, state = model(torch.tensor([index[ch] for ch in prompt])[:, None])
        logits, out = logits[-1].numpy(), []
        for _ in range(LENGTH):
            token = picker.choose(logits, recent)
            out.append(vocab[int(token[0])])
            logits, state = model(torch.as_tensor(token)[None], state)
            logits = logits[0].numpy()
    return "".join(out)


def torch_steps(model) -> dict:
    cfg, rng = model.config, np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (STEPS, BATCH))
    h, c = random_state(cfg.num_layers, BATCH, cfg.hidden_size, rng)
    record = {"tokens": tokens.tolist(), "h0": floats(h), "c0": floats(c), "logits": [], "h": [], "c": []}
    with torch.no_grad():
        state = (torch.from_numpy(h), torch.from_numpy(c))
        for step in range(STEPS):
            logits, state = model(torch.from_numpy(tokens[step])[None], state)
            for key, value in (("logits", logits[0]), ("h", state[0]), ("c", state[1])):
                record[key].append(floats(value.numpy()))
    return record


def rng_vectors() -> list[dict]:
    out = []
    for seed in (0, 1, 7, 1234567, 2**63, 2**64 - 1):
        state, outputs = seed, []
        for _ in range(5):
            state, z = splitmix64(state)
            outputs.append(str(z))
        stream = Streams([seed])
        out.append({"seed": str(seed), "outputs": outputs, "uniforms": [stream.uniforms()[0] for _ in range(5)]})
    return out


def sampler_cases() -> list[dict]:
    """Picks of the sampler on fixed logits, 40 draws each, every option."""
    rng = np.random.default_rng(5)
    logits = [rng.standard_normal(12).astype(np.float32) * 3,
              np.array([2, 2, 1, 1, 0, 0, -1, -1, 3, 3, -5, 7], np.float32)]  # ties
    cases = []
    for options in ({"temperature": 1.0}, {"temperature": 0.7, "top_k": 3}, {"temperature": 1.5, "top_p": 0.6},
                    {"temperature": 1.0, "top_k": 6, "top_p": 0.9}, {"repetition_penalty": 2.0},
                    {"greedy": True, "repetition_penalty": 3.0}, {"temperature": 1e-6},
                    {"temperature": 1.0, "min_p": 0.2}, {"min_p": 0.05, "top_k": 8, "top_p": 0.95},
                    {"temperature": 1.0, "logit_bias": {"a": 3.0, "l": -2.5}}, {"temperature": 1.3, "ban": "ikl"},
                    {"greedy": True, "ban": "l"},
                    {"logit_bias": {"b": 100.0, "c": -100.0}, "ban": "b", "min_p": 0.5, "repetition_penalty": 1.5}):
        for row in logits:
            recent = [-1] * 29 + [11, 8, 0]
            picker = Picker(SamplingOptions(**options), [99], SAMPLER_VOCAB)
            picks = [int(picker.choose(row[None], np.array([recent]))[0]) for _ in range(40)]
            cases.append({"logits": floats(row), "options": options, "vocab": SAMPLER_VOCAB, "seed": 99,
                          "recent": recent, "picks": picks})
    return cases


def regex_cases() -> dict:
    """DFAs over a small vocabulary: for each pattern, seeded strings and whether they match,
    and after each string what may come next (with unlimited room); refusals and their lines."""
    rng, cases = np.random.default_rng(8), []
    for pattern in REGEX_PATTERNS:
        dfa = compile_regex(pattern, REGEX_VOCAB)
        strings = ["".join(rng.choice(REGEX_VOCAB, rng.integers(0, 7))) for _ in range(60)]
        rows = []
        for text in strings:
            state = 0
            for ch in text:
                state = int(dfa.next[state, REGEX_VOCAB.index(ch)]) if state >= 0 else -1
            can = [] if state < 0 else dfa.allowed(state, 10**9).tolist()
            rows.append({"text": text, "match": state >= 0 and bool(dfa.accepting[state]), "next": can})
        cases.append({"pattern": pattern, "states": len(dfa.next), "strings": rows})
    refused = []
    for pattern in REGEX_REFUSED:
        try:
            compile_regex(pattern, REGEX_VOCAB)
        except BadInput as e:
            refused.append({"pattern": pattern, "message": str(e)})
    return {"vocab": REGEX_VOCAB, "cases": cases, "refused": refused}


# Metadata edits of tiny.onnx that every runtime refuses with the same line (null removes a key).
METADATA_REFUSALS = [
    {"charlstm.hidden_size": "64"}, {"charlstm.num_layers": "3"},
    {"charlstm.vocab": json.dumps(list("abcde")), "charlstm.vocab_size": "5"},
    {"charlstm.vocab": json.dumps([1, 2, 3, 4, 5, 6])}, {"charlstm.vocab": json.dumps(list("abcdea"))},
    {"charlstm.vocab_size": "7"}, {"charlstm.num_layers": None}, {"charlstm.hidden_size": "16.0"},
    {"charlstm.format": None}, {"charlstm.format": "charlstm-onnx/2"}, {"charlstm.vocab": "[\"a\", "},
    {"charlstm.graph": "prefill"}, {"charlstm.vocab_size": "٦"},
]


def with_metadata(data: bytes, changes: dict) -> bytes:
    """The model with its metadata_props changed as the JavaScript suite's withMetadata changes
    them: existing keys keep their place, new ones come last, None removes one."""
    proto = onnx.load_from_string(data)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(changes)
    del proto.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    return proto.SerializeToString()


def refusal_cases() -> list[dict]:
    """Each metadata edit and the line the Python runtime refuses the file with, loaded from
    the path model.onnx in the working directory (no prefill graph)."""
    cases = []
    data = (HERE / "tiny.onnx").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        for changes in METADATA_REFUSALS:
            path.write_bytes(with_metadata(data, changes))
            try:
                Model(Path("model.onnx") if Path.cwd() == Path(tmp) else path, prefill=None)
            except BadInput as e:
                cases.append({"metadata": changes, "message": str(e).replace(str(path), "model.onnx")})
            else:
                raise SystemExit(f"not refused: {changes}")
    return cases


STOP_CASES = [(["\n\n", "END"], "ab\nc\n\nd"), (["aa"], "baaab"), (["abc", "bcd"], "xabcd"), (["ab", "b"], "cab"),
              (["--"], "a-b--c"), ([""], "abc"), (["é!"], "caféé!"), (["aab"], "aaab"), (["\n"], "abc")]
SCORE_TEXTS = [("tiny", "abcdefabcdef"), ("tiny", "fedcbaffff"), ("moliere", "ALCESTE.\nMonsieur, je vous"),
               ("moliere", "Ah! madame, que dites-vous?\n\nDORINE.\n")]


def stop_cases() -> list[dict]:
    """The stop matcher fed one character at a time: what each push lets out, then the flush."""
    from charlstm.runtime.generate import _StopMatcher

    cases = []
    for stops, text in STOP_CASES:
        m = _StopMatcher(stops)
        pieces = [m.push(ch) if not m.done else "" for ch in text] + [m.flush()]
        cases.append({"stops": stops, "text": text, "pieces": pieces, "done": m.done})
    return cases


BEAM_CASES = [  # model, prompt, n, beams, options (Python's names)
    ("tiny", "a", 12, 3, {"ban": "f"}), ("tiny", "", 20, 2, {"stop": ["ee"], "length_penalty": 1.0}),
    ("moliere", "ORGON.\n", 60, 4, {"repetition_penalty": 1.2}),
    ("moliere", "ALCESTE.\n", 80, 3, {"regex": r"(Oui|Non), [a-z ]+\.", "logit_bias": {"!": 2.0}}),
]
LOGPROB_CASES = [  # model, prompt, n, top, seed, options
    ("tiny", "ab", 20, 3, 1, {"min_p": 0.1}), ("moliere", "Je ", 40, 5, 2, {"temperature": 0.7, "top_k": 20}),
    ("moliere", "", 30, 2, None, {"greedy": True, "ban": "_"}),
]


def beam_cases(models: dict) -> list[dict]:
    return [{"model": which, "prompt": prompt, "length": n, "beams": k, "options": options,
             "found": [{"text": b.text, "logprob": b.logprob, "score": b.score}
                       for b in beam_search(models[which], prompt, n, k, **options)]}
            for which, prompt, n, k, options in BEAM_CASES]


def logprob_cases(models: dict) -> list[dict]:
    return [{"model": which, "prompt": prompt, "length": n, "top": top, "seed": seed, "options": options,
             "records": [r.to_dict() for r in stream_logprobs(models[which], prompt, n, top, seed=seed, **options)]}
            for which, prompt, n, top, seed, options in LOGPROB_CASES]


def score_cases(models: dict) -> list[dict]:
    return [{"model": which, "text": text, "nats_per_char": score(models[which], text).nats_per_char,
             "chars": score(models[which], text).chars} for which, text in SCORE_TEXTS]


TRANSCRIPTS = [  # argv of charlstm-sample, run in tests/golden
    ["--help"], ["tiny.onnx", "--prime", "abc", "-n", "40", "--seed", "3"],
    ["tiny.onnx", "--prime", "fed", "-n", "30", "--greedy"],
    ["tiny.onnx", "-n", "20", "--seed", "4", "--num-samples", "2", "--top-k", "3", "--stop", "ff"],
    ["tiny.onnx", "--prime", "ab", "-n", "5", "--seed", "1", "--logprobs", "2", "--min-p", "0.1"],
    ["tiny.onnx", "--prime", "a", "-n", "12", "--beams", "3", "--ban", "f"],
    ["tiny.onnx", "--prime", "c", "-n", "30", "--seed", "2", "--regex", "(abc|def)+", "--bias", "a=1"],
    ["tiny.onnx", "--top-k", "0"], ["tiny.onnx", "--ban", "z"], ["tiny.onnx", "--regex", "a(?=b)"],
    ["tiny.onnx", "--beams", "2", "--seed", "1"], ["tiny.onnx", "-n", "-1"], ["tiny.onnx", "--prime", "xyz"],
    ["missing.onnx"], ["tiny.onnx", "--score", "missing.txt"],
    ["tiny.onnx", "--tmperature", "1"], ["tiny.onnx", "--to", "1"], ["tiny.onnx", "--seedd=4"], ["tiny.onnx", "-xyz"],
]


def transcript_cases() -> list[dict]:
    """What the Python CLI prints for each argv (in tests/golden, at the help's fixed width)."""
    cli = Path(sys.executable).parent / "charlstm-sample"
    out = []
    for argv in TRANSCRIPTS:
        proc = subprocess.run([str(cli), *argv], cwd=HERE, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "80"})
        out.append({"argv": argv, "stdout": proc.stdout, "stderr": proc.stderr, "status": proc.returncode})
    return out


def text_cases(models: dict) -> list[dict]:
    out = []
    for which, prompt, n, options, seed, stop, samples in CASES:
        texts = generate_batch(models[which], prompt, n, samples, seed=seed, stop=stop, **options)
        out.append({"model": which, "prompt": prompt, "length": n, "options": options,
                    "seed": None if seed is None else str(seed), "stop": stop, "samples": samples, "texts": texts})
    return out


def write(name: str, content) -> None:
    (HERE / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "abcdef.txt"
        corpus.write_text(markov_text(20_000))
        result = train_tiny(corpus, Path(tmp) / "tiny.pt", train_args={"max_steps": 40})
        export(result.best, HERE / "tiny.onnx")
        ckpt = load_checkpoint(result.best)
    model, vocab = build_model(ckpt), ckpt.vocab
    steps = torch_steps(model)
    steps["texts"] = {"prompt": PROMPT, "length": LENGTH, "seed": SEED, "sampling": SAMPLING,
                      "greedy": torch_text(model, vocab, PROMPT, SamplingOptions(greedy=True), 0),
                      "sampled": torch_text(model, vocab, PROMPT, SamplingOptions(**SAMPLING), SEED)}
    write("steps.json", steps)
    write("rng.json", rng_vectors())
    write("sampler.json", sampler_cases())
    write("regex.json", regex_cases())
    write("refusals.json", refusal_cases())
    models = {"tiny": Model(HERE / "tiny.onnx"), "moliere": Model(SHIPPED)}
    write("texts.json", text_cases(models))
    write("stops.json", stop_cases())
    write("scores.json", score_cases(models))
    write("beams.json", beam_cases(models))
    write("logprobs.json", logprob_cases(models))
    write("transcripts.json", transcript_cases())
    print(f"wrote {HERE}: tiny.onnx, tiny.prefill.onnx, steps.json, rng.json, sampler.json, regex.json, refusals.json,"
          " texts.json, stops.json, scores.json, beams.json, logprobs.json, transcripts.json")


if __name__ == "__main__":
    main()
