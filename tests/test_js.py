"""The JavaScript runtime beside the Python one: both CLIs print the same bytes, for the shipped and a fresh model.

Needs Node and runtime/js's dependencies (`npm ci` in runtime/js: the README's test command runs it).
"""

import shutil
import json
import subprocess

import pytest

from charlstm.export import export
from conftest import ROOT, run_cli, train_tiny

pytestmark = pytest.mark.slow
JS = ROOT / "runtime" / "js"
OPTION_SETS = [
    ["--prime", "ALCESTE.", "-n", 300, "--seed", 1],
    ["--prime", "Je vous", "-n", 200, "--greedy"],
    ["--prime", "", "-n", 300, "--seed", 7, "--top-k", 20],
    ["-n", 300, "--seed", 8, "--top-p", 0.85, "--temperature", 1.1],
    ["--prime", "MONSIEUR", "-n", 300, "--seed", 9, "--repetition-penalty", 1.3],
    ["--prime", "ACTE", "-n", 600, "--seed", 10, "--stop", "\n\n", "--stop", "--"],
    ["--prime", "Ah!", "-n", 200, "--seed", 11, "--num-samples", 3, "--stop", "."],
    ["--prime", "D", "-n", 300, "--seed", 12, "--temperature", 1.2, "--top-k", 40, "--top-p", 0.95,
     "--repetition-penalty", 1.1, "--no-echo"],
    ["--prime", "Monsieur, je vous", "-n", 300, "--seed", 2**64 - 1, "--temperature", 0.6],
    ["--prime", "ALCESTE.", "-n", 300, "--seed", 13, "--min-p", 0.08, "--temperature", 1.1],
    ["--prime", "Je", "-n", 300, "--seed", 14, "--ban", "es", "--bias", "!=2", "--bias", "é=-1.5", "--top-k", 30],
    ["--prime", "ORGON.", "-n", 200, "--greedy", "--ban", "e\n", "--bias", "a=0.5"],
    ["-n", 300, "--seed", 15, "--num-samples", 2, "--min-p", 0.02, "--top-p", 0.9, "--ban", "A",
     "--repetition-penalty", 1.2],
    ["--prime", "ORGON.", "-n", 200, "--seed", 16, "--regex", r"\n\n[A-Z]+\.\n(Oui|Non|Ah), [a-zé ]+[.!]"],
    ["-n", 120, "--seed", 17, "--num-samples", 3, "--regex", r"[A-Z][a-z]+( [a-z]+){1,4}\.", "--temperature", 1.2,
     "--stop", " et", "--ban", "q"],
]


@pytest.fixture(scope="module")
def node():
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed")
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        pytest.fail("runtime/js has no node_modules: run `npm ci` there (the README's test command does)")
    return binary


def node_cli(node, *args, input=None):
    return subprocess.run([node, str(JS / "bin" / "charlstm-sample.mjs"), *map(str, args)], capture_output=True,
                          text=True, input=input, timeout=300)


@pytest.fixture(scope="module")
def fresh_model(moliere_slice, tmp_path_factory):
    """Trained and exported now, with its prefill graph beside it."""
    folder = tmp_path_factory.mktemp("fresh")
    result = train_tiny(moliere_slice, folder / "fresh.pt", {"num_layers": 2, "hidden_size": 64, "embed_dim": 16},
                        {"max_steps": 200, "batch_size": 32, "seq_len": 64, "lr": 5e-3, "eval_every": 100})
    return export(result.best, folder / "fresh.onnx").path


@pytest.mark.parametrize("args", OPTION_SETS, ids=lambda a: " ".join(map(str, a))[:40])
@pytest.mark.parametrize("which", ["shipped", "fresh"])
def test_node_prints_the_python_bytes(node, fresh_model, which, args):
    model = ROOT / "models" / "moliere.onnx" if which == "shipped" else fresh_model
    python, js = run_cli("charlstm-sample", model, *args), node_cli(node, model, *args)
    assert python.returncode == js.returncode == 0, (python.stderr, js.stderr)
    assert js.stdout == python.stdout
    assert js.stderr == python.stderr == ""


def test_an_int8_weights_file_prints_the_same_in_both(node, fresh_model, moliere_slice, tmp_path):
    """Both runtimes fold its dequantizing the same way when they load it (core.formats.SESSION_CONFIG)."""
    weights = export(fresh_model.with_suffix(".pt"), tmp_path / "w.onnx", quantize="int8-weights").path
    for args in (["--prime", "ORGON.", "-n", 300, "--seed", 5], ["--score", moliere_slice]):
        python, js = run_cli("charlstm-sample", weights, *args), node_cli(node, weights, *args)
        assert python.returncode == js.returncode == 0 and js.stdout == python.stdout, (python.stderr, js.stderr)


def test_scores_and_prompts_from_stdin_print_the_same(node, fresh_model, moliere_slice, tmp_path):
    text = tmp_path / "act.txt"
    text.write_text(moliere_slice.read_text()[-5000:])
    for args, given in ((["--score", text], None), (["--prime", "-", "-n", 100, "--seed", 3], "ORGON.\nEt vous")):
        python, js = run_cli("charlstm-sample", fresh_model, *args, input=given), node_cli(node, fresh_model, *args,
                                                                                         input=given)
        assert python.returncode == js.returncode == 0 and js.stdout == python.stdout, (python.stderr, js.stderr)


@pytest.mark.parametrize("args", [["--top-k", 0], ["--prime", "abc€"], ["-n", -1], ["--score", "missing.txt"],
                                  ["--score", "x", "--seed", 1], ["--temperature", "nan"]])
def test_bad_input_is_one_line_and_exit_2_in_both(node, args):
    model = ROOT / "models" / "moliere.onnx"
    for proc in (run_cli("charlstm-sample", model, *args), node_cli(node, model, *args)):
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--min-p", 0], ["--min-p", "1.5"], ["--bias", "ab=1"], ["--bias", "a"],
                                  ["--bias", "a=101"], ["--bias", "a=inf"], ["--bias", "a=1", "--bias", "a=2"],
                                  ["--ban", "€"], ["--bias", "€=1"], ["--score", "x", "--ban", "a", "--min-p", 0.1],
                                  ["--beams", 2, "--top-k", 3, "--greedy"], ["--beams", 0], ["--length-penalty", 2],
                                  ["--logprobs", 2, "--num-samples", 2], ["--regex", "a(?=b)"], ["--regex", "(a"],
                                  ["--regex", r"\d{9}", "-n", 3], ["--regex", "[☃]"], ["--regex", "[ab]", "--ban", "ab"]])
def test_the_sampling_refusals_are_the_same_line_in_both(node, args):
    model = ROOT / "models" / "moliere.onnx"
    python, js = run_cli("charlstm-sample", model, *args), node_cli(node, model, *args)
    assert python.returncode == js.returncode == 2 and python.stdout == js.stdout == ""
    assert js.stderr == python.stderr and len(python.stderr.splitlines()) == 1, (python.stderr, js.stderr)


@pytest.mark.parametrize("args", [["--greedy", "--temperature", 1], ["--temperature", 1.3, "--top-k", 5, "--min-p", 0.1],
                                  ["--bias", "!=3", "--top-p", 0.9, "--ban", "s", "--stop", "\n\n"]])
def test_logprob_records_agree_in_both(node, args):
    """The same characters, ids and alternatives; the log-probabilities to 1e-9 (numpy's and
    V8's exp and log differ in the last bit on about one input in ten)."""
    model = ROOT / "models" / "moliere.onnx"
    common = ["--prime", "Je", "-n", 300, "--seed", 2, "--logprobs", 4, *args]
    python, js = run_cli("charlstm-sample", model, *common), node_cli(node, model, *common)
    assert python.returncode == js.returncode == 0, (python.stderr, js.stderr)
    ours, theirs = ([json.loads(line) for line in p.stdout.splitlines()] for p in (python, js))
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert (a["char"], a["id"], [t["id"] for t in a["top"]]) == (b["char"], b["id"], [t["id"] for t in b["top"]])
        assert all(abs(x["logprob"] - y["logprob"]) <= 1e-9 for x, y in zip([a, *a["top"]], [b, *b["top"]]))


@pytest.mark.parametrize("args", [["--prime", "ALCESTE.", "-n", 80, "--beams", 3, "--repetition-penalty", 1.3],
                                  ["--prime", "Je", "-n", 120, "--beams", 4, "--stop", ".", "--length-penalty", 1],
                                  ["-n", 60, "--beams", 2, "--ban", "e", "--bias", "!=2", "--no-echo"],
                                  ["--prime", "ORGON.", "-n", 80, "--beams", 4, "--regex", r"(Oui|Non), [a-z]+( [a-z]+)*\."],
                                  ["-n", 60, "--beams", 3, "--regex", r"[A-Z]+\.\n[a-z ]+", "--stop", " q"]])
def test_beams_are_the_same_in_both(node, fresh_model, args):
    for model in (ROOT / "models" / "moliere.onnx", fresh_model):
        python, js = run_cli("charlstm-sample", model, *args), node_cli(node, model, *args)
        assert python.returncode == js.returncode == 0, (python.stderr, js.stderr)
        assert js.stdout == python.stdout and python.stdout.count("--- beam ") == args[args.index("--beams") + 1]


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["-n"], ["--top-k", "x"], ["a.onnx", "b.onnx"]])
def test_help_and_usage_errors_are_the_same_words(node, args):
    python, js = run_cli("charlstm-sample", *args), node_cli(node, *args)
    assert (js.returncode, js.stdout, js.stderr) == (python.returncode, python.stdout, python.stderr)
