"""charlstm-train's threads on an idle machine and beside busy processes: --threads 1, all cores, torch's own defaults, charlstm's default.

    python bench/threads.py [CORPUS] [--steps 60] [--busy 0,1]

For each situation (0, 1, ... busy loops started beside it, `while :; do :; done` as in the
issue) the same small run (1 x 128, 64 x 128 characters per step) is timed with each setting;
the table gives training characters per second and each setting's time as a ratio of the best
setting's in that situation. "torch defaults" is what charlstm-train did before --threads:
all cores, libgomp's default spin before a waiting thread sleeps.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from shared_corpus import MOLIERE

BIN = Path(sys.executable).parent
CORES = len(os.sched_getaffinity(0))
SETTINGS = {  # name -> (extra flags, environment)
    "--threads 1": (["--threads", "1"], {}),
    f"--threads {CORES}": (["--threads", str(CORES)], {}),
    "torch defaults": (["--threads", str(CORES)], {"GOMP_SPINCOUNT": "300000"}),
    "charlstm default": ([], {}),
}


def rate(corpus: Path, folder: Path, steps: int, flags: list, env: dict) -> tuple[float, str]:
    """Training characters per second of one run, and the threads it says it used."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    proc = subprocess.run([str(BIN / "charlstm-train"), str(corpus), "-o", str(folder / "m.pt"), "--hidden-size",
                           "128", "--num-layers", "1", "--max-steps", str(steps), "--eval-every", str(10 * steps),
                           "--no-progress", *flags], capture_output=True, text=True, env={**clean, **env})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    threads = re.search(r"\((\d+) threads?\);", proc.stderr).group(1)
    return float(re.search(r"\(([\d,]+) chars/s\)", proc.stdout).group(1).replace(",", "")), threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=MOLIERE)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--busy", default="0,1", help="busy loops beside the run, comma-separated")
    args = parser.parse_args()
    print(f"{CORES} cores; {args.steps} steps of a 1 x 128 model\n")
    print(f"{'busy loops':>10}  {'setting':<18} {'threads':>7} {'chars/s':>9} {'time / best':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for busy in map(int, args.busy.split(",")):
            loops = [subprocess.Popen(["bash", "-c", "while :; do :; done"]) for _ in range(busy)]
            try:
                rates = {name: rate(args.corpus, Path(tmp), args.steps, *setting) for name, setting in SETTINGS.items()}
            finally:
                for loop in loops:
                    loop.kill()
            best = max(r for r, _ in rates.values())
            for name, (r, threads) in rates.items():
                print(f"{busy:>10}  {name:<18} {threads:>7} {r:>9,.0f} {best / r:>11.2f}")


if __name__ == "__main__":
    main()
