"""Runtime benchmark: generation, priming, batching, cold start, footprint, int8 — one table.

    python bench/runtime.py [--checkpoint models/moliere.pt] [--corpus PATH] [--footprint] [--out bench/results]

Exports the checkpoint (fp32 with its prefill graph, and int8) into a temporary folder, and a
128 x 1 contrast model trained for a few seconds on the corpus (the one the checkpoint was
trained on: it also gives the 2,000-character prompt and the validation text). The runtime is
measured in a torch-free process and torch's step loop in another; batch-1 generation, the
weight-streaming floor, int8, torch's step loop and batches of 1/8/64/256 take turns, 3 x
--repeats rounds, and each ratio is the median of the rounds' own ratios, so that the machine's
drift does not decide a verdict. Writes runtime.json and runtime.png to --out (--footprint also
sizes two fresh virtual environments). Needs the train extra (torch is the baseline).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np

from charlstm.core.corpus import held_out, read_corpus
from charlstm.runtime import Model, generate, score, stream_batch
from child import Child
from shared_corpus import MOLIERE, ROOT


def median_time(fn, repeats: int, pause: float = 0.0) -> float:
    """Median wall time of fn() over `repeats` calls, each after `pause` seconds of rest."""
    times = []
    for _ in range(repeats):
        time.sleep(pause)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_step_loop(ckpt_path: Path, n: int):
    """The notebook way: the checkpoint in torch, one character per call, default settings."""
    import torch
    from charlstm.train import build_model, load_checkpoint

    model = build_model(load_checkpoint(ckpt_path))

    def run():
        with torch.no_grad():
            token, state = torch.zeros(1, 1, dtype=torch.long), None
            for _ in range(n):
                logits, state = model(token, state)
                token = torch.multinomial(torch.softmax(logits[0], -1), 1)
    return run


def save_weights(ckpt_path: Path, path: Path) -> Path:
    """The matrices one step streams (LSTM input and recurrent weights, output layer) as .npz."""
    from charlstm.train import load_checkpoint

    sd = load_checkpoint(ckpt_path).state_dict
    np.savez(path, **{k: v.numpy() for k, v in sd.items() if k.startswith(("lstm.weight", "head.weight"))})
    return path


def weight_floor(weights: Path, n: int, only: str = ""):
    """Streaming every weight matrix (whose name starts with `only`) once per character: numpy
    matrix-vector products. With only="lstm.weight_hh": the recurrent weights alone, which even a
    sequence graph must stream once per character, one character after the other."""
    with np.load(weights) as z:
        mats = [z[k] for k in z.files if k.startswith(only)]
    vecs = [np.ones(m.shape[1], np.float32) for m in mats]

    def run():
        for _ in range(n):
            for m, v in zip(mats, vecs):
                m @ v
    return run


def cold_start(cmd: list[str], repeats: int) -> float:
    return median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), repeats)


def peak_rss_mb(model_path: Path, n: int) -> float:
    """VmHWM of a fresh process generating n characters (ru_maxrss would carry over the
    parent's peak across exec)."""
    code = (f"from charlstm.runtime import Model, stream\n"
            f"for _ in stream(Model({str(model_path)!r}), 'A', {n}, seed=0): pass\n"
            f"print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out) / 1024


PACKAGE_SIZES = """
import importlib.metadata as m, json, pathlib
def size(p): return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
sizes = {}
for d in m.distributions():
    tops = {pathlib.Path(str(f)).parts[0] for f in d.files or [] if not str(f).startswith("..")}
    site = pathlib.Path(d.locate_file(""))
    sizes[d.metadata["Name"].lower()] = sum(size(site / t) for t in tops if (site / t).exists()) / 1e6
print(json.dumps(sizes))
"""  # MB on disk per distribution: its top-level folders and files in site-packages, .pyc included
VENV_TOOLS = ("pip", "setuptools")  # what `python -m venv` puts there before any install


def install_footprint(extras: str, folder: Path) -> tuple[dict[str, float], float]:
    """A fresh venv with charlstm{extras}: MB on disk per installed distribution (the venv's own
    tools left out), and the whole folder's MB."""
    venv.create(folder, with_pip=True)
    pip = [str(folder / "bin" / "pip"), "install", "-q"]
    if "train" in extras:
        subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, f"{ROOT}{extras}"], check=True)
    out = subprocess.run([str(folder / "bin" / "python"), "-c", PACKAGE_SIZES], check=True,
                         capture_output=True, text=True).stdout
    sizes = {k: v for k, v in json.loads(out).items() if k not in VENV_TOOLS}
    return sizes, sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def contrast_checkpoint(corpus: Path, folder: Path) -> Path:
    from charlstm.train import Trainer

    Trainer(corpus, {"hidden_size": 128, "num_layers": 1}, {"max_steps": 60}).run(
        folder / "small.pt", progress=False, log=lambda m: None)
    return folder / "small.pt"


BATCHES = (1, 8, 64, 256)


def turn_chars(chars: int) -> dict[str, int]:
    """Characters generated (over all streams) in each turn of a --chars run."""
    batches = {f"batch{b}": b * max(50, chars // b) for b in BATCHES}
    return {"runtime": chars, "floor": chars, "int8": chars, "torch": chars // 4, **batches}


def runtime_turns(model: Model, quantized: Model, weights: Path, chars: int) -> dict:
    """The turns the torch-free process takes: generation in fp32 and int8, the floor, batches."""
    turns = {"runtime": lambda: generate(model, "\n", chars, seed=0), "floor": weight_floor(weights, chars),
             "int8": lambda: generate(quantized, "\n", chars, seed=0)}
    for b in BATCHES:
        turns[f"batch{b}"] = batch_turn(model, b, turn_chars(chars)[f"batch{b}"] // b)
    return turns


def batch_turn(model: Model, batch: int, steps: int):
    return lambda: [None for _ in stream_batch(model, "\n", steps, num_samples=batch, seed=0)]


def runtime_figures(model: Model, quantized: Model, weights: Path, corpus: Path, repeats: int,
                    val_chars: int) -> dict:
    """The runtime's other figures: priming and validation loss."""
    text, row = read_corpus(corpus), {}
    prompt = text[len(text) // 2:][:2000]
    for name, prefill in (("", model), ("int8_", quantized)):  # time to the first character of a fresh
        plain = Model(prefill.name, prefill=None)  # call: the threads of the last one at rest
        for key, m in (("prefill", prefill), ("steps", plain)):
            row[f"prime_{name}{key}_ms"] = 1e3 * median_time(lambda: generate(m, prompt, 1, seed=0), repeats, 0.2)
    row["prime_recurrent_floor_ms"] = 1e3 * median_time(weight_floor(weights, len(prompt), "lstm.weight_hh"), repeats)
    val = held_out(text)[1][:val_chars]
    row["val_nats"], row["int8_val_nats"] = score(model, val).nats_per_char, score(quantized, val).nats_per_char
    return row


def serve(turns: dict, figures=None) -> None:
    """A measuring process's loop: each line on stdin names a turn, run once, its seconds printed;
    "figures" prints figures() as JSON."""
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name == "figures":
            print(json.dumps(figures()), flush=True)
            continue
        t0 = time.perf_counter()
        turns[name]()
        print(time.perf_counter() - t0, flush=True)


def measuring(*args) -> Child:
    """This script run as a measuring process (serve), driven line by line."""
    return Child([sys.executable, __file__, *args], ready=True)


def take_turns(children: dict, rounds: int) -> dict[str, list[float]]:
    """Each named measurement in turn, `rounds` times, each after 0.2 s of rest (so that no thread
    of the last one still spins): a drift in the machine's speed hits them all alike."""
    times = {name: [] for name in children}
    for _ in range(rounds):
        for name, child in children.items():
            time.sleep(0.2)
            times[name].append(float(child.ask(name)))
    return times


def bench_model(name: str, ckpt: Path, folder: Path, args) -> dict:
    from charlstm.export import export

    fp32 = export(ckpt, folder / f"{name}.onnx").path
    int8 = export(ckpt, folder / f"{name}.int8.onnx", quantize="int8").path
    n, r = args.chars, args.repeats
    row = {"model": name, "size_mb": fp32.stat().st_size / 1e6, "int8_size_mb": int8.stat().st_size / 1e6}
    weights = save_weights(ckpt, folder / f"{name}.weights.npz")
    # The runtime in a torch-free process, torch's step loop in another (with torch's thread pool in
    # the same process, the runtime ran 5% slower); the two take turns with the floor and int8.
    rt = measuring("--serve-runtime", fp32, int8, weights, "--corpus", args.corpus, "--chars", n, "--repeats", r,
               "--val-chars", args.val_chars)
    chars = turn_chars(n)
    tc = measuring("--serve-torch", ckpt, "--chars", chars["torch"])
    times = take_turns({turn: tc if turn == "torch" else rt for turn in chars}, 3 * r)
    row.update({f"{k}_cps": chars[k] / statistics.median(t) for k, t in times.items()})
    per_char = {k: [x / chars[k] for x in t] for k, t in times.items()}

    def paired(slow: str, fast: str) -> float:  # the median of the rounds' own ratios
        return statistics.median(a / b for a, b in zip(per_char[slow], per_char[fast]))
    row.update(floor_ratio=paired("runtime", "floor"), torch_ratio=paired("torch", "runtime"),
               batch64_ratio=paired("batch1", "batch64"))
    row.update(json.loads(rt.ask("figures")))
    rt.close()
    tc.close()
    sample = [str(Path(sys.executable).parent / "charlstm-sample"), str(fp32), "-n", "1", "--seed", "0"]
    row["cold_start_s"] = cold_start(sample, r)
    torch_cmd = [sys.executable, "-c", "import sys, torch; from charlstm.train import build_model, load_checkpoint;"
                 " m = build_model(load_checkpoint(sys.argv[1])); m(torch.zeros(1, 1, dtype=torch.long))", str(ckpt)]
    row["torch_cold_start_s"] = cold_start(torch_cmd, r)
    row["peak_rss_mb"] = peak_rss_mb(fp32, 20_000)
    return row


def ratio(a: str, b: str):
    return lambda r: r[a] / r[b]


TARGETS = [  # (what, value(row), target text, passed(x), what bounds it on this machine (row) or None)
    ("batch-1 generation vs torch step loop", lambda r: r["torch_ratio"], ">= 10x", lambda x: x >= 10,
     lambda r: f"fp32 at the floor: {r['floor_cps'] / r['torch_cps']:.1f}x; int8: {r['int8_cps'] / r['torch_cps']:.1f}x"),
    ("runtime time / weight-streaming floor", lambda r: r["floor_ratio"], "<= 1.25x", lambda x: x <= 1.25, None),
    ("priming 2,000 chars: steps / prefill", ratio("prime_steps_ms", "prime_prefill_ms"), ">= 3x", lambda x: x >= 3,
     lambda r: f"recurrent weights once per char: {r['prime_steps_ms'] / r['prime_recurrent_floor_ms']:.1f}x;"
               f" int8 prefill: {r['prime_int8_steps_ms'] / r['prime_int8_prefill_ms']:.1f}x int8 steps,"
               f" {r['prime_steps_ms'] / r['prime_int8_prefill_ms']:.1f}x fp32 steps"),
    ("batch 64 / batch 1 chars/s", lambda r: r["batch64_ratio"], ">= 5x", lambda x: x >= 5, None),
    ("cold start, seconds", lambda r: r["cold_start_s"], "< 0.4 s", lambda x: x < 0.4, None),
    ("cold start: torch / runtime", ratio("torch_cold_start_s", "cold_start_s"), ">= 4x", lambda x: x >= 4, None),
    ("peak RSS generating, MB", lambda r: r["peak_rss_mb"], "< 150", lambda x: x < 150, None),
    ("int8 size / fp32 size", ratio("int8_size_mb", "size_mb"), "<= 0.30", lambda x: x <= 0.3, None),
    ("int8 - fp32 validation nats/char", lambda r: r["int8_val_nats"] - r["val_nats"], "<= 0.01", lambda x: x <= 0.01,
     None),
    ("int8 / fp32 batch-1 chars/s", ratio("int8_cps", "runtime_cps"), "> 1x", lambda x: x > 1, None),
]


def print_table(rows: list[dict], footprint: dict | None) -> None:
    keys = [k for k in rows[0] if k != "model"]
    print(f"{'measure':<26}" + "".join(f"{r['model']:>16}" for r in rows))
    for k in keys:
        print(f"{k:<26}" + "".join(f"{r[k]:>16,.3f}" if r[k] < 100 else f"{r[k]:>16,.0f}" for r in rows))
    print(f"\n{'target (' + rows[0]['model'] + ')':<42} {'measured':>10} {'target':>9}")
    for what, value, text, passed, bound in TARGETS:
        x = value(rows[0])
        verdict = "met" if passed(x) else "NOT MET" + (f" (bound: {bound(rows[0])})" if bound else "")
        print(f"{what:<42} {x:>10.3f} {text:>9}  {verdict}")
    if footprint:
        print_footprint(footprint)


def print_footprint(footprint: dict) -> None:
    """The two installs' packages (the venv's own pip and setuptools left out), largest first."""
    base, train = footprint["base"], footprint["train"]
    for name, sizes in (("base", base), ("train", train)):
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:6])
        print(f"{name} install: {sum(sizes.values()):.0f} MB of packages ({top}, ...)")
    floor = base["numpy"] + base["onnxruntime"]
    ratio_ = sum(train.values()) / sum(base.values())
    print(f"{'base / train install (packages)':<42} {'1/' + format(ratio_, '.1f'):>10} {'<= 1/8':>9}  "
          + ("met" if ratio_ >= 8 else f"NOT MET (bound: numpy + onnxruntime alone, {floor:.0f} MB,"
                                       f" are 1/{sum(train.values()) / floor:.1f})"))
    print(f"whole virtual environments, MB: base {footprint['base_venv_mb']:.0f}, train {footprint['train_venv_mb']:.0f}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["torch step loop", "runtime fp32", "runtime int8", "weight floor"]
    keys = ["torch_cps", "runtime_cps", "int8_cps", "floor_cps"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.5), dpi=100)
    for ax, row in zip(np.atleast_1d(axes), rows):
        ax.barh(labels, [row[k] for k in keys], color=["#999", "#2a7", "#27a", "#ccc"])
        ax.set_title(f"{row['model']}: batch-1 characters/second")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "moliere.pt")
    parser.add_argument("--chars", type=int, default=1000)
    parser.add_argument("--val-chars", type=int, default=20_000)
    parser.add_argument("--corpus", type=Path, default=MOLIERE,
                        help="prompts, validation text and the contrast model's training text")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--footprint", action="store_true", help="also build two virtual environments")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--serve-runtime", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-torch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_runtime:
        fp32, int8, weights = args.serve_runtime
        model, quantized = Model(fp32), Model(int8)
        serve(runtime_turns(model, quantized, weights, args.chars),
              lambda: runtime_figures(model, quantized, weights, args.corpus, args.repeats, args.val_chars))
        return
    if args.serve_torch:
        serve({"torch": torch_step_loop(args.serve_torch, args.chars)})
        return
    if not args.corpus.is_file():
        parser.error(f"no corpus at {args.corpus}; pass --corpus, the text the checkpoint was trained on")
    args.out.mkdir(parents=True, exist_ok=True)
    import onnxruntime
    import torch

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cores;"
          f" medians of {args.repeats}; batch-1 turns: {3 * args.repeats} rounds\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [bench_model("default", args.checkpoint, folder, args),
                bench_model("128x1", contrast_checkpoint(args.corpus, folder), folder, args)]
        footprint = None
        if args.footprint:
            base, base_mb = install_footprint("", folder / "base")
            train, train_mb = install_footprint("[train]", folder / "train")
            footprint = {"base": base, "train": train, "base_venv_mb": base_mb, "train_venv_mb": train_mb}
    print_table(rows, footprint)
    (args.out / "runtime.json").write_text(json.dumps({"rows": rows, "footprint": footprint}, indent=2))
    plot(rows, args.out / "runtime.png")
    print(f"\nwrote {args.out / 'runtime.json'} and {args.out / 'runtime.png'}")


if __name__ == "__main__":
    main()
