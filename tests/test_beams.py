"""Beam search: deterministic, best first, the greedy text at one beam, stop strings, the same beams in Node."""

import re

import pytest

from charlstm.runtime import BadInput, Model, beam_search, generate, score
from conftest import ROOT, assert_bad_input, run_cli

SHIPPED = ROOT / "models" / "moliere.onnx"


def test_one_beam_is_the_greedy_text(tiny_onnx):
    for model in (Model(tiny_onnx), Model(SHIPPED)):
        for prompt in ("abc" if model.vocab_size == 6 else "ALCESTE.", ""):
            (beam,) = beam_search(model, prompt, 120, beams=1)
            assert beam.text == generate(model, prompt, 120, greedy=True)


def test_beams_are_ranked_and_their_log_probabilities_are_the_model_s():
    model = Model(SHIPPED)
    found = beam_search(model, "TARTUFFE.", 60, beams=4, repetition_penalty=1.2)
    assert len(found) == 4 and len({b.text for b in found}) == 4
    assert [b.score for b in found] == sorted((b.score for b in found), reverse=True)
    assert found == beam_search(model, "TARTUFFE.", 60, beams=4, repetition_penalty=1.2), "deterministic"
    plain = beam_search(model, "TARTUFFE.", 60, beams=3)
    for b in plain:  # no penalty: L is the model's log-probability of the text after the prompt
        total = lambda text: score(model, text).nats_per_char * score(model, text).chars  # noqa: E731
        assert b.logprob == pytest.approx(-(total("TARTUFFE." + b.text) - total("TARTUFFE.")), abs=1e-6)
    assert beam_search(model, "TARTUFFE.", 60, beams=4)[0].logprob >= plain[0].logprob - 1e-12


def test_stops_end_beams_and_the_length_penalty_ranks_by_mean():
    model = Model(SHIPPED)
    found = beam_search(model, "ORGON.\n", 80, beams=3, stop=["."], length_penalty=1.0)
    assert all("." not in b.text for b in found)
    for b in found:  # len counts the ids drawn: a stopped beam's "." too
        drawn = len(b.text) + 1 if len(b.text) < 80 else 80
        assert b.score == pytest.approx(b.logprob / drawn)
    with pytest.raises(BadInput, match="beams must be an integer from 1 to 64"):
        beam_search(model, "a", 5, beams=0)
    with pytest.raises(BadInput, match="length penalty"):
        beam_search(model, "a", 5, length_penalty=-1)
    with pytest.raises(BadInput, match="ban: 'ж' is not in"):
        beam_search(model, "a", 5, ban="ж")


@pytest.mark.slow
def test_cli_beams_and_what_they_refuse():
    proc = run_cli("charlstm-sample", "--prime", "ALCESTE.", "-n", 40, "--beams", 2)
    assert proc.returncode == 0 and proc.stdout.count("--- beam ") == 2 and proc.stdout.startswith("--- beam 1 (")
    assert_bad_input(run_cli("charlstm-sample", "--beams", 2, "--temperature", 0.5, "--seed", 1),
                     "draws nothing: drop --temperature, --seed")
    assert_bad_input(run_cli("charlstm-sample", "--length-penalty", 1), "--length-penalty goes with --beams")


def test_beams_under_a_regex_all_match():
    model = Model(SHIPPED)
    for pattern in (r"(Oui|Non), [a-z]+( [a-z]+)*\.", r"[A-Z]+\.", r"\d{2}", r"[a-z ]{5,30}!"):
        found = beam_search(model, "ORGON.\n", 80, beams=4, regex=pattern, repetition_penalty=1.1)
        assert len(found) == 4 and all(re.fullmatch(pattern, b.text) for b in found), [b.text for b in found]
        assert [b.score for b in found] == sorted((b.score for b in found), reverse=True)
    with pytest.raises(BadInput, match="the shortest text matching"):
        beam_search(model, "", 3, regex=r"\d{5}")
