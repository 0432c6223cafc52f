"""Bring your own model: LSTMs trained outside charlstm, saved every usual way, exported and sampled torch-free."""

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from charlstm.core import formats as fmt
from charlstm.core.errors import BadInput
from charlstm.export import export
from charlstm.export.foreign import read_model
from charlstm.export.vocabulary import as_vocab, vocab_from_corpus
from charlstm.runtime import Model, generate, score
from conftest import ROOT, assert_bad_input, markov_text, run_cli

SCRIPT = ROOT / "tests" / "foreign_models.py"
CORPUS_CHARS = "100000"
KINDS = {  # file → (what it is, the model it holds, where its vocabulary comes from)
    "sd.pt": ("state_dict", "course", "corpus"),
    "dict.pt": ("dict holding a state_dict", "course", None),
    "tutorial.pt": ("dict holding a state_dict", "course", None),
    "dataparallel.pt": ("state_dict", "course", "corpus"),
    "whole.pt": ("pickled model", "course", "corpus"),
    "traced.pt": ("TorchScript model", "course", "stoi"),
    "evil.pt": ("pickled model", "course", "chars"),
    "wlm.pt": ("pickled model", "wlm", "chars"),
    "wlm_sd.pt": ("state_dict", "wlm", "corpus"),
    "onehot.pt": ("state_dict", "onehot", "corpus"),
}


def make_models(corpus, folder) -> dict:
    proc = subprocess.run([sys.executable, SCRIPT, corpus, folder], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads((folder / "reference.json").read_text())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Trained on a text with a byte-order mark and CRLF line ends, read in text mode as the course does."""
    folder = tmp_path_factory.mktemp("foreign")
    corpus = folder / "corpus.txt"
    corpus.write_bytes(("\ufeff" + markov_text(120_000).replace("f", "f\r\n")).encode())
    return folder, corpus, make_models(corpus, folder)


def vocabulary(folder, corpus, source):
    if source == "corpus":
        return vocab_from_corpus(corpus, int(CORPUS_CHARS))
    return None if source is None else as_vocab(json.loads((folder / f"{source}.json").read_text()))


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_exports_and_samples_as_the_original(models, tmp_path, name):
    folder, corpus, refs = models
    kind, which, source = KINDS[name]
    result = export(folder / name, tmp_path / "m.onnx", steps=50, vocab=vocabulary(folder, corpus, source))
    assert result.source == kind and result.report.ok
    assert result.vocab_found == (source is None)
    runtime, ref = Model(result.path), refs[which]
    assert generate(runtime, ref["prompt"], len(ref["greedy"]), greedy=True) == ref["greedy"]
    assert score(runtime, ref["text"]).nats_per_char == pytest.approx(ref["loss"], abs=1e-4)
    meta = runtime.metadata
    assert meta[fmt.META_SOURCE] == kind
    assert meta[fmt.META_CHECKPOINT_SHA256] == hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_no_code_of_the_pickle_runs(models, tmp_path):
    folder, _, _ = models
    marker = folder / "pwned.txt"
    export(folder / "evil.pt", tmp_path / "m.onnx", validate=False, vocab=list("abcdef\n\ufeff"))
    assert not marker.exists()
    evil = tmp_path / "evil_only.pt"  # the same object alone: torch's full unpickler does run it
    code = (f"import sys, torch; sys.path.insert(0, {str(SCRIPT.parent)!r}); from foreign_models import Evil;"
            f" torch.save({{'x': Evil({str(tmp_path / 'ran.txt')!r})}}, {str(evil)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(BadInput, match="no model weights"):
        read_model(evil)
    assert not (tmp_path / "ran.txt").exists()
    torch.load(evil, weights_only=False)  # the control: this is what charlstm never does
    assert (tmp_path / "ran.txt").read_text() == "code from the pickle ran"


def test_a_foreign_model_is_first_class(models, tmp_path):
    """Prefill graph, int8 and the CLIs work on it as on a charlstm checkpoint."""
    folder, corpus, refs = models
    out = tmp_path / "course.onnx"
    proc = run_cli("charlstm-export", folder / "sd.pt", "-o", out, "--vocab-corpus", corpus,
                   "--vocab-corpus-chars", CORPUS_CHARS, "--steps", 50)
    assert proc.returncode == 0, proc.stderr
    params = sum(t.numel() for t in torch.load(folder / "sd.pt").values())
    assert proc.stderr.startswith(
        "read sd.pt as a state_dict\n"
        "  embedding: embedding.weight (8, 48)\n"
        "  LSTM: lstm, 2 layers of 48 units, 48 inputs\n"
        "  output: fc.weight (8, 48) + fc.bias\n"
        "  vocabulary: --vocab-corpus corpus.txt, its first 100,000 characters, 8 characters in code-point order\n"
        f"  as charlstm: vocab_size 8, embed_dim 48, hidden_size 48, num_layers 2 ({params:,} parameters)\n"
        "validation: "), proc.stderr
    assert Model(out).has_prefill
    ref = refs["course"]
    sample = run_cli("charlstm-sample", out, "--prime", ref["prompt"], "-n", len(ref["greedy"]), "--greedy")
    assert sample.stdout == ref["prompt"] + ref["greedy"] + "\n"
    int8 = export(folder / "dict.pt", tmp_path / "course.int8.onnx", quantize="int8", steps=50)
    assert int8.report.ok and "DynamicQuantizeLSTM" in int8.ops
    assert len(generate(Model(int8.path), ref["prompt"], 50, seed=1)) == 50


@pytest.mark.parametrize("name, words", [
    ("gru.pt", ["the recurrent layer at the top level is a GRU, not an LSTM"]),
    ("gru_whole.pt", ["the recurrent layer at '1' is a GRU"]),
    ("bidirectional.pt", ["bidirectional"]),
    ("proj.pt", ["proj_size"]),
    ("two_lstms.pt", ["several recurrent stacks ('a', 'b')", "ambiguous"]),
    ("extra_layer.pt", ["unexpected tensors norm.weight, norm.bias"]),
    ("no_model.pt", ["no model weights", "state_dict"]),
])
@pytest.mark.slow
def test_what_the_contract_cannot_hold_is_refused_in_one_line(models, name, words):
    folder, corpus, _ = models
    proc = run_cli("charlstm-export", folder / name, "-o", folder / "x.onnx", "--vocab", folder / "chars.json")
    assert_bad_input(proc, *words)
    assert not (folder / "x.onnx").exists()


@pytest.mark.slow
def test_vocabulary_refusals(models, tmp_path):
    folder, corpus, _ = models
    out = ["-o", tmp_path / "x.onnx"]
    assert_bad_input(run_cli("charlstm-export", folder / "sd.pt", *out), "--vocab FILE", "--vocab-corpus TEXT")
    (tmp_path / "short.json").write_text(json.dumps(list("abc")))
    assert_bad_input(run_cli("charlstm-export", folder / "sd.pt", *out, "--vocab", tmp_path / "short.json"),
                     "the vocabulary has 3 characters but the model has 8")
    assert_bad_input(run_cli("charlstm-export", folder / "sd.pt", *out, "--vocab-corpus", corpus,
                             "--vocab-corpus-chars", 3), "but the model has 8")
    assert_bad_input(run_cli("charlstm-export", folder / "sd.pt", *out, "--vocab", folder / "chars.json",
                             "--vocab-corpus", corpus), "not both")
    (tmp_path / "dup.json").write_text(json.dumps(list("aabcdefg")))
    assert_bad_input(run_cli("charlstm-export", folder / "sd.pt", *out, "--vocab", tmp_path / "dup.json"),
                     "more than once")
    assert not (tmp_path / "x.onnx").exists()


def test_the_vocabulary_forms():
    chars = tuple("ab\n")
    assert as_vocab(list(chars)).chars == as_vocab("ab\n").chars == as_vocab(chars).chars == chars
    assert as_vocab({"a": 0, "b": 1, "\n": 2}).chars == as_vocab({"0": "a", "1": "b", "2": "\n"}).chars == chars
    assert as_vocab({0: "a", 1: "b", 2: "\n"}).chars == chars
    assert as_vocab({"a": 0, "b": 2}) is None and as_vocab(["ab"]) is None and as_vocab(3) is None


def test_the_course_reads_its_text_in_text_mode(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffba\r\nc\rd".encode())
    assert vocab_from_corpus(path).chars == ("\n", "a", "b", "c", "d", "\ufeff"), "BOM kept, CRLF and CR read as \\n"
    assert vocab_from_corpus(path, 3).chars == ("a", "b", "\ufeff")


def test_a_charlstm_checkpoint_keeps_its_vocabulary(tiny_checkpoint, tmp_path):
    with pytest.raises(BadInput, match="its own vocabulary"):
        export(tiny_checkpoint, tmp_path / "m.onnx", vocab=list("abcdeg"))


def test_a_state_dict_that_does_not_fit_names_the_keys(tiny_checkpoint, tmp_path):
    from charlstm.train import build_model, load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt.state_dict["extra.weight"] = ckpt.state_dict.pop("head.bias")
    ckpt.state_dict["head.weight"] = torch.zeros(6, 3)
    with pytest.raises(BadInput) as refused:
        build_model(ckpt)
    assert str(refused.value) == ("checkpoint config and weights disagree: missing head.bias; unexpected extra.weight;"
                                  " of another shape head.weight (6, 3) (config: (6, 16))")


@pytest.mark.slow
def test_the_course_notebook_on_the_real_corpus(moliere_slice, tmp_path):
    """The issue's scenario: the course's model, its vocabulary rebuilt from the text it read."""
    refs = make_models(moliere_slice, tmp_path)
    out = tmp_path / "course.onnx"
    for name in ("sd.pt", "whole.pt", "dict.pt"):
        vocab = [] if name == "dict.pt" else ["--vocab-corpus", moliere_slice, "--vocab-corpus-chars", CORPUS_CHARS]
        proc = run_cli("charlstm-export", tmp_path / name, "-o", out, *vocab)
        assert proc.returncode == 0, proc.stderr
        ref = refs["course"]
        sample = run_cli("charlstm-sample", out, "--prime", ref["prompt"], "-n", len(ref["greedy"]), "--greedy")
        assert sample.stdout == ref["prompt"] + ref["greedy"] + "\n"
        assert score(Model(out), ref["text"]).nats_per_char == pytest.approx(ref["loss"], abs=1e-4)
