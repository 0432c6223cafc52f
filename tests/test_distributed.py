"""charlstm-train under torchrun: two processes (gloo, CPU) against one, interruption and resume, bad input."""

import os
import signal
import subprocess
import time

import pytest
import torch

from charlstm.core.artifacts import latest_path
from charlstm.train import load_checkpoint
from conftest import BIN, run_cli

pytestmark = pytest.mark.slow
ARGS = ["--hidden-size", 32, "--num-layers", 2, "--embed-dim", 8, "--seq-len", 16, "--batch-size", 8,
        "--eval-every", 10, "--no-progress"]


def torchrun(*args, processes: int = 2) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={processes}", "-m", "charlstm.train",
            *map(str, args)]


def run(*args, processes: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun(*args, processes=processes), capture_output=True, text=True, timeout=600)


def max_difference(a, b) -> float:
    return max(float((a.state_dict[k] - b.state_dict[k]).abs().max()) for k in a.state_dict)


def test_two_processes_train_what_one_trains(tiny_corpus, tmp_path):
    """Same global lanes, dropout 0 (each rank draws its own masks): the same losses and
    weights to float tolerance; the gathered carried state is the single process's."""
    common = [tiny_corpus, *ARGS, "--dropout", 0, "--max-steps", 40]
    two = run(*common, "-o", tmp_path / "two.pt")
    assert two.returncode == 0, two.stderr
    one = run_cli("charlstm-train", *common, "-o", tmp_path / "one.pt", env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    a, b = load_checkpoint(tmp_path / "one.last.pt"), load_checkpoint(tmp_path / "two.last.pt")
    assert max_difference(a, b) < 1e-5
    for x, y in zip(a.train.history, b.train.history):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-6)
    assert b.resume.h.shape == a.resume.h.shape == (2, 8, 32)
    assert torch.allclose(a.resume.h, b.resume.h, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == [
        "two.last.pt", "two.loss.png", "two.pt"], "rank 0 alone writes"
    assert two.stderr.count("done:") == 0 and two.stdout.count("done:") == 1, "rank 0 alone speaks"


def interrupt(command: list[str], out, env=None) -> str:
    """Start a training, Ctrl-C it (the whole process group, as a terminal does) once it has
    saved a resumable checkpoint; its stderr."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    deadline = time.time() + 300
    while not latest_path(out).exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=120)[1]


def test_an_interrupted_distributed_run_resumes_exactly(tiny_corpus, tmp_path):
    common = [tiny_corpus, *ARGS, "--dropout", 0.1, "--max-steps", 200]
    full = run(*common, "-o", tmp_path / "full.pt")
    assert full.returncode == 0, full.stderr
    out = tmp_path / "cut.pt"
    stderr = interrupt(torchrun(*common, "-o", out), out)
    lines = [line for line in stderr.splitlines() if line.startswith("charlstm-train:")]
    assert len(lines) == 1 and "interrupted at step" in lines[0] and "--resume" in lines[0], stderr
    step = load_checkpoint(latest_path(out)).resume.step
    assert 0 < step < 200
    (tmp_path / "one.last.pt").write_bytes(latest_path(out).read_bytes())
    again = run(*common, "-o", out, "--resume", latest_path(out))
    assert again.returncode == 0 and f"from step {step}" in again.stderr, again.stderr
    a, b = load_checkpoint(tmp_path / "full.last.pt"), load_checkpoint(latest_path(out))
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert [h["val_loss"] for h in a.train.history] == [h["val_loss"] for h in b.train.history]
    alone = run_cli("charlstm-train", *common, "-o", tmp_path / "one.pt", "--resume", tmp_path / "one.last.pt")
    assert alone.returncode == 0 and load_checkpoint(tmp_path / "one.last.pt").resume.step == 200, alone.stderr


def test_a_single_process_run_resumes_on_two(tiny_corpus, tmp_path):
    """The carried state of 8 lanes is split 4 + 4; with dropout 0 the result is the one-process run's."""
    common = [tiny_corpus, *ARGS, "--dropout", 0, "--max-steps", 1500, "--epochs", 100]
    assert run_cli("charlstm-train", *common, "-o", tmp_path / "full.pt", env={"OMP_NUM_THREADS": "1"}).returncode == 0
    out = tmp_path / "cut.pt"
    interrupt([str(BIN / "charlstm-train"), *map(str, common), "-o", str(out)], out, {"OMP_NUM_THREADS": "1"})
    assert load_checkpoint(latest_path(out)).resume.step < 1500
    again = run(*common, "-o", out, "--resume", latest_path(out))
    assert again.returncode == 0, again.stderr
    assert max_difference(load_checkpoint(tmp_path / "full.last.pt"), load_checkpoint(latest_path(out))) < 1e-5


def test_bad_input_fails_every_rank_with_one_line(tiny_corpus, tmp_path):
    for args, words in (([tiny_corpus, "--batch-size", 7], "cannot be split evenly over 2 processes"),
                        ([tmp_path / "missing.txt"], "does not exist"),
                        ([tiny_corpus, "--num-layers", 0], "--num-layers")):
        proc = subprocess.run(torchrun(*args, "-o", tmp_path / "m.pt"), capture_output=True, text=True, timeout=300)
        ours = [line for line in proc.stderr.splitlines() if line.startswith("charlstm-train:")]
        assert proc.returncode != 0 and len(ours) == 1 and words in ours[0], proc.stderr
        assert not (tmp_path / "m.pt").exists()


def test_two_processes_average_the_weights_as_one_does(tiny_corpus, tmp_path):
    """--ema under torchrun: every rank keeps the same average (the weights are the same after
    each all-reduce), so the best checkpoint and the saved average match one process's."""
    common = [tiny_corpus, *ARGS, "--dropout", 0, "--max-steps", 20, "--ema", 0.9]
    two = run(*common, "-o", tmp_path / "two.pt")
    assert two.returncode == 0, two.stderr
    one = run_cli("charlstm-train", *common, "-o", tmp_path / "one.pt", env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    assert max_difference(load_checkpoint(tmp_path / "one.pt"), load_checkpoint(tmp_path / "two.pt")) < 1e-5
    a, b = load_checkpoint(tmp_path / "one.last.pt"), load_checkpoint(tmp_path / "two.last.pt")
    assert max(float((x - y).abs().max()) for x, y in zip(a.resume.average, b.resume.average, strict=True)) < 1e-5
