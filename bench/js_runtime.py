"""The JavaScript runtimes against the Python runtime: batch-1 generation of the default model, fp32 and quantized.

    python bench/js_runtime.py [--chars 2000] [--rounds 7] [--out bench/results]

Needs Node with runtime/js's packages (`npm ci` there), Chromium, and the train extra (the int8
and int8-weights graphs are exported from models/moliere.pt by charlstm-export, in its own
process, so that torch stays out of this one). The Python runtime (this process), onnxruntime-node (a Node process kept
open) and the browser (the demo page in headless Chromium, onnxruntime-web's WebAssembly,
opened afresh each turn, served with the cross-origin isolation headers that allow threads and
without them) take turns generating --chars characters after a line break (seed 0), each turn
after 0.2 s of rest; each ratio is the median of the rounds' own ratios. The page also gives the
time from opening it to the first character, and how each quantized file's page speed compares
with the fp32 file's (the smallest file a page can ship should be no slower). Prints a table;
writes js_runtime.json to --out.
"""

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from charlstm.runtime import Model, generate
from child import Child
from shared_corpus import ROOT

JS = ROOT / "runtime" / "js"
SERVED = JS / "test-artifacts"  # served with the repository, ignored by git
TARGETS = {"node": 0.8, "browser": 0.5}


def quantized_model(kind: str) -> Path:
    """The default model exported with --quantize KIND, named by its checkpoint (exported once)."""
    checkpoint = ROOT / "models" / "moliere.pt"
    out = SERVED / f"moliere-{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]}.{kind}.onnx"
    if not out.exists():
        SERVED.mkdir(exist_ok=True)
        cli = Path(sys.executable).parent / "charlstm-export"
        subprocess.run([str(cli), str(checkpoint), "-o", str(out), "--quantize", kind, "--no-prefill"], check=True,
                       capture_output=True)
    return out


def rounds(models: dict, chars: int, count: int) -> dict[str, list]:
    """Each runtime in turn on each model, `count` times after one round of warm-up, each turn
    after 0.2 s of rest: seconds (Python, Node) or the page's figures (browser)."""
    node, pages = (Child([shutil.which("node"), JS / "bench" / script, chars], cwd=JS)
                   for script in ("turns.mjs", "browser.mjs"))
    python = {name: Model(path, prefill=None) for name, path in models.items()}
    turns = {}
    for name, path in models.items():
        url = str(Path(path).relative_to(ROOT))
        turns[f"python {name}"] = lambda m=python[name]: _timed(lambda: generate(m, "\n", chars, seed=0))
        turns[f"node {name}"] = lambda p=path: float(node.ask(str(p)))
        for mode in ("isolated", "plain"):
            turns[f"{mode} {name}"] = lambda u=url, m=mode: json.loads(pages.ask(f"{m} {u}"))
    results = {k: [] for k in turns}
    for _ in range(count + 1):
        for key, turn in turns.items():
            time.sleep(0.2)
            results[key].append(turn())
    node.close()
    pages.close()
    return {k: v[1:] for k, v in results.items()}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    models = {"fp32": ROOT / "models" / "moliere.onnx", **{k: quantized_model(k) for k in ("int8", "int8-weights")}}
    times = rounds(models, args.chars, args.rounds)
    rows = {}
    print(f"default model (3 x 512), batch 1, {args.chars} characters per turn, {args.rounds} paired rounds\n")
    print(f"{'runtime':<36} {'chars/s':>8} {'vs Python':>10} {'target':>8}  first character after page open")
    for name in models:
        py = args.chars / statistics.median(times[f"python {name}"])
        node_ratio = statistics.median(p / n for p, n in zip(times[f"python {name}"], times[f"node {name}"]))
        rows[name] = {"python_cps": py, "node_cps": args.chars / statistics.median(times[f"node {name}"]),
                      "node_ratio": node_ratio}
        print(f"{'Python (onnxruntime) ' + name:<36} {py:>8,.0f} {'1.00x':>10}")
        print(f"{'Node (onnxruntime-node) ' + name:<36} {rows[name]['node_cps']:>8,.0f} {node_ratio:>9.2f}x"
              f" {'>= 0.8x':>8} {'met' if node_ratio >= TARGETS['node'] else 'NOT MET'}")
        for mode in ("isolated", "plain"):
            pages = times[f"{mode} {name}"]
            cps = statistics.median(p["charsPerSecond"] for p in pages)
            ratio = statistics.median(p["charsPerSecond"] * t / args.chars for p, t in zip(pages, times[f"python {name}"]))
            first = statistics.median(p["firstCharSincePageMs"] for p in pages) / 1000
            threads = pages[0]["threads"]
            rows[name].update({f"browser_{mode}_threads": threads, f"browser_{mode}_cps": cps,
                               f"browser_{mode}_ratio": ratio, f"browser_{mode}_first_char_s": first})
            label = f"browser (wasm, {threads} thread{'s' * (threads > 1)}) {name}"
            target = name == "fp32" and ratio < TARGETS["browser"]
            print(f"{label:<36} {cps:>8,.0f} {ratio:>9.2f}x {'>= 0.5x' if name == 'fp32' else '':>8}"
                  f" {('NOT MET' if target else 'met') if name == 'fp32' else '':<8} {first:.2f} s")
    for name in models:
        if name == "fp32":
            continue
        for mode in ("isolated", "plain"):  # the same page's speed on this file against the fp32 file
            vs = statistics.median(q["charsPerSecond"] / f["charsPerSecond"]
                                   for q, f in zip(times[f"{mode} {name}"], times[f"{mode} fp32"]))
            rows[name][f"browser_{mode}_vs_fp32"] = vs
            print(f"page ({mode}) {name} / fp32: {vs:.2f}x {'(no slower: met)' if vs >= 0.95 else '(slower)'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "js_runtime.json").write_text(json.dumps({"chars": args.chars, "rounds": args.rounds, "rows": rows},
                                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
