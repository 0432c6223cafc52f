"""Export: the ONNX contract, metadata, op inventory, determinism, validation, bad input."""

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from charlstm.export import ValidationFailed, export, validate
from charlstm.export.onnx_graph import OPSET, check_graph, op_inventory
from charlstm.core import formats as fmt
from charlstm.train import Checkpoint, CharLSTM, ModelConfig, build_model, load_checkpoint, save_checkpoint
from conftest import assert_bad_input, blocked_env, run_cli, train_tiny

CONFIGS = {  # (layers, hidden, embed): embed != hidden in each
    "1-layer": {"num_layers": 1, "hidden_size": 12, "embed_dim": 5},
    "2-layer": {"num_layers": 2, "hidden_size": 16, "embed_dim": 8},
    "3-layer": {"num_layers": 3, "hidden_size": 10, "embed_dim": 14},
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tiny_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    result = train_tiny(tiny_corpus, folder / "m.pt", CONFIGS[request.param])
    return result.best, export(result.best, folder / "m.onnx"), CONFIGS[request.param]


def test_io_contract_and_metadata(exported):
    ckpt_path, result, cfg = exported
    proto = onnx.load(result.path)
    L, H = cfg["num_layers"], cfg["hidden_size"]

    def shape(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    ins = {i.name: (i.type.tensor_type.elem_type, shape(i)) for i in proto.graph.input}
    outs = {o.name: (o.type.tensor_type.elem_type, shape(o)) for o in proto.graph.output}
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    assert ins == {"tokens": (i64, ["batch"]), "h_in": (f32, [L, "batch", H]), "c_in": (f32, [L, "batch", H])}
    assert outs == {"logits": (f32, ["batch", 6]), "h_out": (f32, [L, "batch", H]), "c_out": (f32, [L, "batch", H])}
    meta = {p.key: p.value for p in proto.metadata_props}
    ckpt = load_checkpoint(ckpt_path)
    assert meta[fmt.META_FORMAT] == fmt.ONNX_FORMAT
    assert json.loads(meta[fmt.META_VOCAB]) == list("abcdef")
    assert (meta[fmt.META_NUM_LAYERS], meta[fmt.META_HIDDEN_SIZE], meta[fmt.META_VOCAB_SIZE]) == (str(L), str(H), "6")
    assert float(meta[fmt.META_VAL_LOSS]) == ckpt.train.val_loss
    import hashlib
    assert meta[fmt.META_CHECKPOINT_SHA256] == hashlib.sha256(ckpt_path.read_bytes()).hexdigest()
    assert "h_in" in proto.doc_string and proto.graph.name == "charlstm_step"
    assert proto.opset_import[0].version == OPSET


def test_op_inventory_native_lstm_no_dropout(exported):
    _, result, cfg = exported
    ops = op_inventory(onnx.load(result.path))
    assert ops["LSTM"] == cfg["num_layers"]
    assert set(ops) <= {"Gather", "Unsqueeze", "Squeeze", "Slice", "Concat", "LSTM", "MatMul", "Add", "Gemm", "Constant"}
    assert ops.get("MatMul", 0) + ops.get("Gemm", 0) == 1, "only the output layer multiplies; no unrolled LSTM"
    weights = {i.name for i in onnx.load(result.path).graph.initializer}
    assert {f"lstm.l{layer}.{r}" for layer in range(cfg["num_layers"]) for r in "WRB"} <= weights


def test_one_self_contained_file_that_checks(exported):
    _, result, _ = exported
    assert [p.name for p in result.path.parent.glob("m.onnx*")] == ["m.onnx"]
    proto = onnx.load(result.path)
    assert all(i.data_location == onnx.TensorProto.DEFAULT and not i.external_data for i in proto.graph.initializer)
    check_graph(proto)


def test_batch_axis_is_dynamic(exported):
    """The same file at batch 1, 3 and 256; each lane equals that lane run alone."""
    _, result, cfg = exported
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    L, H = cfg["num_layers"], cfg["hidden_size"]
    for batch in (1, 3, 256):
        tokens = rng.integers(0, 6, batch).astype(np.int64)
        h, c = (rng.standard_normal((L, batch, H)).astype(np.float32) for _ in range(2))
        logits, h2, c2 = session.run(None, {"tokens": tokens, "h_in": h, "c_in": c})
        assert logits.shape == (batch, 6) and h2.shape == c2.shape == (L, batch, H)
        for lane in (0, batch - 1):
            one = session.run(None, {"tokens": tokens[lane:lane + 1], "h_in": h[:, lane:lane + 1],
                                     "c_in": c[:, lane:lane + 1]})
            np.testing.assert_allclose(one[0][0], logits[lane], atol=1e-5)


def test_export_is_deterministic(tiny_checkpoint, tmp_path):
    a = export(tiny_checkpoint, tmp_path / "a.onnx", validate=False)
    b = export(tiny_checkpoint, tmp_path / "b.onnx")
    assert a.path.read_bytes() == b.path.read_bytes()


def test_validation_passes_and_catches_a_corrupted_graph(tiny_checkpoint, tiny_onnx):
    model = build_model(load_checkpoint(tiny_checkpoint))
    good = validate(model, tiny_onnx.read_bytes(), steps=50)
    assert good.ok and [r.output for r in good.rows] == ["logits", "h_out", "c_out", "KL nats/char"]
    proto = onnx.load(tiny_onnx)
    weight = next(i for i in proto.graph.initializer if i.name == "lstm.l1.R")
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0, 0, 0] += 0.05  # one recurrent weight of the top layer's input gate
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    bad = validate(model, proto.SerializeToString(), steps=50)
    assert not bad.ok
    assert set(bad.failed) == {"logits", "h_out", "c_out"}
    worst_logits = next(r for r in bad.rows if r.output == "logits")
    assert "step" in worst_logits.where and "lane" in worst_logits.where and "FAILED" in bad.table()


def test_validation_fails_a_graph_that_gives_nan(tiny_checkpoint, tiny_onnx):
    model = build_model(load_checkpoint(tiny_checkpoint))
    proto = onnx.load(tiny_onnx)
    bias = next(i for i in proto.graph.initializer if i.name == "model.head.bias")
    values = onnx.numpy_helper.to_array(bias).copy()
    values[1] = np.nan  # the output layer's bias of one character
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    bad = validate(model, proto.SerializeToString(), steps=20)
    assert "logits" in bad.failed and "FAILED" in bad.table() and " inf " in bad.table()


@pytest.mark.slow
def test_cli_exports_and_prints_the_validation_table(tiny_checkpoint, tmp_path):
    out = tmp_path / "x.onnx"
    proc = run_cli("charlstm-export", tiny_checkpoint, "-o", out)
    assert proc.returncode == 0, proc.stderr
    for name in ("logits", "h_out", "c_out"):
        assert any(line.startswith(name) and " ok " in line for line in proc.stderr.splitlines())
    assert f"wrote {out}" in proc.stdout and out.is_file()


@pytest.mark.slow
def test_cli_validation_failure_exits_1_and_writes_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "x.onnx"
    proc = run_cli("charlstm-export", tiny_checkpoint, "-o", out, "--atol", "0", "--rtol", "0", "--steps", 50)
    assert proc.returncode == 1, proc.stderr
    assert "FAILED" in proc.stderr and "nothing was written" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_api_validation_failure_keeps_an_existing_file(tiny_checkpoint, tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"an older good export")
    with pytest.raises(ValidationFailed):
        export(tiny_checkpoint, out, atol=0.0, steps=20)
    assert out.read_bytes() == b"an older good export"


@pytest.mark.slow
def test_default_output_is_beside_the_checkpoint(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    proc = run_cli("charlstm-export", ckpt, "--no-validate")
    assert proc.returncode == 0 and (tmp_path / "model.onnx").is_file()


@pytest.mark.slow
def test_bad_inputs(tiny_checkpoint, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:3000])
    future = tmp_path / "future.pt"  # a format this version does not know: made by hand on purpose
    torch.save({**torch.load(tiny_checkpoint, weights_only=True), "format": "charlstm-checkpoint/9"}, future)
    diverged = tmp_path / "diverged.pt"
    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt.state_dict["head.bias"][2] = float("nan")
    save_checkpoint(diverged, ckpt)
    assert_bad_input(run_cli("charlstm-export", tmp_path / "nope.pt"), "does not exist")
    assert_bad_input(run_cli("charlstm-export", tmp_path), "is a directory, not a regular file")
    assert_bad_input(run_cli("charlstm-export", text), "not a readable model file")
    assert_bad_input(run_cli("charlstm-export", truncated), "not a readable model file")
    assert_bad_input(run_cli("charlstm-export", future), "charlstm-checkpoint/9")
    assert_bad_input(run_cli("charlstm-export", diverged), "NaN or infinite weights (head.bias)")
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "-o", tmp_path / "no" / "m.onnx"), "does not exist")
    assert_bad_input(run_cli("charlstm-export", tiny_checkpoint, "--atol", "-1"), "--atol")



@pytest.mark.slow
def test_the_checkpoint_is_never_overwritten(tiny_checkpoint, tmp_path):
    ckpt, odd = tmp_path / "m.pt", tmp_path / "x.prefill.onnx"  # a checkpoint where the prefill graph goes
    for path in (ckpt, odd):
        path.write_bytes(tiny_checkpoint.read_bytes())
    assert_bad_input(run_cli("charlstm-export", ckpt, "-o", ckpt), "overwrite the checkpoint")
    assert_bad_input(run_cli("charlstm-export", odd, "-o", tmp_path / "x.onnx", "--no-prefill"),
                     "overwrite the checkpoint")
    assert ckpt.read_bytes() == odd.read_bytes() == tiny_checkpoint.read_bytes()


@pytest.mark.slow
def test_without_the_train_extra(tiny_checkpoint, tmp_path):
    for missing in ("torch", "onnx"):
        proc = run_cli("charlstm-export", tiny_checkpoint, env=blocked_env(tmp_path, missing))
        assert_bad_input(proc, missing, "pip install torch==2.13.0 '.[train]'")


def test_quantizing_leaves_the_applications_logging_alone(tiny_checkpoint, tmp_path):
    import logging

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        export(tiny_checkpoint, tmp_path / "q.onnx", quantize="int8", validate=False, prefill=False)
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)


@pytest.mark.slow
def test_int8_export(tiny_corpus, tmp_path):
    from charlstm.runtime import Model, generate

    ckpt = train_tiny(tiny_corpus, tmp_path / "m.pt", {"hidden_size": 128, "embed_dim": 16}).best
    fp32 = export(ckpt, tmp_path / "m.onnx")
    proc = run_cli("charlstm-export", ckpt, "--quantize", "int8")
    assert proc.returncode == 0, proc.stderr
    assert "KL nats/char" in proc.stderr and " ok " in proc.stderr.splitlines()[-1]
    int8 = tmp_path / "m.int8.onnx"
    ops = op_inventory(onnx.load(int8))
    assert ops["DynamicQuantizeLSTM"] == 2 and "LSTM" not in ops and "MatMulInteger" in ops
    assert int8.stat().st_size < 0.3 * fp32.size
    model = Model(int8)
    assert model.has_prefill and model.vocab == list("abcdef")
    assert len(generate(model, "abc", 50, seed=0)) == 50
    assert_bad_input(run_cli("charlstm-export", ckpt, "--quantize", "int4"), "--quantize")


@pytest.mark.slow
def test_int8_weights_export(tiny_checkpoint, tmp_path):
    """int8 storage, standard operators only; the runtime's session folds the dequantizing when
    it is made, so that what runs each step is an fp32 graph; the text is close to fp32's."""
    from charlstm.runtime import Model, score
    from charlstm.export.quantize import SMALLEST_QUANTIZED
    from charlstm.runtime.model import _session_options

    proc = run_cli("charlstm-export", tiny_checkpoint, "--quantize", "int8-weights", "-o", tmp_path / "w.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "KL nats/char" in proc.stderr and " ok " in proc.stderr.splitlines()[-1]
    fp32 = export(tiny_checkpoint, tmp_path / "m.onnx", prefill=False)
    large = {i.name for i in onnx.load(fp32.path).graph.initializer if len(i.dims) >= 2 and min(i.dims[-2:]) > 1
             and np.prod(i.dims) >= SMALLEST_QUANTIZED}  # the matrices but the smallest
    assert {"lstm.l0.R", "lstm.l1.W", "lstm.l1.R"} <= large
    proto = onnx.load(tmp_path / "w.onnx")
    ops = op_inventory(proto)
    assert ops["DequantizeLinear"] == len(large) and ops["LSTM"] == 2 and {n.domain for n in proto.graph.node} <= {""}
    int8 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2}
    assert int8 == {f"{name}.int8" for name in large}
    onnx.checker.check_model(proto, full_check=True)
    options = _session_options(1, True)
    options.optimized_model_filepath = str(tmp_path / "as-run.onnx")
    Model(tmp_path / "w.onnx", session_options=options, prefill=None)
    assert "DequantizeLinear" not in op_inventory(onnx.load(tmp_path / "as-run.onnx")), "folded when the session is made"
    text = "abcdefabcabc" * 20
    ours, theirs = (score(Model(p), text).nats_per_char for p in (tmp_path / "w.onnx", fp32.path))
    assert abs(ours - theirs) < 0.01


# sha256 of the step and prefill graphs, fp32 and int8, that the exporter of commit 01c8bdb (before
# issue 19's rework of the reader) wrote for the checkpoint below, with torch 2.13.0 and onnx 1.23.
PINNED = {None: ("7f09dbef1fd8e096faf61997cadb2095d751387d5bbc3d93aba3ea0c17fd34b0",
                 "f1877178effb8e3070b0e6e4af174e0e307f39886a40131d85f0bd75f0929924"),
          "int8": ("d61087da4a70dee6deb20ea2054db3fe9740239fbd2577d5f3cb2534bc5e0bd7",
                   "a48f8f6d6c86f997f47cd8fea96b0eb931c457603fd60df546e72e7ca48c53b3")}


@pytest.mark.skipif(not (torch.__version__.startswith("2.13.0") and onnx.__version__.startswith("1.23.")),
                    reason="the pinned bytes were written by torch 2.13.0 and onnx 1.23")
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_charlstm_checkpoint_exports_to_the_same_bytes_as_before(tmp_path, quantize):
    """Changes to how files are read must not change what is written for our own checkpoints."""
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, Checkpoint.of(CharLSTM(ModelConfig(6, 4, 8, 2, 0.0)), list("ab\ncde")))
    result = export(ckpt, tmp_path / "m.onnx", quantize=quantize, validate=False)
    digests = tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in (result.path, result.prefill))
    assert digests == PINNED[quantize]
