"""Kill `charlstm-train` with SIGKILL at random moments, resume each run, compare with an uninterrupted run.

    python bench/kill_resume.py [--kills 20] [--seed 0] [--folder DIR]

A tiny model (2 x 32, dropout 0.1, 8 lanes x 16, 60 steps, validation every 5; locked dropout,
DropConnect and weight averaging unless --plain; one thread) trains on a seeded synthetic text. The reference run trains without interruption. Each of --kills runs is
killed at a random moment (startup, training, validation, a checkpoint write), then resumed
from its `.last.pt` (or started again when it died before the first one) until it finishes.
Prints one row per kill and exits 1 if any resumed run's checkpoints differ from the
reference's in one bit of their weights, optimizer state or losses.
"""

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from charlstm.core.artifacts import latest_path
from charlstm.core.files import TMP_MARK
from charlstm.train import load_checkpoint

ARGS = ["--num-layers", "2", "--embed-dim", "8", "--dropout", "0.1", "--seq-len", "16", "--batch-size", "8",
        "--eval-every", "5", "--lr", "1e-2", "--no-progress", "--threads", "1"]
REGULARISED = ["--input-dropout", "0.1", "--hidden-dropout", "0.2", "--output-dropout", "0.1", "--weight-drop", "0.3",
               "--ema", "0.9"]
TRAIN = str(Path(sys.executable).parent / "charlstm-train")


def synthetic_text(n: int = 30_000, seed: int = 0) -> str:
    """A learnable text: words of a small alphabet with a seeded Markov structure."""
    rng, letters, out = random.Random(seed), "abcdefgh ", []
    for _ in range(n):
        out.append(letters[(letters.index(out[-1]) + rng.choice((1, 1, 2, 3))) % 9 if out else 0])
    return "".join(out)


def train(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([TRAIN, str(corpus), "-o", str(out), *ARGS, *extra], capture_output=True, text=True)


def killed_then_resumed(corpus: Path, out: Path, delay: float) -> dict:
    proc = subprocess.Popen([TRAIN, str(corpus), "-o", str(out), *ARGS], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = latest_path(out)
    step = load_checkpoint(latest).resume.step if latest.exists() else 0
    leftovers = len(list(out.parent.glob(f".*{TMP_MARK}*.tmp")))
    again = train(corpus, out, "--resume", str(latest)) if latest.exists() else train(corpus, out)
    if again.returncode != 0:
        raise SystemExit(f"the resumed run failed: {again.stderr.strip()}")
    left_after = len(list(out.parent.glob(f".*{TMP_MARK}*.tmp")))
    return {"delay": delay, "finished": finished, "step": step, "tmp": leftovers, "tmp_after": left_after}


def differences(a: Path, b: Path) -> float:
    """The largest |difference| between two checkpoints' weights and optimizer moments, inf
    if their structure or losses differ; 0.0 when bit-identical."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    tensors = [(ca.state_dict[k], cb.state_dict[k]) for k in ca.state_dict]
    if ca.resume is not None:
        sa, sb = ca.resume.optimizer["state"], cb.resume.optimizer["state"]
        tensors += [(sa[i][k], sb[i][k]) for i in sa for k in ("exp_avg", "exp_avg_sq")]
        if (ca.resume.average is None) != (cb.resume.average is None):
            return float("inf")
        tensors += list(zip(ca.resume.average or [], cb.resume.average or []))
    losses = [(h["train_loss"], h["val_loss"]) for h in ca.train.history]
    if losses != [(h["train_loss"], h["val_loss"]) for h in cb.train.history]:
        return float("inf")
    return max(float((x - y).abs().max()) for x, y in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", default="32")
    parser.add_argument("--steps", default="60")
    parser.add_argument("--folder", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--plain", action="store_true", help="without the regularisation and weight averaging")
    args = parser.parse_args()
    ARGS.extend(["--hidden-size", args.hidden_size, "--max-steps", args.steps, *([] if args.plain else REGULARISED)])
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "corpus.txt"
        corpus.write_text(synthetic_text())
        t0 = time.perf_counter()
        reference = train(corpus, folder / "reference.pt")
        duration = time.perf_counter() - t0
        if reference.returncode != 0:
            raise SystemExit(reference.stderr)
        rng = random.Random(args.seed)
        print(f"reference run: {duration:.1f} s; killing {args.kills} runs at random moments in [0.2, {duration:.1f}] s")
        print(f"{'kill':>4} {'after s':>8} {'resumed from step':>18} {'tmp left':>9} {'tmp after':>10}"
              f" {'best |diff|':>12} {'last |diff|':>12}")
        bad = 0
        for i in range(args.kills):
            out = folder / f"run{i}" / "m.pt"
            out.parent.mkdir()
            row = killed_then_resumed(corpus, out, rng.uniform(0.2, duration))
            best = differences(folder / "reference.pt", out)
            last = differences(latest_path(folder / "reference.pt"), latest_path(out))
            bad += best != 0 or last != 0 or row["tmp_after"] != 0
            print(f"{i:>4} {row['delay']:>8.2f} {row['step']:>18} {row['tmp']:>9} {row['tmp_after']:>10}"
                  f" {best:>12.3g} {last:>12.3g}" + ("  (had finished)" if row["finished"] else ""), flush=True)
        print(f"\n{args.kills - bad} of {args.kills} resumed runs are bit-identical to the uninterrupted one"
              f" (torch {torch.__version__}, --threads 1)")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
