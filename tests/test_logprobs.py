"""Per-character log-probabilities: of the distribution each character was drawn from, as the spec's step 13 says."""

import math

import numpy as np
import pytest

from charlstm.runtime import BadInput, Model, generate, score, stream_logprobs
from charlstm.runtime.sampler import SamplingOptions, log_probabilities
from conftest import ROOT

SHIPPED = ROOT / "models" / "moliere.onnx"


def total(model, text: str) -> float:
    s = score(model, text)
    return s.nats_per_char * s.chars


@pytest.mark.parametrize("prompt", ["ALCESTE.", "Monsieur, je", "\n"])
def test_a_greedy_text_at_temperature_1_sums_to_minus_its_score(prompt):
    model = Model(SHIPPED)
    records = list(stream_logprobs(model, prompt, 120, top=3, greedy=True, temperature=1.0))
    text = "".join(r.char for r in records)
    assert text == generate(model, prompt, 120, greedy=True)
    expected = -(total(model, prompt + text) - (total(model, prompt) if len(prompt) > 1 else 0.0))
    assert sum(r.logprob for r in records) == pytest.approx(expected, abs=1e-6)
    assert all(r.top[0][0] == r.char for r in records), "greedy draws the likeliest"


def test_records_follow_the_text_and_the_distribution_drawn_from(tiny_onnx):
    model = Model(tiny_onnx)
    for options in ({"temperature": 0.7}, {"temperature": 1.3, "top_k": 3}, {"top_p": 0.8, "min_p": 0.1},
                    {"ban": "a", "logit_bias": {"c": 1.5}, "repetition_penalty": 1.4}):
        records = list(stream_logprobs(model, "abc", 120, top=6, seed=4, stop="fa", **options))
        assert "".join(r.char for r in records) == generate(model, "abc", 120, seed=4, stop="fa", **options)
        for r in records:
            shown = [lp for _, _, lp in r.top]  # the vocabulary has 6 characters: all that can be drawn
            assert shown == sorted(shown, reverse=True) and math.isclose(sum(map(math.exp, shown)), 1.0)
            assert r.logprob in shown and r.logprob <= 0
            assert r.to_dict()["top"][0].keys() == {"char", "id", "logprob"}
        if "ban" in options:
            assert all(c != "a" for r in records for c, _, _ in r.top)
        if "top_k" in options:
            assert all(len(r.top) <= 3 for r in records)


def test_the_step_13_arithmetic():
    z = np.array([[3.0, 1.0, 2.0, -1.0]])
    for options, kept in ((SamplingOptions(temperature=1.0), [0, 1, 2, 3]), (SamplingOptions(top_k=2), [0, 2]),
                          (SamplingOptions(temperature=0.0, top_k=2), [0, 2])):
        t = options.temperature or 1.0
        w = np.exp((z[0, kept] - 3.0) / t)
        expected = np.full(4, -np.inf)
        expected[kept] = (z[0, kept] - 3.0) / t - np.log(w.sum())
        np.testing.assert_allclose(log_probabilities(z, options)[0], expected, rtol=0, atol=1e-15)


def test_logprobs_take_a_count(tiny_onnx):
    with pytest.raises(BadInput, match="logprobs must be an integer from 0 to 256"):
        stream_logprobs(Model(tiny_onnx), "a", 5, top=-1)
