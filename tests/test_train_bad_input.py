"""charlstm-train on bad input: exit 2, one clear line, no traceback, nothing overwritten."""

import pytest
import torch

from charlstm.core.artifacts import latest_path
from charlstm.core.files import atomic_write
from conftest import assert_bad_input, blocked_env, markov_text, run_cli

SMALL = ["--hidden-size", 8, "--num-layers", 1, "--embed-dim", 4, "--seq-len", 8, "--batch-size", 4]


def corpus_file(tmp_path, data: bytes):
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, words", [
    (b"", ["empty"]),
    (b"abc\x00\x01\x02" * 100, ["binary"]),
    ("café".encode("latin-1") * 100, ["not utf-8", "offset 3"]),
    (b"abcdef" * 5, ["too short"]),
    (b"abcdef" * 7, ["too short"]),
])
@pytest.mark.slow
def test_bad_corpus(tmp_path, data, words):
    assert_bad_input(run_cli("charlstm-train", corpus_file(tmp_path, data), "-o", tmp_path / "m.pt", *SMALL), *words)


@pytest.mark.slow
def test_missing_corpus(tmp_path):
    assert_bad_input(run_cli("charlstm-train", tmp_path / "nope.txt", "-o", tmp_path / "m.pt"), "does not exist")


@pytest.mark.parametrize("option, value, words", [
    ("--num-layers", "0", ["--num-layers"]),
    ("--dropout", "1", ["--dropout"]),
    ("--lr", "-0.1", ["--lr"]),
    ("--hidden-size", "many", ["--hidden-size"]),
    ("--val-fraction", "1.5", ["--val-fraction"]),
    ("--device", "tpu", ["--device"]),
    ("--clip", "0", ["--clip"]),
    ("--weight-decay", "-1", ["--weight-decay"]),
])
@pytest.mark.slow
def test_nonsense_options(tiny_corpus, tmp_path, option, value, words):
    proc = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", option, value)
    assert_bad_input(proc, *words)


@pytest.mark.slow
def test_output_folder_missing(tiny_corpus, tmp_path):
    proc = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "no" / "m.pt", *SMALL)
    assert_bad_input(proc, "does not exist")


@pytest.mark.slow
def test_resume_refuses_foreign_and_mismatched_checkpoints(tiny_corpus, tiny_checkpoint, tmp_path):
    text_file = corpus_file(tmp_path, b"not a checkpoint at all")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(latest_path(tiny_checkpoint).read_bytes()[:5000])
    other_corpus = tmp_path / "other.txt"
    other_corpus.write_text(markov_text(20_000, seed=7))
    out = ["-o", tmp_path / "m.pt"]
    latest = latest_path(tiny_checkpoint)
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, *out, "--resume", text_file), "not a readable")
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, *out, "--resume", truncated), "not a readable")
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, *out, "--resume", tiny_checkpoint), "optimizer")
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, *out, "--resume", latest, "--hidden-size", 99),
                     "--hidden-size 16, not 99")
    assert_bad_input(run_cli("charlstm-train", other_corpus, *out, "--resume", latest), "another corpus")


@pytest.mark.slow
def test_resume_refuses_a_pickled_object(tiny_corpus, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "charlstm-checkpoint/1", "x": torch.nn.Linear(2, 2)}, evil)
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", "--resume", evil),
                     "plain data only")


@pytest.mark.slow
def test_without_the_train_extra(tiny_corpus, tmp_path):
    proc = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", env=blocked_env(tmp_path, "torch"))
    assert_bad_input(proc, "pip install torch==2.13.0 '.[train]'")


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"the good old model")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"half a new mod")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"the good old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"], "no temporary file is left behind"


@pytest.mark.slow
def test_loss_curve_is_optional(tiny_corpus, tmp_path):
    proc = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", *SMALL, "--max-steps", 4,
                   env=blocked_env(tmp_path, "matplotlib"))
    assert proc.returncode == 0, proc.stderr
    assert "no loss curve (matplotlib is not installed" in proc.stdout and (tmp_path / "m.pt").exists()
    assert not (tmp_path / "m.loss.png").exists()
