"""The figures of a model card: validation loss, size, generation speed, samples (runtime only).

    python bench/model_card.py models/moliere.onnx ../shared/data/moliere.txt

Scores the last --val-fraction of the corpus (the split charlstm-train held out) from zero
state with the runtime's `score`, also its first --slice characters (the figure the shipped
model's test checks), times batch-1 generation, and draws a sample at each of three
temperatures: the first seed whose text has no line of spaces longer than 20 (readable()).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from charlstm.core.corpus import VAL_FRACTION, held_out, read_corpus
from charlstm.runtime import Model, generate, score

TEMPERATURES = (0.5, 0.8, 1.0)
MAX_BLANK = 20  # a sample with a line of more spaces than this is not one a reader can judge the model by


def readable(text: str) -> bool:
    """No line of spaces alone longer than MAX_BLANK (a low temperature can loop on indentation)."""
    return not any(len(line) > MAX_BLANK and not line.strip() for line in text.split("\n"))


def first_readable(model: Model, prime: str, temperature: float, n: int = 400) -> tuple[int, str]:
    """The smallest seed from 1 whose sample is readable, and the sample."""
    for seed in range(1, 100):
        text = generate(model, prime, n, temperature=temperature, seed=seed)
        if readable(text):
            return seed, text
    raise SystemExit(f"no readable sample at temperature {temperature} in 99 seeds")


def chars_per_second(model: Model, n: int = 2000, repeats: int = 3) -> float:
    times = []
    for seed in range(repeats):
        t0 = time.perf_counter()
        generate(model, "\n", n, seed=seed)
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION)
    parser.add_argument("--slice", type=int, default=5000)
    parser.add_argument("--prime", default="\n")
    args = parser.parse_args()
    model = Model(args.model)
    val = held_out(read_corpus(args.corpus), args.val_fraction)[1]  # the tail charlstm-train held out
    figures = {
        "size_bytes": args.model.stat().st_size,
        "val_chars": len(val),
        "val_nats_per_char": score(model, val).nats_per_char,
        "slice_chars": args.slice,
        "slice_nats_per_char": score(model, val[: args.slice]).nats_per_char,
        "chars_per_second_batch1": chars_per_second(model),
    }
    print(json.dumps(figures, indent=2))
    print(f"\n| validation nats/char, whole split ({len(val):,} characters, zero state) |"
          f" {figures['val_nats_per_char']:.4f} |")
    print(f"| validation nats/char, first {args.slice:,} characters of the split | {figures['slice_nats_per_char']:.4f} |")
    for temperature in TEMPERATURES:
        seed, text = first_readable(model, args.prime, temperature)
        print(f"\n### temperature {temperature}, seed {seed}\n\n```text\n{text}\n```")


if __name__ == "__main__":
    main()
