"""Hostile files and shared machines (docs/security.md): each test makes its own hostile file and
checks the one-line refusal, that no secret comes out and that no file of the user's changes."""

import json
import os
import shutil
import stat
import subprocess
import zipfile

import numpy as np
import onnx
import pytest
import torch

from charlstm.core.errors import BadInput
from charlstm.core.files import atomic_write, claim
from charlstm.export import export
from charlstm.runtime import Model, SamplingOptions, State, generate, stream_batch
from charlstm.train.prepare import prepare, user_cache_dir
from conftest import BIN, ROOT, assert_bad_input, markov_text, run_cli

IS_ROOT = os.geteuid() == 0
NOBODY = 65534
SECRET = b"password=hunter2" + b"\0" * 8  # 24 bytes: the size of the tiny model's head.bias
NODE = shutil.which("node")
JS_CLI = ROOT / "runtime" / "js" / "bin" / "charlstm-sample.mjs"
as_root = pytest.mark.skipif(not IS_ROOT, reason="planting another user's files needs root")


def node_cli(*args, cwd=None):
    if NODE is None or not (ROOT / "runtime" / "js" / "node_modules").is_dir():
        pytest.skip("node and the JS packages are not installed")
    return subprocess.run([NODE, str(JS_CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def tree(folder) -> dict:
    """Every file under `folder` and its bytes: what must not change."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


# -- 1. ONNX external data ---------------------------------------------------------------------
def external(tensor: onnx.TensorProto, location: str) -> None:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location


def external_models(tiny_onnx, folder):
    """The tiny model with its output bias read from 'secret.bin': in the graph, and hidden in a
    subgraph of a node's attribute."""
    top = onnx.load(tiny_onnx)
    external(next(i for i in top.graph.initializer if i.name == "model.head.bias"), "secret.bin")
    nested = onnx.load(tiny_onnx)
    inner = onnx.helper.make_graph([], "inner", [], [], initializer=[onnx.numpy_helper.from_array(np.zeros(6, np.float32), "x")])
    external(inner.initializer[0], "secret.bin")
    nested.graph.node.append(onnx.helper.make_node("If", ["c"], [], then_branch=inner, else_branch=inner))
    made = {}
    for name, proto in (("top", top), ("nested", nested)):
        made[name] = folder / f"{name}.onnx"
        made[name].write_bytes(proto.SerializeToString())
    return made


def test_external_data_is_refused_before_onnxruntime_reads_it(tiny_onnx, tmp_path, monkeypatch):
    (tmp_path / "secret.bin").write_bytes(SECRET)  # beside the model (read by path) and in the cwd (from bytes)
    monkeypatch.chdir(tmp_path)
    for path in external_models(tiny_onnx, tmp_path).values():
        for source in (path, path.read_bytes()):
            with pytest.raises(BadInput, match="in another file \\(ONNX external data\\)"):
                Model(source)
        for proc in (run_cli("charlstm-sample", path, "-n", 20, cwd=tmp_path), node_cli(path, "-n", 20, cwd=tmp_path)):
            assert_bad_input(proc, "ONNX external data")
            assert "hunter2" not in proc.stdout + proc.stderr


def test_an_exported_file_is_self_contained(tiny_checkpoint, tmp_path):
    from charlstm.core.onnxproto import external_tensor

    result = export(tiny_checkpoint, tmp_path / "m.onnx", validate=False)
    assert external_tensor(result.path.read_bytes()) is None and external_tensor(result.prefill.read_bytes()) is None


# -- 2. the corpus cache ------------------------------------------------------------------------
def test_a_shared_corpus_folder_gets_no_cache_and_the_private_one_is_private(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    corpus = shared / "c.txt"
    corpus.write_text(markov_text(3_000))
    found = prepare(corpus)
    assert found.cache.parent == user_cache_dir() and os.listdir(shared) == ["c.txt"]
    mode = os.lstat(user_cache_dir()).st_mode
    assert stat.S_ISDIR(mode) and mode & 0o077 == 0


@as_root
def test_a_planted_link_or_cache_in_a_cache_folder_is_never_followed_nor_trusted(tmp_path):
    folder, victim = tmp_path / "cache", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_text("the victim's file")
    corpus = tmp_path / "c.txt"
    corpus.write_text(markov_text(3_000))
    (tmp_path / "elsewhere").mkdir()
    good = prepare(corpus, cache_dir=tmp_path / "elsewhere")
    path = folder / good.cache.name
    path.symlink_to(victim)  # planted: the run must replace the link, not write the victim
    os.lchown(path, NOBODY, NOBODY)
    assert prepare(corpus, cache_dir=folder).rebuilt == "unusable (Too many levels of symbolic links)"
    assert not path.is_symlink() and victim.read_text() == "the victim's file"  # the link replaced, not followed
    path.unlink()
    path.write_bytes(good.cache.read_bytes())  # a valid cache, but another user's file
    os.chown(path, NOBODY, NOBODY)
    again = prepare(corpus, cache_dir=folder)
    assert again.rebuilt == "not this user's own file" and os.stat(path).st_uid == 0
    assert victim.read_text() == "the victim's file"


def test_a_cache_whose_ids_were_edited_is_rebuilt(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(markov_text(3_000))
    first = prepare(corpus)
    expected = np.array(first.ids)
    data = bytearray(first.cache.read_bytes())
    data[-1] = (data[-1] + 1) % 6  # another valid id: only the ids' sha256 can tell
    first.cache.write_bytes(bytes(data))
    again = prepare(corpus)
    assert again.rebuilt == "damaged (its ids)" and np.array_equal(again.ids, expected)


# -- 3. locks and temporaries -------------------------------------------------------------------
@pytest.mark.slow
def test_a_planted_lock_link_directory_or_foreign_lock_is_refused(tiny_checkpoint, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    lock = tmp_path / ".m.onnx.lock"
    lock.symlink_to(victim)
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "-o", tmp_path / "m.onnx"), "is a symbolic link")
    assert victim.read_text() == "keep me" and not (tmp_path / "m.onnx").exists()
    lock.unlink()
    lock.mkdir()
    with pytest.raises(BadInput, match="lock file .* is a directory"), claim([tmp_path / "m.onnx"]):
        pass
    if IS_ROOT:
        lock.rmdir()
        lock.write_text("someone else")
        os.chown(lock, NOBODY, NOBODY)
        with pytest.raises(BadInput, match="owned by another user"), claim([tmp_path / "m.onnx"]):
            pass
        assert lock.read_text() == "someone else"


@as_root
def test_an_output_that_is_another_users_link_is_not_written_through(tmp_path):
    victim, link = tmp_path / "victim.txt", tmp_path / "m.pt"
    victim.write_text("keep me")
    link.symlink_to(victim)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(BadInput, match="symbolic link owned by another user"), atomic_write(link) as f:
        f.write(b"x")
    assert victim.read_text() == "keep me"


# -- 4. outputs that are inputs -------------------------------------------------------------------
@pytest.mark.slow
def test_no_output_is_an_input(tiny_checkpoint, tiny_corpus, tmp_path):
    for name in ("c.last.pt", "c.loss.png"):
        corpus = tmp_path / name
        corpus.write_text(markov_text(3_000))
        before = corpus.read_bytes()
        assert_bad_input(run_cli("charlstm-train", corpus, "-o", tmp_path / "c.pt"), "would overwrite the corpus")
        assert corpus.read_bytes() == before
    os.link(tiny_corpus, tmp_path / "hard.txt")  # the same file under another name
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "hard.txt"), "would overwrite the corpus")
    text = tmp_path / "text.txt"
    text.write_text("abcdef")
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "--vocab-corpus", text, "-o", text),
                     "would overwrite --vocab-corpus")
    assert text.read_text() == "abcdef"
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "x.text.charlstm-ids"), "corpus caches")


# -- 6. tiny files that would take the machine ----------------------------------------------------
def tiny_state_dict(hidden=8):
    torch.manual_seed(0)
    lstm, emb, head = torch.nn.LSTM(4, hidden), torch.nn.Embedding(6, 4), torch.nn.Linear(hidden, 6)
    sd = {f"embedding.{k}": v for k, v in emb.state_dict().items()}
    sd.update({f"lstm.{k}": v for k, v in lstm.state_dict().items()})
    sd.update({f"head.{k}": v for k, v in head.state_dict().items()})
    return sd


def stride0(*shape):
    return torch.zeros(1).as_strided(shape, (0,) * len(shape))


def hostile_checkpoints(folder) -> dict:
    """name -> (path, words of the refusal)."""
    made = {}

    def save(name, obj, words):
        made[name] = (folder / f"{name}.pt", words)
        torch.save(obj, made[name][0])

    h = 8000  # 256 M elements per matrix, all one number
    big = {"embedding.weight": stride0(6, 4), "lstm.weight_ih_l0": stride0(4 * h, 4), "lstm.weight_hh_l0": stride0(4 * h, h),
           "lstm.bias_ih_l0": stride0(4 * h), "lstm.bias_hh_l0": stride0(4 * h), "head.weight": stride0(6, h),
           "head.bias": stride0(6)}
    save("stride0", {"model": big, "chars": list("abcdef")}, "strides that repeat its data")
    config = {"vocab_size": 6, "embed_dim": 4, "hidden_size": 8, "num_layers": 10**6, "dropout": 0.0}
    save("layers", {"format": "charlstm-checkpoint/1", "config": config, "vocab": list("abcdef"),
                    "state_dict": tiny_state_dict(), "train": {}}, "at most 64")
    for name, change, words in (("oned", {"lstm.weight_hh_l0": torch.zeros(32)}, "weights are matrices"),
                                ("zerod", {"lstm.weight_hh_l0": torch.tensor(1.0)}, "weights are matrices"),
                                ("complex", {"head.weight": torch.zeros(6, 8, dtype=torch.complex64)}, "complex tensor"),
                                ("sparse", {"head.weight": torch.zeros(6, 8).to_sparse()}, "sparse tensor"),
                                ("meta", {"head.weight": torch.empty(6, 8, device="meta")}, "without data"),
                                ("integer", {"head.weight": torch.zeros(6, 8, dtype=torch.int64)}, "not a floating-point")):
        save(name, {"model": {**tiny_state_dict(), **change}, "chars": list("abcdef")}, words)
    save("surrogate", {"model": tiny_state_dict(), "chars": ["\ud800", *"bcdef"]}, "holds no vocabulary")
    save("digits", {"model": tiny_state_dict(), "itos": {"²": "a", "0": "b", "1": "c", "2": "d", "3": "e", "4": "f"}},
         "holds no vocabulary")
    plain = folder / "plain.pt"
    torch.save({"model": tiny_state_dict(), "chars": list("abcdef")}, plain)
    made["bomb"] = (folder / "bomb.pt", "unpacks to")
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(made["bomb"][0], "w") as zout:
        for info in zin.infolist():
            data = b"\0" * (1 << 28) if info.filename.endswith("/data/0") else zin.read(info.filename)
            zout.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return made


def test_tiny_hostile_checkpoints_are_refused_before_anything_large_is_built(tmp_path):
    from charlstm.export.foreign import read_model
    from charlstm.train.checkpoint import build_model

    for name, (path, words) in hostile_checkpoints(tmp_path).items():
        with pytest.raises(BadInput, match=words.replace("(", "\\(")) as refused:
            build_model(read_model(path).ckpt)
        assert "\n" not in str(refused.value), name


@pytest.mark.slow
def test_tiny_hostile_checkpoints_are_one_line_refusals_in_bounded_memory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, (path, words) in hostile_checkpoints(tmp_path).items():
        proc = subprocess.run(["prlimit", f"--as={6 << 30}", str(BIN / "charlstm-export"), str(path), "-o",
                               str(out / f"{name}.onnx")], capture_output=True, text=True, timeout=60)
        assert_bad_input(proc, words)
    assert os.listdir(out) == []


@pytest.mark.slow
def test_sizes_from_the_command_line_and_the_api_are_capped(tiny_corpus, tiny_onnx, tmp_path):
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", "--num-layers", 1_000_000),
                     "--num-layers must be at most 64")
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", "--hidden-size", 16384,
                             "--num-layers", 64), "more than the cap")
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", "--seed", 2**64), "--seed")
    with pytest.raises(BadInput, match="threads must be an integer from 1 to 256"):
        Model(tiny_onnx, threads=10**6)
    model = Model(tiny_onnx)
    for call, words in ((lambda: stream_batch(model, "ab", 5, num_samples=10**9), "more than this model runs at once"),
                        (lambda: model.new_state(10**9), "more than this model runs at once"),
                        (lambda: SamplingOptions(repetition_window=10**9), "repetition window must be from 1"),
                        (lambda: SamplingOptions(top_k=1.5), "top_k must be an integer"),
                        (lambda: SamplingOptions(greedy="no"), "greedy must be True or False")):
        with pytest.raises(BadInput, match=words):
            call()


@pytest.mark.slow
def test_a_saved_state_that_unpacks_to_gigabytes_is_refused(tmp_path):
    bomb = tmp_path / "state.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 1), np.float32))
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("h.npy", "c.npy"):
            with z.open(name, "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {**header, "shape": (64, 4096, 256)})
                for _ in range(16):
                    f.write(b"\0" * (1 << 24))
    assert bomb.stat().st_size < 10 << 20
    with pytest.raises(BadInput, match="far more than its own size"):
        State.load(bomb)
    good = tmp_path / "good.npz"
    State(np.ones((2, 1, 4), np.float32), np.zeros((2, 1, 4), np.float32)).save(good)
    assert State.load(good).h.shape == (2, 1, 4)


# -- 7. one line, never a traceback --------------------------------------------------------------
@pytest.mark.slow
def test_pipes_empty_outputs_and_deep_json_are_one_line(tiny_checkpoint, tiny_onnx, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert_bad_input(run_cli("charlstm-sample", tiny_onnx, "--score", fifo, timeout=30), "not a regular file")
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "--vocab-corpus", fifo, "-o", tmp_path / "m.onnx",
                             timeout=30), "not a regular file")
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "-o", ""), "names no file")
    assert_bad_input(run_cli("charlstm-train", tmp_path / "c.txt", "-o", ""), "names no file")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "--vocab", deep), "--vocab")


def nan_model(tiny_onnx, folder):
    """The tiny model with NaN in its output layer's bias: every step's logits hold a NaN."""
    proto = onnx.load(tiny_onnx)
    table = next(i for i in proto.graph.initializer if i.name == "model.head.bias")
    values = onnx.numpy_helper.to_array(table).copy()
    values[2] = np.nan
    table.CopyFrom(onnx.numpy_helper.from_array(values, table.name))
    path = folder / "nan.onnx"
    onnx.save(proto, path)
    return path


def test_logits_that_are_not_finite_are_the_same_refusal_in_both_runtimes(tiny_onnx, tmp_path):
    path = nan_model(tiny_onnx, tmp_path)
    with pytest.raises(BadInput, match=r"not finite numbers \(NaN or infinite\) at step 1 of the text \(lane 0\)"):
        generate(Model(path), "abdc", 5, seed=0)
    for proc in (run_cli("charlstm-sample", path, "--prime", "abdc", "-n", 5),
                 node_cli(path, "--prime", "abdc", "-n", 5)):
        assert_bad_input(proc, "at step 1 of the text (lane 0)")


@pytest.mark.parametrize("value", ["6_4", "\u0666\u0664", " +16 ", "16\n", "-16"])
def test_metadata_sizes_are_ascii_digits_in_both_runtimes(tiny_onnx, tmp_path, value):
    from conftest import edit_metadata

    path = edit_metadata(tiny_onnx, tmp_path / "m.onnx", **{"charlstm.hidden_size": value})
    for proc in (run_cli("charlstm-sample", path, "-n", 3), node_cli(path, "-n", 3)):
        assert_bad_input(proc, "sizes are written in ASCII digits")
        assert "\n" not in proc.stderr.strip()


def test_control_characters_from_a_file_are_escaped_in_messages(tiny_onnx, tmp_path):
    from conftest import edit_metadata

    path = edit_metadata(tiny_onnx, tmp_path / "m.onnx", **{"charlstm.format": "x\n\x1b[31mred\u202e"})
    for proc in (run_cli("charlstm-sample", path, "-n", 3), node_cli(path, "-n", 3)):
        assert_bad_input(proc, "format")
        assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr


def test_long_prompts_come_from_a_file_and_a_huge_command_line_is_refused_in_node(tiny_onnx, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("abcdef" * 10_000)
    expected = run_cli("charlstm-sample", tiny_onnx, "--prime-file", prompt, "-n", 20, "--seed", 1, "--no-echo")
    assert expected.returncode == 0 and len(expected.stdout) == 21
    assert node_cli(tiny_onnx, "--prime-file", prompt, "-n", 20, "--seed", 1, "--no-echo").stdout == expected.stdout
    assert_bad_input(node_cli(tiny_onnx, "--prime", "abcdef" * 10_000, "-n", 5), "--prime-file")
    assert_bad_input(node_cli(tiny_onnx, "--num-samples", 10**9), "not in the range 1<=x<=4096")


# -- 9. pairs left half-written ---------------------------------------------------------------------
def test_a_step_graph_written_without_its_prefill_graph_runs_alone_in_both_runtimes(tiny_checkpoint, tmp_path):
    export(tiny_checkpoint, tmp_path / "m.onnx", validate=False)
    (tmp_path / "other").mkdir()
    other = export(tiny_checkpoint, tmp_path / "other" / "m.onnx", validate=False, quantize="int8")
    shutil.copy(other.path, tmp_path / "m.onnx")  # as if killed between the step graph and the prefill graph
    for proc in (run_cli("charlstm-sample", tmp_path / "m.onnx", "--prime", "ab", "-n", 10, "--seed", 2),
                 node_cli(tmp_path / "m.onnx", "--prime", "ab", "-n", 10, "--seed", 2)):
        assert proc.returncode == 0, proc.stderr
        assert [line for line in proc.stderr.splitlines() if "note:" in line] == [
            f"charlstm-sample: note: {tmp_path / 'm.prefill.onnx'} was exported with another step graph than"
            f" {tmp_path / 'm.onnx'}; prompts are fed one step at a time (export again to use it)"]


def test_the_javascript_contract_is_generated_from_core():
    from charlstm.core import contract

    assert contract.JS_MODULE.read_text(encoding="utf-8") == contract.js_module(), \
        "run python -m charlstm.core.contract"
    assert json.loads(json.dumps(contract.contract()))["limits"]["maxThreads"] == 256


@pytest.mark.slow
@as_root
def test_a_full_disk_is_one_line_exit_1_and_the_old_files_stay(tiny_corpus, tiny_checkpoint, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        (disk / "m.pt").write_text("the old checkpoint")
        (disk / "m.onnx").write_text("the old model")
        for proc in (run_cli("charlstm-train", tiny_corpus, "-o", disk / "m.pt", "--hidden-size", 16, "--max-steps", 2,
                             "--seq-len", 8, "--batch-size", 4, "--no-progress"),
                     run_cli("charlstm-export", tiny_checkpoint, "-o", disk / "m.onnx", "--no-prefill")):
            assert proc.returncode == 1, proc.stderr
            assert [line for line in proc.stderr.splitlines() if "error" in line] == [proc.stderr.splitlines()[-1]]
            assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
        assert (disk / "m.pt").read_text() == "the old checkpoint" and (disk / "m.onnx").read_text() == "the old model"
        assert sorted(os.listdir(disk)) == ["m.onnx", "m.pt"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
