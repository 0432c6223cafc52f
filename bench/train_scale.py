"""Training at scale: corpus preparation speed and charlstm-train's peak memory against corpus size; 1 vs 2 processes.

    python bench/train_scale.py [--corpus PATH] [--sizes 10,100,1000] [--folder DIR] [--out bench/results]

Builds corpora of the given sizes (MB) by repeating --corpus (the Molière file), then for each:
the preparation (train/prepare.py, a fresh cache) in its own process, its MB/s of UTF-8 text
(timed inside its process) and peak RSS; and charlstm-train on it (the default 2 x 512 model, 30 steps, one validation on
a 0.05% tail so that the run is short), its peak RSS, cache included, cold. Then the default
model's training speed on 2 cores: one process (2 threads) against torchrun with 2 processes
(1 thread each, gloo), the same 64 global lanes. Prints tables; writes train_scale.json.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared_corpus import MOLIERE, ROOT

BIN = Path(sys.executable).parent
TRAIN = ["--max-steps", "30", "--eval-every", "30", "--val-fraction", "0.0005", "--no-progress"]
PREPARE = ("import sys, time; from charlstm.train.prepare import prepare; t0 = time.perf_counter();"
           " prepare(sys.argv[1], cache_dir=sys.argv[2]); print(time.perf_counter() - t0)")


def make_corpus(source: Path, megabytes: int, folder: Path) -> Path:
    path = folder / f"corpus-{megabytes}MB.txt"
    if not path.exists():
        data = source.read_bytes()
        copies = -(-megabytes * 1_000_000 // len(data))
        with open(path, "wb") as f:
            for _ in range(copies):
                f.write(data)
    return path


def measured(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of the largest of its processes, stdout) of a command run to its end."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child and the children it waited for
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {err.read().strip()[-800:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def chars_per_second(stdout: str) -> float:
    return float(re.search(r"\(([\d,]+) chars/s\)", stdout).group(1).replace(",", ""))


def scale(sizes: list[int], source: Path, folder: Path) -> dict:
    rows = {}
    print(f"{'corpus':>8} {'prepare s':>10} {'MB/s':>7} {'prepare RSS MB':>15} {'train RSS MB':>13}")
    for mb in sizes:
        corpus = make_corpus(source, mb, folder)
        cache = folder / f"cache-{mb}"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        _, prep_rss, out = measured([sys.executable, "-c", PREPARE, str(corpus), str(cache)])
        seconds = float(out)  # inside the process: the interpreter's start is not preparation
        shutil.rmtree(cache)
        cache.mkdir()
        _, train_rss, _ = measured([str(BIN / "charlstm-train"), str(corpus), "-o", str(folder / f"m{mb}.pt"),
                                    "--cache-dir", str(cache), *TRAIN])
        size = corpus.stat().st_size / 1e6
        rows[mb] = {"corpus_mb": size, "prepare_s": seconds, "prepare_mb_per_s": size / seconds,
                    "prepare_rss_mb": prep_rss, "train_rss_mb": train_rss}
        print(f"{size:>6.0f}MB {seconds:>10.1f} {size / seconds:>7.0f} {prep_rss:>15.0f} {train_rss:>13.0f}", flush=True)
        shutil.rmtree(cache)
    return rows


def processes(corpus: Path, folder: Path) -> dict:
    """The default model on 2 cores: one process against torchrun's two, 64 global lanes."""
    args = [str(corpus), "--max-steps", "20", "--eval-every", "20", "--val-fraction", "0.0005", "--no-progress",
            "--cache-dir", str(folder)]
    _, _, one = measured([str(BIN / "charlstm-train"), *args, "-o", str(folder / "one.pt")])
    _, _, two = measured([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "charlstm.train", *args,
                          "-o", str(folder / "two.pt")])
    row = {"one_process_cps": chars_per_second(one), "two_processes_cps": chars_per_second(two)}
    row["ratio"] = row["two_processes_cps"] / row["one_process_cps"]
    print(f"\ndefault model, 64 lanes x 128, 20 steps: 1 process (2 threads) {row['one_process_cps']:,.0f} chars/s;"
          f" torchrun 2 processes (1 thread each) {row['two_processes_cps']:,.0f} chars/s = {row['ratio']:.2f}x")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=MOLIERE)
    parser.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB")
    parser.add_argument("--folder", type=Path, default=None, help="keep the corpora here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = scale([int(s) for s in args.sizes.split(",")], args.corpus, folder)
        speed = processes(make_corpus(args.corpus, 10, folder), folder)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_scale.json").write_text(json.dumps({"sizes": rows, "processes": speed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
