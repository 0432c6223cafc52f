"""Bring your own model: LSTMs trained outside charlstm, saved every usual way, exported and sampled torch-free."""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charlstm.core import formats as fmt
from charlstm.core.errors import BadInput
from charlstm.export import export
from charlstm.export.foreign import read_model
from charlstm.export.vocabulary import as_vocab, candidates, choose, vocab_from_corpus, vocab_from_file
from charlstm.runtime import Model, generate, score
from charlstm.train import CharLSTM, ModelConfig
from conftest import ROOT, assert_bad_input, markov_text, run_cli

SCRIPT = ROOT / "tests" / "foreign_models.py"
CORPUS_CHARS = "100000"
CORPUS_VOCAB = "--vocab-corpus corpus.txt, its first 100,000 characters, 8 characters in code-point order"
KINDS = {  # file → (what it is, the model it holds, the vocabulary given (None: the file's), the report's line)
    "sd.pt": ("state_dict", "course", "corpus", CORPUS_VOCAB),
    "dict.pt": ("dict holding a state_dict", "course", None, "key 'chars', 8 characters in id order"),
    "tutorial.pt": ("dict holding a state_dict", "course", None,
                    "key 'char2int', 8 characters from a mapping character -> id"),
    "dataparallel.pt": ("state_dict", "course", "corpus", CORPUS_VOCAB),
    "whole.pt": ("pickled model", "course", "corpus", CORPUS_VOCAB),
    "traced.pt": ("TorchScript model", "course", "stoi.json",
                  "--vocab stoi.json, 8 characters from a mapping character -> id"),
    "evil.pt": ("pickled model", "course", "chars.json", "--vocab chars.json, 8 characters in id order"),
    "wlm.pt": ("pickled model", "wlm", "chars.json", "--vocab chars.json, 8 characters in id order"),
    "wlm_sd.pt": ("state_dict", "wlm", "corpus", CORPUS_VOCAB),
    "onehot.pt": ("state_dict", "onehot", "corpus", CORPUS_VOCAB),
    "char_rnn.pt": ("dict holding a state_dict", "char_rnn", None, "key 'tokens', 8 characters in id order"),
    "char_rnn_whole.pt": ("pickled model", "char_rnn", None, "attribute 'chars', 8 characters in id order"),
    "charlm.pt": ("pickled model", "charlm", "charlm_vocab.txt",
                  "--vocab charlm_vocab.txt, 8 characters in id order; mapped '<eos>' -> '\\n'"),
    "lightning.ckpt": ("dict holding a state_dict", "course", None,
                       "key 'hyper_parameters.vocab', 8 characters in id order"),
    "lightning_old.ckpt": ("dict holding a state_dict", "course", None,
                           "key 'hyper_parameters.itos', 8 characters from a mapping id -> character"),
}


def make_models(corpus, folder) -> dict:
    """The models of tests/foreign_models.py, with a fixed string hash (set(text)'s order, which
    the char-RNN tutorial's vocabulary keeps, is then the same in every run)."""
    proc = subprocess.run([sys.executable, SCRIPT, corpus, folder], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
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
    return None if source is None else vocab_from_file(folder / source)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_exports_and_samples_as_the_original(models, tmp_path, name):
    folder, corpus, refs = models
    kind, which, source, vocab_line = KINDS[name]
    result = export(folder / name, tmp_path / "m.onnx", steps=20, vocab=vocabulary(folder, corpus, source))
    assert result.source == kind and result.report.ok
    assert result.vocab_found == (source is None)
    assert f"  vocabulary: {vocab_line}" in result.conversion
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


@pytest.mark.slow
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
    ("charlm_learned.pt", ["h0 (2, 1, 32) is a learned initial state", "starts a text from zeros"]),
    ("hidden_buffer.pt", ["unexpected tensors hidden"]),  # (2, 64, 48): a batch's state, not a start state
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


def test_the_conversion_report_says_what_was_read(models, tmp_path):
    folder, _, _ = models
    params = sum(p.numel() for p in CharLSTM(ModelConfig(8, 8, 32, 2)).parameters())
    assert export(folder / "char_rnn.pt", tmp_path / "m.onnx", validate=False).conversion == (
        "read char_rnn.pt as a dict holding a state_dict under key 'state_dict'",
        "  embedding: none: one-hot characters (8 inputs to the LSTM)",
        "  LSTM: lstm, 2 layers of 32 units, 8 inputs",
        "  output: fc.weight (8, 32) + fc.bias",
        "  vocabulary: key 'tokens', 8 characters in id order",
        f"  as charlstm: vocab_size 8, embed_dim 8, hidden_size 32, num_layers 2 ({params:,} parameters)")
    charlm = export(folder / "charlm.pt", tmp_path / "m.onnx", validate=False,
                    vocab=vocab_from_file(folder / "charlm_vocab.txt")).conversion
    assert charlm[0] == "read charlm.pt as a pickled model (class __main__.CharLM)"
    assert "  initial state: h0 (2, 1, 32), c0 (2, 1, 32): zeros, the state charlstm starts from" in charlm
    wlm = export(folder / "wlm.pt", tmp_path / "m.onnx", validate=False, vocab=list(json.loads(
        (folder / "chars.json").read_text()))).conversion
    assert "  tied: decoder.weight is encoder.weight" in wlm
    assert "  vocabulary: the vocabulary given, 8 characters in id order" in wlm


def test_the_tutorial_vocabulary_is_in_set_order(models):
    """The precondition of the `tokens` case: its id order is not the sorted one."""
    folder, _, _ = models
    tokens = torch.load(folder / "char_rnn.pt")["tokens"]
    assert isinstance(tokens, tuple) and list(tokens) != sorted(tokens)


def test_several_vocabularies_are_listed_and_one_is_chosen_by_key(models, tmp_path):
    folder, _, refs = models
    with pytest.raises(BadInput) as listed:
        read_model(folder / "two_vocabs.pt")
    assert str(listed.value) == ("the file holds 2 different vocabularies of 8 characters: key 'chars'"
                                 " (\\nabcdef\\ufeff); key 'itos' (\\ufefffedcba\\n); choose one with --vocab-key NAME")
    result = export(folder / "two_vocabs.pt", tmp_path / "m.onnx", steps=20, vocab_key="chars")
    ref = refs["course"]
    assert generate(Model(result.path), ref["prompt"], len(ref["greedy"]), greedy=True) == ref["greedy"]
    reversed_one = read_model(folder / "two_vocabs.pt", vocab_key="itos")
    assert reversed_one.ckpt.vocab == read_model(folder / "dict.pt").ckpt.vocab[::-1]
    with pytest.raises(BadInput, match=r"--vocab-key 'nope': the file holds no vocabulary there \(vocabularies"
                                       r" found: 'chars', 'itos'\)"):
        read_model(folder / "two_vocabs.pt", vocab_key="nope")


def test_a_vocabulary_of_another_size_is_named(models, tmp_path):
    folder, _, _ = models
    path = tmp_path / "short.pt"
    torch.save({"state_dict": torch.load(folder / "sd.pt"), "chars": list("abcdefg")}, path)
    with pytest.raises(BadInput, match=r"holds no vocabulary of 8 characters \(key 'chars' holds 7\); give it"):
        read_model(path)
    with pytest.raises(BadInput, match="key 'chars' holds 7 characters but the model has 8"):
        read_model(path, vocab_key="chars")


def test_the_file_is_read_once(models, tiny_checkpoint, tmp_path):
    """Every open of the model file, as Python's audit hooks see them (torch's and ours alike)."""
    folder, _, _ = models
    opened, watched = [], set()
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and str(args[0]) in watched
                     else None)
    for path in (tiny_checkpoint, folder / "tutorial.pt", folder / "traced.pt", folder / "whole.pt"):
        watched.add(str(path))
        vocab = vocab_from_file(folder / "chars.json") if path.name in ("traced.pt", "whole.pt") else None
        export(path, tmp_path / "m.onnx", steps=5, vocab=vocab)
        assert opened.count(str(path)) == 1, (path, opened)


def test_a_charlstm_checkpoint_takes_no_vocabulary_key(tiny_checkpoint, tmp_path):
    with pytest.raises(BadInput, match="drop --vocab / --vocab-corpus / --vocab-key"):
        export(tiny_checkpoint, tmp_path / "m.onnx", vocab_key="chars")


@pytest.mark.slow
def test_the_files_that_hold_their_vocabulary_need_no_flag(models, tmp_path):
    """The issue's two failures, from the command line: the tutorial's dict and the char-LM."""
    folder, _, refs = models
    for name, flags, which, line in (
            ("char_rnn.pt", [], "char_rnn", "  vocabulary: key 'tokens', 8 characters in id order"),
            ("char_rnn_whole.pt", [], "char_rnn", "  vocabulary: attribute 'chars', 8 characters in id order"),
            ("charlm.pt", ["--vocab", folder / "charlm_vocab.txt"], "charlm", "mapped '<eos>' -> '\\n'"),
            ("lightning.ckpt", [], "course", "  vocabulary: key 'hyper_parameters.vocab', 8 characters in id order"),
            ("two_vocabs.pt", ["--vocab-key", "chars"], "course", "  vocabulary: key 'chars', 8 characters in id order")):
        out = tmp_path / f"{name}.onnx"
        proc = run_cli("charlstm-export", folder / name, "-o", out, "--steps", 20, *flags)
        assert proc.returncode == 0 and line in proc.stderr, proc.stderr
        ref = refs[which]
        sample = run_cli("charlstm-sample", out, "--prime", ref["prompt"], "-n", len(ref["greedy"]), "--greedy")
        assert sample.stdout == ref["prompt"] + ref["greedy"] + "\n"
    assert_bad_input(run_cli("charlstm-export", folder / "two_vocabs.pt", "-o", tmp_path / "x.onnx"),
                     "2 different vocabularies", "--vocab-key NAME")
    assert_bad_input(run_cli("charlstm-export", folder / "char_rnn.pt", "-o", tmp_path / "x.onnx", "--vocab-key", "a",
                             "--vocab", folder / "chars.json"), "not both")


@pytest.mark.parametrize("content, chars, mapped", [
    ("a\nb\n\\n\n", "ab\n", (("\\n", "\n"),)),  # one per line, the line break as an escape (mapped, said)
    ("a\r\nb\r\n<eos>\r\n", "ab\n", (("<eos>", "\n"),)),  # CRLF line ends
    ("\ufeffa\nb\n<space>\n", "ab ", (("<space>", " "),)),  # a byte-order mark before the first character
    ("\ufeff\na\n", "\ufeffa", ()),  # a line that is only the mark: that character
    ("<EOL>\n \n\\\\\n\\t", "\n \\\t", (("<EOL>", "\n"), ("\\\\", "\\"), ("\\t", "\t"))),  # no last line end
    ('["a", "<sp>", "\\n"]', "a \n", (("<sp>", " "),)),  # JSON: "\n" there is the character
    ('{"<eos>": 1, "x": 0}', "x\n", (("<eos>", "\n"),)),
    ('{"0": "x", "1": "\\\\n"}', "x\n", (("\\n", "\n"),)),
    ("[\nx\n", "[x", ()),  # not JSON: a text vocabulary that starts with a bracket
])
def test_vocabulary_files(tmp_path, content, chars, mapped):
    path = tmp_path / "v"
    path.write_bytes(content.encode())
    vocab = vocab_from_file(path)
    assert vocab.chars == tuple(chars) and vocab.mapped == mapped
    assert vocab.origin == "--vocab v"


@pytest.mark.parametrize("content, words", [
    ("a\n\nb\n", "line 2 is empty"),
    ("a\n<pad>\n", "'<pad>', which is not a single character (tokens charlstm maps to one character: <eos>"),
    ("a\n<eos>\n\\n\n", "'\\n' more than once"),
    ("ab\n", "'ab', which is not a single character"),
    ('{"a": 0, "b": 2}', "ids 0..N-1"),
    ("", "line 1 is empty"),
])
def test_vocabulary_file_refusals(tmp_path, content, words):
    path = tmp_path / "v"
    path.write_text(content)
    with pytest.raises(BadInput, match=re.escape(words)):
        vocab_from_file(path)
    (tmp_path / "bytes").write_bytes(b"\xff\xfe")
    with pytest.raises(BadInput, match="not UTF-8"):
        vocab_from_file(tmp_path / "bytes")


def test_vocabularies_are_found_by_what_they_are():
    sd = {"w": torch.zeros(1)}
    found = candidates({"state_dict": sd, "meta": {"run": {"letters": list("cab")}}, "opt": [{"ids": [0, 1, 2]}],
                        "name": "net", "abc": "abc", "notes": "xyz!"})
    assert [(c.where, "".join(c.vocab.chars), c.named) for c in found] == [
        ("meta.run.letters", "cab", True), ("abc", "abc", False)]  # "net": a name, "xyz!": not in code-point order
    with pytest.raises(BadInput, match="2 different vocabularies of 3 characters"):
        choose(candidates({"a": "abc", "b": "xyz"}), 3, None, "key")
    named_first = choose(candidates({"chars": list("bca"), "b": "abc"}), 3, None, "key")
    assert named_first.where == "chars"  # a name that says so outranks a sorted string elsewhere


def test_export_options_are_checked():
    from charlstm.export.exporter import ExportOptions

    for bad, words in [({"atol": -1}, "--atol"), ({"rtol": float("nan")}, "--atol, --rtol"), ({"steps": 0}, "--steps"),
                       ({"steps": True}, "--steps"), ({"quantize": "int4"}, "--quantize"), ({"max_params": 0}, "--max"),
                       ({"validate": 1}, "validate"), ({"vocab": ["ab"]}, "not a single character"),
                       ({"vocab": list("ab"), "vocab_key": "chars"}, "not both"), ({"vocab_key": ""}, "a name")]:
        with pytest.raises(BadInput, match=re.escape(words)):
            ExportOptions(**bad)
    options = ExportOptions(vocab=["a", "<eos>"])
    assert options.vocab.chars == ("a", "\n") and options.vocab.mapped == (("<eos>", "\n"),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.steps = 3


@pytest.mark.slow
def test_the_documented_commands_run(models, tmp_path):
    """docs/foreign.md's commands and its Python example, on the fixtures under the names it uses."""
    folder, corpus, _ = models
    for ours, theirs in (("char_rnn.pt", "char_rnn.pt"), ("sd.pt", "sd.pt"), ("charlm.pt", "model.pt"),
                         ("charlm_vocab.txt", "vocab.txt"), ("two_vocabs.pt", "epoch=9.ckpt"),
                         ("two_vocabs.pt", "two_vocabs.pt"), ("corpus.txt", "moliere.txt")):
        shutil.copy(folder / ours, tmp_path / theirs)
    doc = (ROOT / "docs" / "foreign.md").read_text()
    shell = re.search(r"```\n(.*?)```", doc, re.S).group(1)
    for line in filter(None, (re.sub(r"\s+#.*", "", line).strip() for line in shell.splitlines())):
        proc = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert proc.returncode == 0 and "wrote " in proc.stdout, (line, proc.stderr)
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "vocabulary: key 'chars'" in proc.stdout, proc.stderr
    assert Model(tmp_path / "charlm.onnx").vocab[0] == "\n"
