"""The optional prefill graph: exported beside the step graph, equal to it, used when present."""

import numpy as np
import onnx
import pytest

from charlstm.export import export
from charlstm.export.onnx_graph import op_inventory
from charlstm.runtime import BadInput, Model, generate, score
from charlstm.core import formats as fmt
from charlstm.core.artifacts import prefill_path
from conftest import parity_failure, run_cli, train_tiny


@pytest.fixture(scope="module")
def pair(tiny_checkpoint, tmp_path_factory):
    result = export(tiny_checkpoint, tmp_path_factory.mktemp("pair") / "m.onnx")
    return result.path, result.prefill


def test_written_beside_with_sequence_io(pair):
    step, prefill = pair
    assert prefill == prefill_path(step) and prefill.name == "m.prefill.onnx"
    proto = onnx.load(prefill)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*proto.graph.input, *proto.graph.output]}
    assert dims["tokens"] == ["steps", "batch"] and dims["logits"] == ["steps", "batch", 6]
    assert op_inventory(proto)["LSTM"] == 2
    assert {p.key: p.value for p in proto.metadata_props}["charlstm.graph"] == "prefill"


def test_idle_threads_stop_spinning_soon_and_the_prefill_ones_at_once(pair):
    """Left spinning after a prefill call, its threads would slow the step loop that follows;
    the step graph's threads spin between steps, but not for long after the last one."""
    def config(session, key):
        try:
            return session.get_session_options().get_session_config_entry(key)
        except RuntimeError:  # not set: onnxruntime's default
            return None

    model = Model(pair[0])
    for session, stops in ((model._session, None), (model._prefill, "1")):
        for key, value in fmt.SESSION_CONFIG.items():
            assert config(session, key) == value
        assert config(session, "session.force_spinning_stop") == stops


@pytest.mark.parametrize("length", [1, 5, 777])
def test_feed_equals_the_step_loop(pair, length):
    step, _ = pair
    fast, slow = Model(step), Model(step, prefill=None)
    assert fast.has_prefill and not slow.has_prefill
    ids = np.random.default_rng(length).integers(0, 6, length)
    start = fast.new_state(1)
    start.h[:] = 0.3
    a_logits, a_state = fast.feed(ids, start, chunk=100)
    b_logits, b_state = slow.feed(ids, start)
    assert a_logits.shape == (length, 6)
    for name, a, b, axis in (("logits", a_logits, b_logits, 0), ("h", a_state.h, b_state.h, 1),
                             ("c", a_state.c, b_state.c, 1)):
        assert parity_failure(name, length, a, b, axis) is None


def test_score_and_text_agree_with_and_without_prefill(pair, tiny_corpus):
    step, _ = pair
    text = tiny_corpus.read_text()[:3000]
    fast, slow = Model(step), Model(step, prefill=None)
    assert score(fast, text).nats_per_char == pytest.approx(score(slow, text).nats_per_char, abs=1e-6)
    assert generate(fast, "abcdefab" * 20, 100, seed=3) == generate(slow, "abcdefab" * 20, 100, seed=3)


def test_a_prefill_from_another_checkpoint_is_refused(pair, tiny_corpus, tmp_path):
    step, prefill = pair
    other = train_tiny(tiny_corpus, tmp_path / "other.pt", train_args={"seed": 5})
    other_pair = export(other.best, tmp_path / "other.onnx", validate=False)
    with pytest.raises(BadInput, match="another step graph"):
        Model(step, prefill=other_pair.prefill)
    with pytest.raises(BadInput, match="prefill graph; give the step graph"):
        Model(prefill)


@pytest.mark.slow
def test_no_prefill_export_removes_a_stale_one(tiny_checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    assert run_cli("charlstm-export", tiny_checkpoint, "-o", out, "--no-validate").returncode == 0
    assert prefill_path(out).is_file()
    assert run_cli("charlstm-export", tiny_checkpoint, "-o", out, "--no-validate", "--no-prefill").returncode == 0
    assert out.is_file() and not prefill_path(out).exists()
