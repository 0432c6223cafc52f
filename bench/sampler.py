"""The sampler's cost per character: `choose` alone and the whole generation loop, default model.

    python bench/sampler.py [--model models/moliere.onnx] [--chars 3000] [--repeats 7] [--json PATH]
    python bench/sampler.py --against CHECKOUT   # plain sampling here against another revision's

`choose` is timed on the default model's real logits (114 characters) at batch 1 and 64, with
no filter, with top-k + top-p, with a repetition penalty, with min-p, with a bias and bans, and
the regex constraint's per-step mask alone; the loop is batch-1 generation
(onnxruntime's step included), for context; beam search at K=4 is timed against four
sampled runs of the same length, taking turns (each beam's characters count). Medians of
--repeats; microseconds per character (per lane at batch 64).

--against takes a checkout of another revision (`git worktree add /tmp/before REV`) and times the
plain sampler (temperature 0.8, no filter) of both on the same logits, in child processes taking
turns; the ratio is the median of the turns' own ratios.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from charlstm.runtime import Model, SamplingOptions, beam_search, generate
from charlstm.runtime import sampler
from charlstm.runtime.regex import Constraint, compile_regex
from shared_corpus import ROOT

CASES = {"plain T=0.8": SamplingOptions(), "top-k 20 + top-p 0.9": SamplingOptions(top_k=20, top_p=0.9),
         "penalty 1.2": SamplingOptions(repetition_penalty=1.2), "min-p 0.05": SamplingOptions(min_p=0.05),
         "bias + ban": SamplingOptions(logit_bias={"!": 1.5}, ban="_*")}
REGEX = r"[A-Z][a-z]+( [a-z]+){1,40}\."  # the regex mask's cost, timed alone


def logits_of(model: Model, n: int) -> np.ndarray:
    """n rows of real next-character logits, from a greedy walk."""
    logits, state = model.prime(model.encode("\n"))
    rows = []
    for _ in range(n):
        rows.append(logits[0])
        logits, state = model.step([int(logits[0].argmax())], state)
    return np.stack(rows).astype(np.float32)


def time_mask(model: Model, repeats: int, steps: int = 2000) -> float:
    """Median µs per character of the regex constraint's mask at batch 1."""
    constraint = Constraint(compile_regex(REGEX, model.vocab), 1, model.start_token)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            constraint.mask(10_000)
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times) / steps


def time_choose(rows: np.ndarray, options: SamplingOptions, batch: int, repeats: int, vocab: list[str]) -> float:
    """Median µs per character (per lane) of sampler.choose over the rows."""
    picker = sampler.Picker(options, list(range(batch)), vocab)
    recent = np.full((batch, options.repetition_window), -1, np.int64)
    blocks = [np.repeat(r[None], batch, 0) for r in rows]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for block in blocks:
            picker.choose(block, recent)
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times) / (len(rows) * batch)


# A child's timing of the plain sampler, on `charlstm` as found first on its sys.path.
CHILD = """
import statistics, sys, time
import numpy as np
from charlstm.runtime.sampler import Picker, SamplingOptions
rows, repeats = np.load(sys.argv[1]), int(sys.argv[2])
picker, recent = Picker(SamplingOptions(), [0]), np.full((1, 32), -1, np.int64)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    for r in rows:
        picker.choose(r[None], recent)
    times.append(time.perf_counter() - t0)
print(1e6 * statistics.median(times) / len(rows))
"""


def against(checkout: Path, rows: np.ndarray, turns: int, repeats: int) -> tuple[float, float, float]:
    """Median µs per character of the plain sampler here and in `checkout`, and the median ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp, "other", "charlstm")
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        for part in ("core", "runtime"):
            (package / part).symlink_to(checkout.resolve() / part)
        np.save(Path(tmp, "rows.npy"), rows)
        run = lambda path: float(subprocess.run(  # noqa: E731
            [sys.executable, "-c", f"import sys; sys.path[:0] = {path!r}\n{CHILD}", str(Path(tmp, "rows.npy")),
             str(repeats)], capture_output=True, text=True, check=True).stdout)
        pairs = [(run([]), run([str(package.parent)])) for _ in range(turns)]
    now, other = (statistics.median(p[i] for p in pairs) for i in (0, 1))
    return now, other, statistics.median(a / b for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "moliere.onnx")
    parser.add_argument("--chars", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--against", type=Path, default=None, help="a checkout of another revision")
    args = parser.parse_args()
    model = Model(args.model)
    rows = logits_of(model, 500)
    if args.against:
        now, other, ratio = against(args.against, rows, args.repeats, args.repeats)
        print(f"plain sampler, µs per character: here {now:.2f}, {args.against} {other:.2f}; here / there {ratio:.3f}")
        return
    results = {}
    print(f"{'choose, µs per character':<34} {'batch 1':>8} {'batch 64':>9}")
    for name, options in CASES.items():
        results[name] = {b: time_choose(rows if b == 1 else rows[:100], options, b, args.repeats, model.vocab)
                         for b in (1, 64)}
        print(f"{name:<34} {results[name][1]:>8.2f} {results[name][64]:>9.2f}")
    results["regex mask"] = time_mask(model, args.repeats)
    print(f"{'regex mask (added to any of these)':<34} {results['regex mask']:>8.2f}")
    loop = statistics.median(_timed(lambda: generate(model, "\n", args.chars, seed=0)) for _ in range(args.repeats))
    results["generation µs/char"] = 1e6 * loop / args.chars
    print(f"{'batch-1 generation (with the step)':<34} {results['generation µs/char']:>8.1f}")
    pairs = [(_timed(lambda: beam_search(model, "\n", 300, 4)),
              _timed(lambda: [generate(model, "\n", 300, seed=s) for s in range(4)])) for _ in range(args.repeats)]
    results["beams 4 / four sampled runs, chars/s"] = statistics.median(runs / beams for beams, runs in pairs)
    print(f"{'beam search K=4 against 4 runs':<34} {results['beams 4 / four sampled runs, chars/s']:>7.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
