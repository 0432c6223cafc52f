"""The runtime API on a real exported model: metadata, state, generation, streaming, scoring."""

import math

import numpy as np
import pytest

from charlstm.runtime import (BadInput, Model, SamplingOptions, State, generate, generate_batch, lane_seeds,
                              score, stream, stream_batch)
from charlstm.runtime.generate import _StopMatcher
from conftest import edit_metadata


@pytest.fixture(scope="module")
def model(tiny_onnx) -> Model:
    return Model(tiny_onnx)


def test_reads_everything_from_the_file(model, tiny_onnx):
    assert model.vocab == list("abcdef") and model.vocab_size == 6
    assert (model.num_layers, model.hidden_size) == (2, 16)
    assert Model(tiny_onnx.read_bytes(), threads=1).vocab == model.vocab
    assert model.decode(model.encode("fedcba")) == "fedcba"


def test_unknown_characters(model):
    with pytest.raises(BadInput, match="'x', 'z'"):
        model.encode("abxcz")
    assert model.decode(model.encode("abxcz", unknown="skip")) == "abc"


def test_step_shapes_and_state_helpers(model, tmp_path):
    logits, state = model.step([0, 1, 2], model.new_state(3))
    assert logits.shape == (3, 6) and state.h.shape == state.c.shape == (2, 3, 16)
    picked = state.select([2, 2])
    np.testing.assert_array_equal(picked.h[:, 1], state.h[:, 2])
    state.save(tmp_path / "s.npz")
    again = State.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(again.c, state.c)
    copy = state.copy()
    copy.h[:] = 0
    assert state.h.any()


def test_saved_state_continues_identically(model, tmp_path):
    """Prime with 'abcab', save; 'cde' from the restored state equals the uninterrupted run."""
    _, straight = model.prime(model.encode("abcabcde"))
    _, half = model.prime(model.encode("abcab"))
    half.save(tmp_path / "half.npz")
    _, resumed = model.prime(model.encode("cde"), State.load(tmp_path / "half.npz"))
    np.testing.assert_array_equal(resumed.h, straight.h)
    a = generate(model, "", 60, seed=3, state=straight)
    b = generate(model, "", 60, seed=3, state=resumed)
    assert a == b


def test_same_seed_same_text_and_streaming_equals_generate(model):
    options = dict(temperature=1.0, top_p=0.95, seed=11)
    text = generate(model, "abc", 300, **options)
    assert len(text) == 300 and set(text) <= set("abcdef")
    assert text == generate(model, "abc", 300, **options)
    assert text == "".join(stream(model, "abc", 300, **options))
    assert text != generate(model, "abc", 300, **{**options, "seed": 12})


def test_batch_of_n_equals_n_single_runs(model):
    texts = generate_batch(model, "fed", 200, 4, seed=5, temperature=1.2)
    singles = [generate(model, "fed", 200, seed=s, temperature=1.2) for s in lane_seeds(5, 4)]
    assert texts == singles and len(set(texts)) == 4


def test_greedy_is_the_argmax_path(model):
    text = generate(model, "ab", 50, greedy=True)
    logits, state = model.prime(model.encode("ab"))
    expected = []
    for _ in range(50):
        token = int(logits[0].argmax())
        expected.append(model.vocab[token])
        logits, state = model.step([token], state)
    assert text == "".join(expected)


def test_stop_strings_end_a_sample_and_are_not_emitted(model):
    full = generate(model, "a", 400, seed=2, temperature=1.0)
    stop = full[40:43]
    cut = generate(model, "a", 400, seed=2, temperature=1.0, stop=[stop])
    assert cut == full[: full.index(stop)]
    pieces = list(stream(model, "a", 400, seed=2, temperature=1.0, stop=[stop]))
    assert "".join(pieces) == cut


def test_stop_matcher_holds_back_only_possible_stops():
    m = _StopMatcher(["\n\n", "END"])
    assert [m.push(c) for c in "xE"] == ["x", ""]
    assert m.push("x") == "Ex"
    assert [m.push(c) for c in "EN"] == ["", ""]
    assert m.push("D") == "" and m.done


def test_an_empty_prompt_starts_from_the_start_token(model):
    """No line break in "abcdef": the start token is id 0, so "" continues like the prompt "a"."""
    assert "\n" not in model.vocab and model.start_token == 0
    assert generate(model, "", 40, seed=0) == generate(model, "a", 40, seed=0)
    assert generate(model, "", 0, seed=0) == ""


def test_sampling_options_travel_as_one_object(model):
    options = SamplingOptions(temperature=1.3, top_k=4, repetition_penalty=1.2)
    by_object = generate(model, "abc", 200, seed=8, options=options)
    assert by_object == generate(model, "abc", 200, seed=8, temperature=1.3, top_k=4, repetition_penalty=1.2)
    assert by_object != generate(model, "abc", 200, seed=8, options=SamplingOptions(temperature=1.3))
    overridden = generate(model, "abc", 200, seed=8, options=options, top_k=2)  # a keyword wins
    assert overridden == generate(model, "abc", 200, seed=8, temperature=1.3, top_k=2, repetition_penalty=1.2)
    assert generate_batch(model, "abc", 50, 2, seed=8, options=options) == [
        generate(model, "abc", 50, seed=s, options=options) for s in (8, 9)]
    with pytest.raises(BadInput, match="top-k"):
        generate(model, "abc", 5, options=options, top_k=0)


def test_stream_batch_yields_per_lane_pieces(model):
    steps = list(stream_batch(model, "abc", 5, num_samples=3, seed=0))
    assert all(len(s) == 3 for s in steps)
    assert ["".join(s[i] for s in steps) for i in range(3)] == generate_batch(model, "abc", 5, 3, seed=0)


def test_score_is_the_mean_cross_entropy_of_the_step_outputs(model):
    text = "abcdefabdcefabcabc"
    ids = model.encode(text)
    state, total = model.new_state(1), 0.0
    for current, target in zip(ids[:-1], ids[1:]):
        logits, state = model.step([current], state)
        p = np.exp(logits[0].astype(np.float64))
        total += -math.log(p[target] / p.sum())
    s = score(model, text)
    assert s.chars == len(text) - 1
    assert s.nats_per_char == pytest.approx(total / (len(text) - 1), rel=1e-12)
    assert s.perplexity == pytest.approx(math.exp(s.nats_per_char))


def test_api_bad_input(model, tmp_path):
    (tmp_path / "x.onnx").write_text("not onnx")
    with pytest.raises(BadInput, match="does not exist"):
        Model(tmp_path / "missing.onnx")
    with pytest.raises(BadInput, match="not an ONNX model"):
        Model(tmp_path / "x.onnx")
    with pytest.raises(BadInput):
        generate(model, "abc", -1)
    with pytest.raises(BadInput):
        generate(model, "abc", 5, top_k=0)
    with pytest.raises(BadInput, match="seed must be >= 0"):
        generate(model, "abc", 5, seed=-1)
    with pytest.raises(BadInput):
        score(model, "a")
    with pytest.raises(BadInput, match="at least one token"):
        model.prime([])


def test_onnx_without_charlstm_metadata_or_another_version(tiny_onnx, tmp_path):
    bare = edit_metadata(tiny_onnx, tmp_path / "bare.onnx", **{"charlstm.format": None})
    with pytest.raises(BadInput, match="without charlstm metadata"):
        Model(bare)
    future = edit_metadata(tiny_onnx, tmp_path / "future.onnx", **{"charlstm.format": "charlstm-onnx/2"})
    with pytest.raises(BadInput, match="charlstm-onnx/2"):
        Model(future)


def test_a_prefill_file_without_a_graph_key_is_read_as_a_step_graph(tiny_onnx, tmp_path):
    """Files without charlstm.graph predate it and are step graphs: given as a prefill graph,
    such a file is refused with BadInput (it was a KeyError)."""
    old = edit_metadata(tiny_onnx, tmp_path / "old.onnx", **{"charlstm.graph": None})
    assert Model(old).vocab == list("abcdef")
    with pytest.raises(BadInput, match="is a charlstm step graph; give the prefill graph"):
        Model(tiny_onnx, prefill=old)
