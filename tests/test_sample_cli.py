"""charlstm-sample as a user runs it: streaming, options, pipes, Ctrl-C, bad input, torch-free."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from charlstm.runtime import Model, generate, generate_batch, lane_seeds, score
from conftest import BIN, ROOT, answer_ctrl_c, assert_bad_input, blocked_env, run_cli


def test_samples_the_same_text_as_the_api(tiny_onnx):
    proc = run_cli("charlstm-sample", tiny_onnx, "--prime", "abc", "-n", 120, "--seed", 4, "--top-k", 4)
    assert proc.returncode == 0, proc.stderr
    expected = generate(Model(tiny_onnx), "abc", 120, seed=4, top_k=4)
    assert proc.stdout == "abc" + expected + "\n" and proc.stderr == ""


def test_random_seed_is_printed_and_reproduces(tiny_onnx):
    first = run_cli("charlstm-sample", tiny_onnx, "-n", 80, "--no-echo")
    seed = int(first.stderr.split()[1])
    again = run_cli("charlstm-sample", tiny_onnx, "-n", 80, "--no-echo", "--seed", seed)
    assert first.stdout == again.stdout


def test_prompt_from_stdin_greedy_and_stop(tiny_onnx):
    proc = run_cli("charlstm-sample", tiny_onnx, "--prime", "-", "--greedy", "-n", 50, input="abca")
    assert proc.stdout == "abca" + generate(Model(tiny_onnx), "abca", 50, greedy=True) + "\n"
    stopped = run_cli("charlstm-sample", tiny_onnx, "--prime", "a", "--seed", 1, "--stop", "ff", "-n", 5000)
    full = generate(Model(tiny_onnx), "a", 5000, seed=1)
    assert stopped.stdout == "a" + full[: full.index("ff")] + "\n"


def test_several_samples(tiny_onnx):
    proc = run_cli("charlstm-sample", tiny_onnx, "--prime", "de", "-n", 40, "--seed", 9, "--num-samples", 3)
    texts = generate_batch(Model(tiny_onnx), "de", 40, 3, seed=9)
    for i, (text, seed) in enumerate(zip(texts, lane_seeds(9, 3))):
        assert f"--- sample {i + 1} (seed {seed}) ---\nde{text}\n" in proc.stdout


def test_score(tiny_onnx, tiny_corpus):
    proc = run_cli("charlstm-sample", tiny_onnx, "--score", tiny_corpus)
    expected = score(Model(tiny_onnx), tiny_corpus.read_text()).nats_per_char
    assert proc.returncode == 0 and proc.stdout.startswith(f"{expected:.4f} nats/char")
    kept = run_cli("charlstm-sample", tiny_onnx, "--score", tiny_corpus, "--threads", 1, "--unknown", "skip")
    assert kept.stdout == proc.stdout, "the options --score uses are accepted"


def test_help_has_examples():
    proc = run_cli("charlstm-sample", "--help")
    assert proc.returncode == 0 and "Examples:" in proc.stdout and "--score" in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--temperature", "-1"], ["temperature"]),
    (["--top-p", "0"], ["top-p"]),
    (["--top-p", "1.5"], ["top-p"]),
    (["--top-k", "0"], ["top-k"]),
    (["-n", "-5"], ["-n"]),
    (["--prime", "abcxyz"], ["'x', 'y', 'z'", "vocabulary"]),
    (["--seed", "abc"], ["--seed"]),
    (["--seed", "-5"], ["--seed", "x>=0"]),
    (["--temperature", "inf"], ["finite"]),
])
def test_bad_options(tiny_onnx, args, words):
    assert_bad_input(run_cli("charlstm-sample", tiny_onnx, *args), *words)


def test_unknown_characters_can_be_skipped(tiny_onnx):
    """Generation continues from the characters kept ("abc"), and the echo shows those, not
    the dropped ones, which the model never saw."""
    proc = run_cli("charlstm-sample", tiny_onnx, "--prime", "abxc", "--unknown", "skip", "-n", 60, "--seed", 0)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "abc" + generate(Model(tiny_onnx), "abc", 60, seed=0) + "\n"


@pytest.mark.parametrize("args", [["--greedy"], ["--temperature", "0"]])
def test_greedy_prints_no_seed(tiny_onnx, args):
    proc = run_cli("charlstm-sample", tiny_onnx, "--prime", "ab", "-n", 30, *args)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == "ab" + generate(Model(tiny_onnx), "ab", 30, greedy=True) + "\n"
    several = run_cli("charlstm-sample", tiny_onnx, "--prime", "ab", "-n", 5, "--num-samples", 2, *args)
    assert "seed" not in several.stdout + several.stderr and several.stdout.count("--- sample") == 2


@pytest.mark.parametrize("args, named", [
    (["--seed", "3"], "--seed"), (["--prime", "ab"], "--prime"), (["-n", "10"], "-n"),
    (["--temperature", "0.8"], "--temperature"), (["--top-k", "3", "--stop", "x"], "--top-k, --stop"),
    (["--greedy"], "--greedy"), (["--no-echo"], "--echo/--no-echo"), (["--num-samples", "2"], "--num-samples"),
])
def test_score_refuses_options_it_would_ignore(tiny_onnx, tiny_corpus, args, named):
    proc = run_cli("charlstm-sample", tiny_onnx, "--score", tiny_corpus, *args)
    assert_bad_input(proc, "--score", f"drop {named}")


def test_bad_model_files(tiny_onnx, tmp_path):
    (tmp_path / "notes.onnx").write_text("hello")
    bare = tmp_path / "bare.onnx"
    import onnx

    proto = onnx.load(tiny_onnx)
    del proto.metadata_props[:]
    onnx.save(proto, bare)
    assert_bad_input(run_cli("charlstm-sample", tmp_path / "missing.onnx"), "does not exist")
    assert_bad_input(run_cli("charlstm-sample", tmp_path / "notes.onnx"), "not an ONNX model")
    assert_bad_input(run_cli("charlstm-sample", bare), "without charlstm metadata")
    assert_bad_input(run_cli("charlstm-sample", tiny_onnx, "--score", tmp_path / "none.txt"), "does not exist")


def test_broken_pipe_ends_quietly(tiny_onnx):
    proc = subprocess.run(f"set -o pipefail; '{BIN}/charlstm-sample' '{tiny_onnx}' -n 200000 --seed 1 | head -c 20",
                          shell=True, capture_output=True, text=True, executable="/bin/bash", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == 20 and proc.stderr == ""


def test_ctrl_c_ends_quietly_with_130(tiny_onnx):
    proc = subprocess.Popen([str(BIN / "charlstm-sample"), str(tiny_onnx), "-n", "100000000", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=answer_ctrl_c)
    assert proc.stdout.read(100)  # it is generating
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_generation(tiny_onnx):
    """Peak RSS after 20,000 and after 300,000 streamed characters: no growth with length."""
    script = textwrap.dedent(f"""
        import resource, sys
        from charlstm.runtime import Model, stream
        model = Model({str(tiny_onnx)!r})
        peaks = []
        for i, _ in enumerate(stream(model, "abc", 300_000, seed=0)):
            if i + 1 in (20_000, 300_000):
                peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        print(peaks[1] - peaks[0])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 2048, f"peak RSS grew by {proc.stdout.strip()} kB"


def test_runtime_runs_where_torch_and_onnx_cannot_be_imported(tiny_onnx, tmp_path):
    env = blocked_env(tmp_path, "torch", "onnx")
    script = textwrap.dedent(f"""
        import sys
        from charlstm.runtime import Model, generate, score
        m = Model({str(tiny_onnx)!r})
        print(generate(m, "abc", 30, seed=1), round(score(m, "abcdefabc").nats_per_char, 6))
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        for name in ("torch", "onnx"):
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                raise SystemExit(name + " was importable")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    m = Model(tiny_onnx)
    assert proc.stdout.split() == [generate(m, "abc", 30, seed=1), str(round(score(m, "abcdefabc").nats_per_char, 6))]
    cli = run_cli("charlstm-sample", tiny_onnx, "--prime", "abc", "-n", 30, "--seed", 1, env=env)
    assert cli.returncode == 0 and cli.stdout == "abc" + generate(m, "abc", 30, seed=1) + "\n"


@pytest.mark.slow
def test_base_install_has_no_torch_and_samples(tiny_onnx, tmp_path):
    """`pip install .` without extras, in a fresh virtual environment: the edge-device install,
    with the default model inside the installed package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    pip = subprocess.run([venv / "bin" / "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    no_torch = subprocess.run([venv / "bin" / "python", "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0
    where = subprocess.run([venv / "bin" / "python", "-c", "import charlstm.runtime as r; print(r.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    installed = Path(where).parents[1]  # site-packages/charlstm
    assert not [p for p in installed.rglob("*") if p.suffix in (".mjs", ".js", ".ts") or p.name == "node_modules"], \
        "the wheel carries no JavaScript"
    proc = subprocess.run([venv / "bin" / "charlstm-sample", tiny_onnx, "--prime", "abc", "-n", "30", "--seed", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "abc" + generate(Model(tiny_onnx), "abc", 30, seed=1) + "\n"
    train = subprocess.run([venv / "bin" / "charlstm-train", "x.txt"], capture_output=True, text=True, timeout=120)
    assert_bad_input(train, "pip install torch==2.13.0 '.[train]'")
    default = subprocess.run([venv / "bin" / "charlstm-sample", "--prime", "ALCESTE.", "-n", "40", "--seed", "2"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    shipped = Model(ROOT / "models" / "moliere.onnx")
    assert default.stdout == "ALCESTE." + generate(shipped, "ALCESTE.", 40, seed=2) + "\n"


def test_the_node_cli_prints_click_s_help_generated_from_here():
    from charlstm.runtime import cli

    assert cli.JS_HELP.read_text(encoding="utf-8") == cli.js_help_module(), \
        "run python -m charlstm.runtime.cli --write-js-help"
    assert run_cli("charlstm-sample", "--help", env={"COLUMNS": "40"}).stdout == cli.help_text()
