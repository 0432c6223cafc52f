"""Probes a user or an attacker might try: destinations that are not files, concurrent runs, killed
runs, self-consistent but wrong models, bad arguments at the API's edge. Each is refused in one line."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch

from charlstm.core.artifacts import latest_path
from charlstm.core.corpus import read_corpus
from charlstm.core.errors import BadInput, Note
from charlstm.core.files import atomic_write, check_writable_destination, claim
from charlstm.export import export
from charlstm.runtime import Model, State, generate
from charlstm.train import Trainer, load_checkpoint, save_checkpoint
from conftest import BIN, ROOT, TINY, TINY_RUN, answer_ctrl_c, assert_bad_input, edit_metadata, run_cli

SMALL = ["--hidden-size", 8, "--num-layers", 1, "--embed-dim", 4, "--seq-len", 8, "--batch-size", 4]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def model(tiny_onnx) -> Model:
    return Model(tiny_onnx)


# -- destinations ------------------------------------------------------------------------
def special_files(folder) -> dict:
    """A named pipe, a socket, a directory and, as root, a character device like /dev/null."""
    made = {"fifo": folder / "fifo", "directory": folder / "dir", "socket": folder / "sock"}
    os.mkfifo(made["fifo"])
    made["directory"].mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(made["socket"]))
    if IS_ROOT:
        made["device"] = folder / "fakenull"
        os.mknod(made["device"], stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return made


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket", "device"])
def test_only_regular_files_are_ever_replaced(tmp_path, kind):
    made = special_files(tmp_path)
    if kind not in made:
        pytest.skip("making a device file needs root")
    path = made[kind]
    mode = path.lstat().st_mode
    with pytest.raises(BadInput, match="replaces regular files only"):
        check_writable_destination(path)
    with pytest.raises(BadInput, match="replaces regular files only"), atomic_write(path) as f:
        f.write(b"x")
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(BadInput, match="the target of the link"):
        check_writable_destination(link)
    assert path.lstat().st_mode == mode


def test_a_symlink_is_written_through(tmp_path):
    target, link, dangling = tmp_path / "real.onnx", tmp_path / "model.onnx", tmp_path / "new.onnx"
    target.write_bytes(b"old")
    link.symlink_to(target)
    dangling.symlink_to(tmp_path / "made.onnx")
    for path in (link, dangling):
        with atomic_write(path) as f:
            f.write(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert dangling.is_symlink() and (tmp_path / "made.onnx").read_bytes() == b"new"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_the_clis_refuse_special_files_before_any_work(tiny_corpus, tiny_checkpoint, tmp_path, kind):
    made = special_files(tmp_path)
    if kind not in made:
        pytest.skip("making a device file needs root")
    path = made[kind]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", path, *SMALL), "regular files only")
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "-o", path), "regular files only")
    companion = tmp_path / "m.pt"  # a companion of -o that is special: refused before any work too
    os.mkfifo(latest_path(companion))
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", companion, *SMALL), "regular files only")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "m.last.pt"])
    assert stat.S_ISFIFO(path.stat().st_mode) or stat.S_ISCHR(path.stat().st_mode)


# -- claims: one run per destination, killed runs leave nothing that blocks ----------------
def test_a_second_claim_on_a_file_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "m.pt"
    code = f"from charlstm.core.files import claim; import time\nwith claim([{str(out)!r}], 'pid 1: the first run'):\n print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n" and (tmp_path / ".m.pt.lock").is_file()
    with pytest.raises(BadInput, match=r"m\.pt is being written by another run \(pid 1: the first run, since"):
        with claim([tmp_path / "other.pt", out]):
            pass
    assert not (tmp_path / ".other.pt.lock").exists(), "a refused claim releases what it took"
    holder.kill()
    holder.wait()


def test_claims_are_released_and_a_thread_may_claim_again_what_it_holds(tmp_path):
    out, errors = tmp_path / "m.pt", []
    with claim([out]):
        with claim([out, tmp_path / "m.last.pt"]):  # the CLI claims, then the API it calls
            pass
        assert (tmp_path / ".m.pt.lock").is_file() and not (tmp_path / ".m.last.pt.lock").exists()
        thread = threading.Thread(target=lambda: errors.append(pytest.raises(BadInput, claim([out]).__enter__)))
        thread.start()
        thread.join()
        assert "another thread of this process" in str(errors[0].value)
    assert list(tmp_path.iterdir()) == [], "the lock files go when the claim ends"
    with claim([out]):
        pass


def test_a_claim_removes_the_temporary_files_of_a_killed_write(tmp_path):
    out = tmp_path / "m.pt"
    stale = [tmp_path / ".m.pt.charlstm-abcd_123.tmp", tmp_path / ".m.pt.charlstm-zzzzzzzz.tmp"]
    kept = [tmp_path / ".m.pt.charlstm-abc.tmp", tmp_path / ".other.pt.charlstm-abcdefgh.tmp", tmp_path / "notes.tmp"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    with claim([out]):
        assert [p.exists() for p in stale + kept] == [False, False, True, True, True]


def test_the_lock_of_a_killed_run_does_not_block(tmp_path):
    out = tmp_path / "m.pt"
    code = f"from charlstm.core.files import claim; import time\nwith claim([{str(out)!r}]):\n print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(BadInput, match=f"pid {holder.pid}"):
        with claim([out]):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".m.pt.lock").exists(), "kill -9 leaves the lock file"
    with claim([out]):  # but not the lock: the kernel released it with the process
        pass


@pytest.mark.slow
def test_two_trainings_cannot_write_the_same_output(tiny_corpus, tmp_path):
    out = tmp_path / "same.pt"
    args = [tiny_corpus, "-o", out, *SMALL, "--epochs", 100, "--max-steps", 100_000, "--eval-every", 5]
    first = subprocess.Popen([str(BIN / "charlstm-train"), *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not latest_path(out).exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_cli("charlstm-train", *args)
    assert_bad_input(second, "being written by another run", f"pid {first.pid}", "charlstm-train")
    first.send_signal(signal.SIGKILL)
    first.wait()
    (tmp_path / ".same.pt.charlstm-deadbeef.tmp").write_bytes(b"a write the kill cut short")
    third = run_cli("charlstm-train", tiny_corpus, "-o", out, *SMALL, "--max-steps", 3)
    assert third.returncode == 0, third.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.last.pt", "same.loss.png", "same.pt"]


def test_a_finished_run_resumed_with_a_new_output_says_there_is_nothing_to_write(tiny_corpus, tmp_path):
    first = Trainer(tiny_corpus, TINY, TINY_RUN).run(tmp_path / "a.pt", progress=False, log=print, curve=False)
    again = Trainer(tiny_corpus, resume=first.latest).run(tmp_path / "b.pt", progress=False, log=print, curve=False)
    assert again.resumed_finished and again.best is None and not (tmp_path / "b.pt").exists()
    same = Trainer(tiny_corpus, resume=first.latest).run(tmp_path / "a.pt", progress=False, log=print, curve=False)
    assert same.best == tmp_path / "a.pt", "the same -o holds the run's best checkpoint"


@pytest.mark.slow
def test_cli_resume_of_a_finished_run_claims_no_file(tiny_corpus, tmp_path):
    done = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "a.pt", *SMALL, "--max-steps", 4)
    assert done.returncode == 0, done.stderr
    again = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "b.pt", *SMALL, "--max-steps", 4,
                    "--resume", tmp_path / "a.last.pt")
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout and "was not written" in again.stdout
    assert "-> " not in again.stdout and not (tmp_path / "b.pt").exists()


@pytest.mark.slow
def test_a_resumed_run_keeps_the_thread_count_it_started_with(tiny_corpus, tmp_path):
    """Another thread count sums in another order (1 vs 2 threads: 1e-5 apart after 12 steps);
    the resumable checkpoint records the count, and a resumed run uses it."""
    args = [tiny_corpus, *SMALL, "--hidden-size", 64, "--max-steps", 12, "--eval-every", 4]
    one = {"OMP_NUM_THREADS": "1"}
    assert run_cli("charlstm-train", *args, "-o", tmp_path / "ref.pt", env=one).returncode == 0
    cut = subprocess.Popen([str(BIN / "charlstm-train"), *map(str, args), "-o", str(tmp_path / "cut.pt")],
                           env={**os.environ, **one}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (tmp_path / "cut.last.pt").exists() and cut.poll() is None:
        time.sleep(0.005)
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    assert load_checkpoint(tmp_path / "cut.last.pt").resume.threads == 1
    resumed = run_cli("charlstm-train", *args, "-o", tmp_path / "cut.pt", "--resume", tmp_path / "cut.last.pt",
                      env={"OMP_NUM_THREADS": "2"})
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "ref.last.pt"), load_checkpoint(tmp_path / "cut.last.pt")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


@pytest.mark.slow
def test_killed_at_random_moments_every_resumed_run_is_bit_identical():
    proc = subprocess.run([sys.executable, ROOT / "bench" / "kill_resume.py", "--kills", "20"], capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "20 of 20 resumed runs are bit-identical" in proc.stdout


# -- models checked against themselves ------------------------------------------------------
BROKEN = [
    ({"charlstm.hidden_size": "64"}, "h_in is tensor(float) [2, 'batch', 16], the metadata says"),
    ({"charlstm.num_layers": "3"}, "the metadata says tensor(float) [3, 'batch', 16]"),
    ({"charlstm.hidden_size": "-1"}, "charlstm.hidden_size is '-1'; sizes are written in ASCII digits"),
    ({"charlstm.vocab": json.dumps(list("abcde")), "charlstm.vocab_size": "5"}, "logits is tensor(float)"),
    ({"charlstm.vocab": json.dumps([1, 2, 3, 4, 5, 6])}, "holds 1, which is not a single character"),
    ({"charlstm.vocab": json.dumps(["ab", "c", "d", "e", "f", "g"])}, "holds 'ab', which is not a single character"),
    ({"charlstm.vocab": json.dumps(list("abcdea"))}, "holds 'a' more than once"),
    ({"charlstm.vocab": "[not json"}, "broken charlstm metadata"),
    ({"charlstm.vocab_size": "7"}, "vocab_size is 7 but the vocabulary holds 6"),
    ({"charlstm.num_layers": None}, "no charlstm.num_layers"),
    ({"charlstm.hidden_size": "16.0"}, "broken charlstm metadata"),
]


@pytest.mark.parametrize("changes, words", BROKEN)
def test_metadata_that_disagrees_with_the_graph_is_refused(tiny_onnx, tmp_path, capfd, changes, words):
    broken = edit_metadata(tiny_onnx, tmp_path / "broken.onnx", **changes)
    with pytest.raises(BadInput) as refused:
        Model(broken)
    assert words in str(refused.value)
    assert capfd.readouterr().err == "", "no onnxruntime log line"


def test_the_cli_refuses_wrong_metadata_in_one_line(tiny_onnx, tiny_corpus, tmp_path):
    broken = edit_metadata(tiny_onnx, tmp_path / "broken.onnx", **{"charlstm.hidden_size": "64"})
    assert_bad_input(run_cli("charlstm-sample", broken, "-n", 5), "does not match its charlstm metadata")
    assert_bad_input(run_cli("charlstm-sample", broken, "--score", tiny_corpus), "does not match")


def test_a_prefill_beside_a_step_graph_it_does_not_name_is_left_aside_with_a_note(tiny_checkpoint, tmp_path):
    step = export(tiny_checkpoint, tmp_path / "m.onnx", validate=False).path
    expected = generate(Model(step, prefill=None), "ab", 20, seed=3)
    edit_metadata(step, step, **{"charlstm.checkpoint_sha256": None})  # other bytes: not the step graph it names
    with pytest.warns(Note, match="m.prefill.onnx was exported with another step graph than .*; prompts are fed one"):
        model = Model(step)
    assert not model.has_prefill and generate(model, "ab", 20, seed=3) == expected
    with pytest.raises(BadInput, match="another step graph"):  # a prefill graph asked for by name
        Model(step, prefill=tmp_path / "m.prefill.onnx")
    proc = run_cli("charlstm-sample", step, "--prime", "ab", "-n", 20, "--seed", 3, "--no-echo")
    assert proc.returncode == 0 and proc.stdout == expected + "\n"
    assert proc.stderr.splitlines() == [f"charlstm-sample: note: {step.with_name('m.prefill.onnx')} was exported with"
                                        f" another step graph than {step}; prompts are fed one step at a time"
                                        " (export again to use it)"]


@pytest.mark.parametrize("vocab, words", [(["ab", *"cdefg"], "'ab', which is not a single character"),
                                          (list("abcdea"), "'a' more than once")])
def test_a_checkpoint_with_a_bad_vocabulary_is_not_exported(tiny_checkpoint, tmp_path, vocab, words):
    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt.vocab = vocab
    save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(BadInput, match=words):
        export(tmp_path / "bad.pt", tmp_path / "bad.onnx", validate=False)
    assert not (tmp_path / "bad.onnx").exists()


# -- the API's edge ---------------------------------------------------------------------------
def other_state(model, **change) -> State:
    shape = dict(layers=model.num_layers, batch=1, hidden=model.hidden_size)
    shape.update({k: v for k, v in change.items() if k != "dtype"})
    dims = (shape["layers"], shape["batch"], shape["hidden"])
    return State(np.zeros(dims, change.get("dtype", np.float32)), np.zeros(dims, change.get("dtype", np.float32)))


def test_token_ids_and_states_are_checked_before_onnxruntime(model, capfd):
    state = model.new_state(1)
    for tokens, words in (([6], r"\[0, 6\).*got 6"), ([-1], "got -1"), ([1.7], "integer token ids, not float64"),
                          ([[1, 2]], "1-D sequence"), ([], "at least one id"), (np.array([True]), "not bool")):
        with pytest.raises(BadInput, match=words):
            model.step(tokens, state)
    for bad, words in ((other_state(model, layers=3), r"state.h has shape \(3, 1, 16\)"),
                       (other_state(model, hidden=8), r"\(2, 1, 16\)"),
                       (other_state(model, batch=2), r"state.h has shape \(2, 2, 16\)"),
                       (other_state(model, dtype=np.float64), "float32 array, not float64"),
                       (State(np.zeros((2, 16), np.float32), np.zeros((2, 16), np.float32)), "has shape"),
                       ((np.zeros((2, 1, 16)), np.zeros((2, 1, 16))), "a charlstm State, not tuple")):
        with pytest.raises(BadInput, match=words):
            model.step([0], bad)
    with pytest.raises(BadInput, match="got -1"):
        model.decode([-1])
    with pytest.raises(BadInput, match="threads must be an integer from 1 to 256"):
        Model(model.name, threads=0)
    assert capfd.readouterr().err == "", "no onnxruntime log line"
    logits, _ = model.step(np.array([5], np.uint8), state)  # any integer type in range is fine
    assert logits.shape == (1, 6)


def test_a_plain_stop_string_is_one_stop_string(model):
    full = generate(model, "a", 300, seed=2, temperature=1.0)
    stop = next(full[i:i + 2] for i in range(len(full)) if full[i] != full[i + 1])
    assert generate(model, "a", 300, seed=2, temperature=1.0, stop=stop) == full[:full.index(stop)]
    with pytest.raises(BadInput, match="stop must be a string or a list of strings"):
        generate(model, "a", 5, stop=[1])


# -- smaller points -----------------------------------------------------------------------------
def test_checkpoint_load_errors_are_whole_sentences(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    cases = {"cut.pt": data[:3000], "cut-near-end.pt": data[:-10], "text.pt": b"hello", "pickle.pt": b"\x80\x04K\x01."}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BadInput) as refused:
            load_checkpoint(tmp_path / name)
        message = str(refused.value)
        assert message.endswith(")") and "Errno" not in message and "miniz" not in message, message
    with pytest.raises(BadInput, match="truncated or damaged"):
        load_checkpoint(tmp_path / "cut-near-end.pt")


def test_counts_agree_with_their_nouns(model):
    with pytest.raises(BadInput, match="text has 1 character not in the model's vocabulary: 'z'"):
        model.encode("abz")


@pytest.mark.parametrize("penalty, ok", [(1e300, False), (1e-300, False), (1e6, True), (1e-6, True)])
def test_extreme_repetition_penalties(model, penalty, ok):
    if not ok:
        with pytest.raises(BadInput, match="repetition penalty must be between"):
            generate(model, "abc", 20, seed=0, repetition_penalty=penalty)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow and division warnings: what a user would see
        assert len(generate(model, "abc", 200, seed=0, repetition_penalty=penalty)) == 200


def test_a_leading_byte_order_mark_is_not_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffabc\r\ndef\ufeffghi".encode())
    assert read_corpus(path) == "abc\ndef\ufeffghi", "only the leading mark goes; CRLF still reads as \\n"


def test_standard_input_that_is_not_utf8(tiny_onnx):
    proc = subprocess.run([str(BIN / "charlstm-sample"), str(tiny_onnx), "--prime", "-", "-n", "5"],
                          input=b"ab\xfecd", capture_output=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.decode().strip() == (
        "charlstm-sample: error: standard input is not UTF-8 (byte 0xfe at offset 2)")


@pytest.mark.slow
def test_ctrl_c_during_several_samples_prints_what_each_had(tiny_onnx):
    proc = subprocess.Popen([str(BIN / "charlstm-sample"), str(tiny_onnx), "--prime", "ab", "-n", "2500000",
                             "--num-samples", "4", "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=answer_ctrl_c)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "charlstm-sample: error: interrupted"
    samples = out.split("--- sample ")[1:]
    assert len(samples) == 4 and all(s.rstrip().endswith("(interrupted)") for s in samples)
    assert all(len(s.split("\n")[1]) > 100 for s in samples), "each shows the text it had"


def test_help_says_what_leaving_out_the_model_does():
    proc = run_cli("charlstm-sample", "--help")
    assert "Without MODEL, the Molière model shipped with charlstm is used." in " ".join(proc.stdout.split())
