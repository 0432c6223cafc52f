"""Every command the README and docs/ show is run by a test: here, in a folder of its own on a tiny model, or by the named test.

A command added to a code block without a test to run it fails `test_every_documented_command_has_a_test`.
"""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("", "sh", "bash", "console")  # code blocks of commands; ```text, ```python, ```js are not
COMMENT = re.compile(r"\s+# .*$")
# What trains in minutes at the documented sizes trains in seconds at these (the last value of a
# flag is the one click keeps).
TINY = " --hidden-size 32 --num-layers 1 --embed-dim 16 --max-steps 6 --eval-every 3 --batch-size 8 --seq-len 32"

# The commands this file runs, as written but for TINY and the comment, in a folder that has what
# they name (../shared/data/moliere.txt, corpus.txt, act1.txt, char_rnn.pt); each file's blocks in
# their order, README.md first.
RUN_HERE = {"README.md", "runtime.md"}
# The commands other tests run, and where.
ELSEWHERE = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install . && charlstm-sample --prime "ALCESTE." -n 300 --seed 1':
        "tests/test_sample_cli.py::test_base_install_has_no_torch_and_samples",
    "python -m pytest -m \"not slow\"": ".ci/run",
    "pip install torch==2.13.0 '.[train]'": "test_the_documented_installs_name_what_pyproject_declares",
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && pip install '.[train]'":
        "test_the_documented_installs_name_what_pyproject_declares",
    "torchrun --standalone --nproc_per_node=4 -m charlstm.train corpus.txt -o model.pt --batch-size 256":
        "tests/test_distributed.py::test_two_processes_train_what_one_trains",
    "cd runtime/js && npm pack": "tests/test_npm_package.py::test_the_readme_snippet_runs_in_the_fresh_folder",
    "cd my-app && ONNXRUNTIME_NODE_INSTALL=skip npm install /path/to/charlstm-0.1.0.tgz onnxruntime-node":
        "tests/test_npm_package.py::test_the_readme_snippet_runs_in_the_fresh_folder",
    "cd runtime/js && ONNXRUNTIME_NODE_INSTALL=skip npm ci": ".ci/run",
    'node bin/charlstm-sample.mjs ../../models/moliere.onnx --prime "ALCESTE." -n 300 --seed 1':
        "tests/test_js.py::test_node_prints_the_python_bytes",
    "node runtime/js/demo/serve.mjs": "runtime/js/test/serve.test.mjs",
    "pip install '.[serve]'": "test_the_documented_installs_name_what_pyproject_declares",
    "charlstm-serve": "tests/test_serve.py::test_the_cli_refuses_an_open_host_without_a_key_and_stops_cleanly_on_sigterm",
    "curl -s 127.0.0.1:8000/v1/completions -d '{\"prompt\": \"ALCESTE.\", \"max_tokens\": 80, \"seed\": 1}'":
        "tests/test_serve.py::test_the_documented_examples_run",
}
SERVER = "http://127.0.0.1:8000/v1"  # Python examples naming it talk to charlstm-serve (test_serve runs them)
ELSEWHERE_FILES = {"foreign.md": "tests/test_foreign.py::test_the_documented_commands_run"}


def blocks(path: Path, languages) -> list[str]:
    """The bodies of the file's fenced code blocks in these languages, in order."""
    found, language, body = [], None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```") and language is None:
            language, body = line[3:].strip(), []
        elif line.startswith("```"):
            found += ["\n".join(body) + "\n"] if language in languages else []
            language = None
        elif language is not None:
            body.append(line)
    return found


def commands(path: Path) -> list[str]:
    """Each command line of the file's shell blocks, without its comment."""
    return [c for block in blocks(path, SHELL) for c in (COMMENT.sub("", line).strip() for line in block.splitlines()) if c]


def documented() -> list[tuple[str, str]]:
    return [(path.name, command) for path in DOCS for command in commands(path)]


def readme_test_command() -> str:
    return next(c for name, c in documented() if name == "README.md" and c.endswith("(cd runtime/js && npm test)"))


def test_every_documented_command_has_a_test():
    ELSEWHERE[readme_test_command()] = ".ci/run"
    missing = [f"{name}: {command}" for name, command in documented()
               if name not in RUN_HERE | set(ELSEWHERE_FILES) and command not in ELSEWHERE]
    assert not missing, "documented commands that no test runs (run them here or name the test):\n" + "\n".join(missing)
    for where in {*ELSEWHERE.values(), *ELSEWHERE_FILES.values()}:
        if where == ".ci/run" or "::" not in where:
            continue
        path, name = where.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), f"{where} does not exist"
    assert (ROOT / "runtime/js/test/serve.test.mjs").is_file()


def test_the_readme_test_command_is_what_ci_runs():
    assert readme_test_command() in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_documented_installs_name_what_pyproject_declares():
    """pip lines (not run here: they download) ask for extras that exist and the torch CI installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ci = (ROOT / ".ci" / "run").read_text()
    pips = [c for _, c in documented() if "pip install" in c]
    assert pips
    for command in pips:
        for extras in re.findall(r"\.\[([a-z,]+)\]", command):
            assert set(extras.split(",")) <= set(project["optional-dependencies"]), command
        for torch_spec in re.findall(r"torch==[0-9.]+", command):
            assert torch_spec in ci, command


def _sandbox(tmp_path, slice_text) -> Path:
    """A work folder with the files the documented commands name."""
    from foreign_models import CharRNN

    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / "moliere.txt").write_text(slice_text, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    (work / "corpus.txt").write_text(slice_text, encoding="utf-8")
    (work / "act1.txt").write_text(slice_text[:5000], encoding="utf-8")
    chars = "".join(sorted(set(slice_text)))
    net = CharRNN(chars, n_hidden=16, n_layers=1, drop_prob=0.0)
    torch.save({"n_hidden": 16, "n_layers": 1, "state_dict": net.state_dict(), "tokens": chars}, work / "char_rnn.pt")
    return work


@pytest.mark.slow
def test_the_documented_commands_run(moliere_slice, tmp_path):
    work = _sandbox(tmp_path, moliere_slice.read_text(encoding="utf-8"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ran = 0
    for path in DOCS:
        if path.name not in RUN_HERE:
            continue
        for line in commands(path):
            if line in ELSEWHERE or line == readme_test_command():
                continue
            command = line + TINY if line.startswith("charlstm-train ") else line
            proc = subprocess.run(["bash", "-c", command], cwd=work, capture_output=True, text=True, timeout=300,
                                  env=env)
            assert proc.returncode == 0, f"{path.name}: {command}\n{proc.stderr[-3000:]}"
            ran += 1
        for code in blocks(path, ("python",)):
            if SERVER in code:
                continue  # a client of charlstm-serve: tests/test_serve.py runs it against a server
            proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                                  timeout=300, env=env)
            assert proc.returncode == 0 and proc.stdout, f"{path.name}'s Python example:\n{proc.stderr[-3000:]}"
            ran += 1
    assert ran >= 15
