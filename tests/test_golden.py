"""Torch-free parity: the committed tiny model against torch's recorded outputs (no torch here).

This module imports numpy and charlstm.runtime only, so it runs on a base install. The files
come from tests/golden/make_golden.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from charlstm.runtime import Model, generate
from conftest import parity_failure

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def golden():
    return Model(GOLDEN / "tiny.onnx"), np.load(GOLDEN / "tiny_steps.npz"), json.loads((GOLDEN / "tiny_texts.json").read_text())


def test_steps_match_torch(golden):
    model, rec, _ = golden
    state = model.new_state(rec["tokens"].shape[1])
    state.h[:], state.c[:] = rec["h0"], rec["c0"]
    for step, tokens in enumerate(rec["tokens"]):
        logits, state = model.step(tokens, state)
        for name, ours, torch_out in (("logits", logits, rec["logits"][step]), ("h", state.h, rec["h"][step]),
                                      ("c", state.c, rec["c"][step])):
            failure = parity_failure(name, step, ours, torch_out, lane_axis=0 if name == "logits" else 1)
            assert failure is None, f"onnxruntime vs recorded torch: {failure}"


def test_texts_match_torch(golden):
    model, _, texts = golden
    assert generate(model, texts["prompt"], texts["length"], greedy=True) == texts["greedy"]
    assert generate(model, texts["prompt"], texts["length"], seed=texts["seed"], **texts["sampling"]) == texts["sampled"]


def test_prefill_graph_matches_torch(golden):
    model, rec, _ = golden
    assert model.has_prefill  # tiny.prefill.onnx lies beside tiny.onnx
    for lane in range(rec["tokens"].shape[1]):
        state = model.new_state(1)
        state.h[:], state.c[:] = rec["h0"][:, lane : lane + 1], rec["c0"][:, lane : lane + 1]
        logits, state = model.feed(rec["tokens"][:, lane], state, chunk=64)
        failure = parity_failure("logits", 0, logits, rec["logits"][:, lane], lane_axis=0)
        assert failure is None, f"prefill vs recorded torch, lane {lane}: {failure} (the 'lane' is the step)"
        assert parity_failure("c", len(logits), state.c, rec["c"][-1][:, lane : lane + 1], 1) is None
