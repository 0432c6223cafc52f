"""The figures of a model card: validation loss, size, generation speed, samples (runtime only).

    python bench/model_card.py models/moliere.onnx ../shared/data/moliere.txt

Scores the last --val-fraction of the corpus (the split charlstm-train held out) from zero
state with the runtime's `score`, also its first --slice characters (the figure the shipped
model's test checks), times batch-1 generation, and draws three seeded samples.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from charlstm.core.corpus import VAL_FRACTION, held_out, read_corpus
from charlstm.runtime import Model, generate, score

SAMPLES = [(0.5, 1), (0.8, 2), (1.0, 3)]  # (temperature, seed)


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
    for temperature, seed in SAMPLES:
        text = generate(model, args.prime, 400, temperature=temperature, seed=seed)
        print(f"\n### temperature {temperature}, seed {seed}\n\n```text\n{text}\n```")


if __name__ == "__main__":
    main()
