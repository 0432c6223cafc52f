"""Fuzzing the runtime's edges with hypothesis: whatever comes in, the outcome is a result or BadInput."""

import json
import subprocess

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlstm.core.errors import BadInput
from charlstm.runtime import Model, State, generate, score
from conftest import BIN

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = ["charlstm.format", "charlstm.graph", "charlstm.vocab", "charlstm.num_layers", "charlstm.hidden_size",
        "charlstm.vocab_size", "charlstm.checkpoint_sha256", "charlstm.val_loss", "charlstm.other"]
VALUES = st.one_of(st.none(), st.text(max_size=12), st.integers(-3, 40).map(str),
                   st.lists(st.one_of(st.text(max_size=2), st.integers(0, 9)), max_size=8).map(json.dumps))


@pytest.fixture(scope="module")
def proto(tiny_onnx):
    return onnx.load(tiny_onnx)


@pytest.fixture(scope="module")
def model(tiny_onnx):
    return Model(tiny_onnx)


def result_or_bad_input(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except BadInput as e:
        assert str(e) and "\n" not in str(e), repr(e)
        return e


def use(model: Model) -> None:
    """What a user does with a model that loaded: generate and score."""
    result_or_bad_input(generate, model, "", 5, seed=0)
    result_or_bad_input(score, model, "".join(model.vocab[:2]) * 2)


@settings(max_examples=60, **SETTINGS)
@given(edits=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=3))
def test_metadata_edits(proto, edits):
    edited = onnx.ModelProto()
    edited.CopyFrom(proto)
    props = {p.key: p.value for p in edited.metadata_props}
    props.update(edits)
    del edited.metadata_props[:]
    onnx.helper.set_model_props(edited, {k: v for k, v in props.items() if v is not None})
    loaded = result_or_bad_input(Model, edited.SerializeToString(), threads=1)
    if isinstance(loaded, Model):
        use(loaded)


@settings(max_examples=40, **SETTINGS)
@given(data=st.binary(max_size=3000))
def test_random_bytes(data):
    assert isinstance(result_or_bad_input(Model, data), BadInput)


@settings(max_examples=40, **SETTINGS)
@given(flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=20))
def test_damaged_model_files(tiny_onnx, capfd, flips):
    data = bytearray(tiny_onnx.read_bytes())
    for where, byte in flips:
        data[int(where * (len(data) - 1))] = byte
    loaded = result_or_bad_input(Model, bytes(data), threads=1)
    if isinstance(loaded, Model):
        use(loaded)
    out, err = capfd.readouterr()
    assert out == err == "", "nothing from onnxruntime on the user's terminal"


DTYPES = st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.uint64, np.float16, np.float32, np.float64,
                          np.bool_, object])


@settings(max_examples=100, **SETTINGS)
@given(tokens=st.one_of(st.lists(st.integers(-10, 10), max_size=4),
                        st.tuples(st.lists(st.integers(0, 3), min_size=1, max_size=3), st.integers(1, 3), DTYPES)),
       layers=st.integers(1, 3), batch=st.integers(0, 4), hidden=st.sampled_from([8, 16, 17]),
       dtype=DTYPES, same_c=st.booleans())
def test_tokens_and_states(model, tokens, layers, batch, hidden, dtype, same_c):
    if isinstance(tokens, tuple):
        values, rows, kind = tokens
        tokens = np.array([values] * rows, dtype=kind).squeeze()
    h = np.zeros((layers, batch, hidden), dtype)
    state = State(h, h if same_c else np.zeros((layers, batch, 16), np.float32))
    out = result_or_bad_input(model.step, tokens, state)
    if not isinstance(out, BadInput):
        assert out[0].shape == (batch, model.vocab_size)
    result_or_bad_input(model.decode, tokens)
    result_or_bad_input(model.feed, tokens, state)


@settings(max_examples=80, **SETTINGS)
@given(prompt=st.text(max_size=30), unknown=st.sampled_from(["error", "skip"]), n=st.integers(0, 20))
def test_prompts_of_any_unicode(model, prompt, unknown, n):
    text = result_or_bad_input(generate, model, prompt, n, unknown=unknown, seed=1)
    if isinstance(text, str):
        assert len(text) == n and set(text) <= set(model.vocab)
    result_or_bad_input(score, model, prompt, unknown)


@settings(max_examples=12, **SETTINGS)
@given(prompt=st.text(st.characters(blacklist_characters="\x00"), max_size=20),
       flags=st.lists(st.sampled_from([["--greedy"], ["--top-k", "0"], ["--top-p", "2"], ["--unknown", "skip"],
                                       ["-n", "-1"], ["--temperature", "nan"], ["--stop", "a"], ["--seed", "x"]]),
                      max_size=3))
@pytest.mark.slow
def test_the_cli_with_any_prompt_and_flags(tiny_onnx, prompt, flags):
    args = [str(BIN / "charlstm-sample"), str(tiny_onnx), "--prime", prompt, "-n", "5", "--seed", "0"]
    proc = subprocess.run(args + [a for f in flags for a in f], capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0 or len(proc.stderr.strip().splitlines()) == 1, proc.stderr
