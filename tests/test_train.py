"""Training: the loss falls, validation is held out, runs are deterministic and resume exactly."""

import math
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
import torch

from charlstm.core.artifacts import latest_path
from charlstm.core.formats import CHECKPOINT_FORMAT
from charlstm.train import Corpus, Diverged, Interrupted, Trainer, build_model, load_checkpoint
from charlstm.train.data import Lanes
from conftest import BIN, TINY, TINY_RUN, assert_bad_input, markov_text, run_cli, train_tiny


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_goes_down(tiny_corpus, tmp_path):
    result = train_tiny(tiny_corpus, tmp_path / "m.pt", train_args={"max_steps": 60, "eval_every": 10})
    vals = [h["val_loss"] for h in result.history]
    assert vals[-1] < vals[0] - 0.3, vals
    assert vals[-1] < math.log(6), "worse than a uniform guess over the 6 letters"


def test_checkpoint_follows_the_contract(tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert ckpt["config"] == {**TINY, "vocab_size": 6}
    assert ckpt["vocab"] == list("abcdef")
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"embedding", "lstm", "head"}
    assert "optimizer" not in ckpt, "the best checkpoint carries no optimizer state"
    train = ckpt["train"]
    for key in ("corpus_sha256", "split", "step", "epoch", "train_loss", "val_loss", "seed", "versions", "seconds"):
        assert key in train
    assert train["val_loss"] == min(h["val_loss"] for h in train["history"])
    model = build_model(load_checkpoint(tiny_checkpoint))
    assert isinstance(model.lstm, torch.nn.LSTM) and not model.lstm.batch_first
    latest = torch.load(latest_path(tiny_checkpoint), weights_only=True)
    assert {"optimizer", "rng", "resume"} <= latest.keys()


def test_validation_is_the_held_out_tail(tmp_path):
    text = markov_text(5_000) + "z" * 50 + markov_text(200, seed=1)  # 'z' only in the last 5%
    path = tmp_path / "c.txt"
    path.write_text(text)
    corpus = Corpus.load(path, 0.05)
    n_val = int(len(text) * 0.05)
    assert len(corpus.val_ids) == n_val and len(corpus.train_ids) == len(text) - n_val
    assert corpus.vocab[int(corpus.val_ids[0])] == text[-n_val]
    z = corpus.vocab.index("z")
    lanes = Lanes(corpus.train_ids, 4, 16, seed=0)
    for epoch in range(5):
        data = lanes.epoch(epoch)
        for i in range(lanes.chunks_per_epoch):
            x, y = lanes.chunk(data, i)
            assert x.shape == (16, 4) and not (x == z).any() and not (y == z).any()


def test_same_seed_same_checkpoint(tiny_corpus, tmp_path):
    a = train_tiny(tiny_corpus, tmp_path / "a.pt")
    b = train_tiny(tiny_corpus, tmp_path / "b.pt")
    c = train_tiny(tiny_corpus, tmp_path / "c.pt", train_args={"seed": 1})
    ca, cb, cc = (load_checkpoint(r.best) for r in (a, b, c))
    assert same_weights(ca.state_dict, cb.state_dict)
    assert [h["val_loss"] for h in ca.train.history] == [h["val_loss"] for h in cb.train.history]
    assert not same_weights(ca.state_dict, cc.state_dict)


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(tiny_corpus, tmp_path):
    full = train_tiny(tiny_corpus, tmp_path / "full.pt", train_args={"max_steps": 30, "eval_every": 5})
    out = tmp_path / "cut.pt"
    trainer = Trainer(tiny_corpus, TINY, {**TINY_RUN, "max_steps": 30, "eval_every": 5})
    with pytest.raises(Interrupted) as stopped:  # a real SIGINT, raised after the second validation
        trainer.run(out, progress=False, log=lambda m: m.startswith("step 10/") and os.kill(os.getpid(), signal.SIGINT))
    assert trainer.step_no == 10
    resumed = Trainer(tiny_corpus, resume=stopped.value.args[0]).run(out, progress=False, log=lambda m: None)
    for kind in (lambda r: r.best, lambda r: r.latest):
        a, b = load_checkpoint(kind(full)), load_checkpoint(kind(resumed))
        assert same_weights(a.state_dict, b.state_dict)
        assert a.train.history == [dict(h, seconds=a_h["seconds"]) for h, a_h in
                                   zip(b.train.history, a.train.history)]
    assert same_weights(load_checkpoint(full.latest).resume.optimizer["state"][0],
                        load_checkpoint(resumed.latest).resume.optimizer["state"][0])


@pytest.mark.slow
def test_cli_ctrl_c_exits_130_and_resume_finishes_the_run(tiny_corpus, tmp_path):
    out = tmp_path / "m.pt"
    args = [tiny_corpus, "-o", out, "--hidden-size", 16, "--num-layers", 1, "--embed-dim", 8,
            "--seq-len", 16, "--batch-size", 8, "--epochs", 100, "--max-steps", 2000, "--eval-every", 5]
    proc = subprocess.Popen([str(BIN / "charlstm-train"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not latest_path(out).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr.splitlines()[-1]
    step = load_checkpoint(latest_path(out)).resume.step
    assert 5 <= step < 2000

    other = run_cli("charlstm-train", *args[:-4], "--max-steps", 3000, "--resume", latest_path(out))
    assert_bad_input(other, "--max-steps 2000")
    done = run_cli("charlstm-train", *args, "--resume", latest_path(out))
    assert done.returncode == 0, done.stderr
    assert f"from step {step}" in done.stderr and "done: 2000 steps" in done.stdout


def test_a_diverging_run_stops_and_leaves_only_finite_checkpoints(tiny_corpus, tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(Diverged, match=r"diverged: .* loss (nan|inf) at step \d+; try a lower --lr") as stopped:
        train_tiny(tiny_corpus, out, train_args={"lr": 1e6, "eval_every": 1})
    saved = [p for p in (out, latest_path(out)) if p.exists()]
    assert (str(out) in str(stopped.value)) == out.exists()
    assert all(math.isfinite(load_checkpoint(p).train.val_loss) for p in saved)


@pytest.mark.slow
def test_cli_a_diverging_run_exits_1_with_one_line(tiny_corpus, tmp_path):
    proc = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", "--hidden-size", 16, "--num-layers", 1,
                   "--seq-len", 16, "--batch-size", 8, "--max-steps", 40, "--lr", 1e6, "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("charlstm-train: error: training diverged")


@pytest.mark.slow
def test_cli_end_to_end_on_the_real_corpus(moliere_slice, tmp_path):
    out = tmp_path / "moliere.pt"
    proc = run_cli("charlstm-train", moliere_slice, "-o", out, "--hidden-size", 64, "--num-layers", 1,
                   "--embed-dim", 16, "--seq-len", 64, "--batch-size", 32, "--max-steps", 150, "--lr", "5e-3",
                   "--weight-decay", 0.05, "--clip", 0.5)
    assert proc.returncode == 0, proc.stderr
    assert "best validation loss" in proc.stdout
    ckpt = load_checkpoint(out)
    assert (ckpt.train.options["weight_decay"], ckpt.train.options["clip"]) == (0.05, 0.5)
    train_text = moliere_slice.read_text()[: ckpt.train.split["train_chars"]]
    counts = Counter(train_text)
    unigram = -sum(n / len(train_text) * math.log(n / len(train_text)) for n in counts.values())
    assert ckpt.train.val_loss < unigram, "it must beat letter frequencies alone"
    assert out.with_name("moliere.loss.png").stat().st_size > 1000


def test_crlf_line_ends_read_as_one_character_unless_kept(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(markov_text(3_000).replace("f", "f\r\n").encode())
    assert "\r" not in Corpus.load(path, 0.05).vocab
    assert "\r" in Corpus.load(path, 0.05, normalize_newlines=False).vocab
