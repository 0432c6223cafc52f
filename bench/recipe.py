"""Today's training recipe against the regularised one: held-out nats/char for the same wall-clock budget, on the real corpus.

    python bench/recipe.py [CORPUS] [--budgets 10,60] [--sizes default,small] [--seeds 0] [--threads 1] [--precision bf16]

For each model size and budget (minutes of training on this machine) both recipes train with
charlstm-train, their step count set so that the learning-rate schedule ends with the budget
(from two short calibration runs of each), validating up to 20 times (validations take at
most a tenth of the budget). With two or more free
cores the two recipes run side by side, one thread each, so that they share the machine
alike; otherwise (or with --back-to-back) one after the other. Prints, per size and budget, each recipe's best held-out
loss (the trainer's validation) and throughput, and the ratio new / today; with several
--seeds, a line per seed and their means (a short budget of a big model ends near where it
leaves the unigram plateau, and when that happens varies from seed to seed); writes
bench/results/recipe.json and the validation curves to bench/results/recipe.png. "new" is the
default model's flags with --regularization-epochs 32 (a budget of fewer epochs trains with
its dropouts scaled down) and --init unit-gain (which the shipped model predates). Both
train in bf16 where this machine can (train.loop.supports), else in fp32.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from charlstm.train.loop import supports
from shared_corpus import MOLIERE

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SIZES = {"default": ["--hidden-size", "512", "--num-layers", "3", "--embed-dim", "64"],
         "small": ["--hidden-size", "256", "--num-layers", "2", "--embed-dim", "64"]}
CALIBRATION = 20  # steps of the short calibration run
RECIPES = {
    "today": ["--dropout", "0.3"],
    "new": ["--dropout", "0", "--input-dropout", "0.1", "--hidden-dropout", "0.25", "--output-dropout", "0.2",
            "--weight-drop", "0.4", "--ema", "0.999", "--regularization-epochs", "32", "--init", "unit-gain"],
}


def train(corpus: Path, out: Path, size: str, recipe: str, machine: list, steps: int, evals: int, seed: int):
    """`machine`: the flags that say how to use this machine (threads, precision), the same for both recipes."""
    command = [BIN / "charlstm-train", corpus, "-o", out, *SIZES[size], *RECIPES[recipe], *machine, "--seed", seed,
               "--no-progress", "--max-steps", steps, "--epochs", 1000, "--eval-every", max(1, steps // evals)]
    return subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, out: Path) -> dict:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"charlstm-train failed:\n{stderr[-2000:]}")
    ckpt = torch.load(out.with_suffix(".last.pt"), weights_only=True)
    history, steps = ckpt["train"]["history"], ckpt["train"]["step"]
    return {"chars_per_s": steps * 64 * 128 / ckpt["train"]["seconds"], "seconds": ckpt["train"]["seconds"],
            "best_val": min(h["val_loss"] for h in history), "history": history, "steps": steps}


def run_pair(corpus, folder, size, machine, plans, side_by_side, seed) -> dict:
    """Both recipes, each with its (steps, validations); their results by recipe."""
    procs = {}
    results = {}
    for recipe in RECIPES:
        steps, evals = plans[recipe]
        out = folder / f"{size}-{recipe}-{steps}-{seed}.pt"
        procs[recipe] = (train(corpus, out, size, recipe, machine, steps, evals, seed), out)
        if not side_by_side:
            results[recipe] = finish(*procs[recipe])
    for recipe, (proc, out) in procs.items():
        if recipe not in results:
            results[recipe] = finish(proc, out)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=MOLIERE)
    parser.add_argument("--budgets", default="10,60", help="minutes of training, comma-separated")
    parser.add_argument("--sizes", default="default,small")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated: each pair runs once per seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 where this machine trains in it")
    parser.add_argument("--back-to-back", action="store_true", help="one recipe at a time, even with cores to spare")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "recipe.json")
    args = parser.parse_args()
    side_by_side = not args.back_to_back and len(os.sched_getaffinity(0)) >= 2 * args.threads
    precision = args.precision or ("bf16" if supports("bf16", torch.device("cpu")) else "fp32")
    machine = ["--threads", args.threads, "--precision", precision]
    print(f"{precision}, {args.threads} thread(s) per recipe, " + ("side by side" if side_by_side else "back to back"),
          flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes.split(","):
            short, long = (run_pair(args.corpus, folder, size, machine, {r: (n, 1) for r in RECIPES}, side_by_side,
                                    seeds[0]) for n in (CALIBRATION, 2 * CALIBRATION))
            for budget in map(float, args.budgets.split(",")):
                plans = {r: _plan(budget * 60, short[r]["seconds"], long[r]["seconds"]) for r in RECIPES}
                pairs = []
                for seed in seeds:
                    pairs.append(run_pair(args.corpus, folder, size, machine, plans, side_by_side, seed))
                    rows.append({"size": size, "budget_min": budget, "seed": seed, "threads": args.threads,
                                 "precision": precision, "side_by_side": side_by_side, **pairs[-1]})
                    table.append(_line(f"{size:<8} {budget:>6g} {seed:>5}", pairs[-1]))
                    print(table[-1], flush=True)
                if len(seeds) > 1:
                    table.append(_line(f"{size:<8} {budget:>6g} {'mean':>5}", _mean(pairs)))
                    print(table[-1], flush=True)
    print(f"\n{'size':<8} {'budget':>6} {'seed':>5} {'today: steps':>12} {'chars/s':>9} {'val':>8} {'new: steps':>10}"
          f" {'chars/s':>9} {'val':>8} {'new/today':>9}  (val: best held-out nats/char; budget in minutes)")
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    _plot(rows, args.out.with_suffix(".png"))


def _line(head: str, pair: dict) -> str:
    today, new = pair["today"], pair["new"]
    return (f"{head} {today['steps']:>12,.0f} {today['chars_per_s']:>9,.0f} {today['best_val']:>8.4f}"
            f" {new['steps']:>10,.0f} {new['chars_per_s']:>9,.0f} {new['best_val']:>8.4f}"
            f" {new['best_val'] / today['best_val']:>9.3f}")


def _mean(pairs: list) -> dict:
    """Each recipe's steps, throughput and best validation averaged over the seeds' pairs."""
    keys = ("steps", "chars_per_s", "best_val")
    return {r: {k: sum(p[r][k] for p in pairs) / len(pairs) for k in keys} for r in RECIPES}


def _plan(budget: float, short: float, long: float) -> tuple[int, int]:
    """Steps and validations that fill `budget` seconds, validations taking at most a tenth of
    it (at most 20, at least 2), from runs of CALIBRATION and 2 x CALIBRATION steps that
    validate once each."""
    per_step = max(1e-3, (long - short) / CALIBRATION)
    validation = max(0.0, short - CALIBRATION * per_step)
    evals = max(2, min(20, int(0.1 * budget / validation) if validation else 20))
    return max(20, int((budget - evals * validation) / per_step)), evals


def _plot(rows: list, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        for recipe in RECIPES:
            h = row[recipe]["history"]
            ax.plot([e["seconds"] / 60 for e in h], [e["val_loss"] for e in h],
                    label=f"{row['size']}, {row['budget_min']:g} min, seed {row['seed']}, {recipe}",
                    linestyle="-" if recipe == "new" else "--")
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("held-out nats/char")
    # The first validations sit on the unigram plateau (~3.3): show the curves below it, all of them.
    vals = [[e["val_loss"] for e in row[r]["history"]] for row in rows for r in RECIPES]
    ax.set_ylim(top=min(max(map(max, vals)), 1.5 * max(map(min, vals))))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
