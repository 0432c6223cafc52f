"""The shipped default model: found by the runtime, its metadata, its card's figures, its samples."""

import re

import pytest

from charlstm.core.corpus import held_out, read_corpus
from charlstm.models import default_model
from charlstm.runtime import Model, generate, score
from conftest import MOLIERE, ROOT, run_cli

CARD = ROOT / "models" / "README.md"
SLICE = 5000  # characters at the start of the validation split, as in the card


@pytest.fixture(scope="module")
def model() -> Model:
    path = default_model()
    assert path is not None and path == ROOT / "models" / "moliere.onnx"
    return Model(path)


@pytest.fixture(scope="module")
def validation_text() -> str:
    if not MOLIERE.is_file():
        pytest.skip(f"the real corpus is not at {MOLIERE} (set CHARLSTM_CORPUS)")
    return held_out(read_corpus(MOLIERE))[1]


def card_figure(label: str) -> float:
    match = re.search(rf"\| {re.escape(label)} \| ([0-9.]+) \|", CARD.read_text(encoding="utf-8"))
    assert match, f"the model card has no row '{label}'"
    return float(match.group(1))


def card_samples() -> list[tuple[float, int, str]]:
    found = re.findall(r"### temperature ([0-9.]+), seed (\d+)\n\n```text\n(.*?)\n```", CARD.read_text(encoding="utf-8"), re.S)
    assert len(found) == 3, "the card shows three samples"
    return [(float(t), int(s), text) for t, s, text in found]


def test_metadata(model):
    assert model.metadata["charlstm.format"] == "charlstm-onnx/1"
    assert (model.num_layers, model.hidden_size, model.vocab_size) == (3, 512, 114)
    assert "\n" in model.vocab and "é" in model.vocab and "\r" not in model.vocab


@pytest.mark.slow
def test_validation_slice_scores_as_the_card_says(model, validation_text):
    expected = card_figure(f"validation nats/char, first {SLICE:,} characters of the split")
    assert score(model, validation_text[:SLICE]).nats_per_char == pytest.approx(expected, abs=2e-4)


@pytest.mark.slow
def test_the_whole_held_out_tail_scores_as_the_card_says(model, validation_text):
    """The card's headline figure, measured again: the model on every held-out character."""
    label = f"validation nats/char, whole split ({len(validation_text):,} characters, zero state)"
    measured = score(model, validation_text).nats_per_char
    assert measured == pytest.approx(card_figure(label), abs=2e-4)
    assert measured <= 0.95, "the default model's target (plain dropout gave 0.9940, 32 regularised epochs 0.9633)"


def test_the_card_samples_reproduce(model):
    for temperature, seed, text in card_samples():
        assert generate(model, "\n", len(text), temperature=temperature, seed=seed) == text


def test_an_empty_prompt_starts_with_a_line_break(model):
    assert model.start_token == model.vocab.index("\n")
    assert generate(model, "", 200, seed=5) == generate(model, "\n", 200, seed=5)


def test_cli_uses_it_without_a_model_argument():
    proc = run_cli("charlstm-sample", "--prime", "ALCESTE.", "-n", 80, "--seed", 4)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ALCESTE." + generate(Model(default_model()), "ALCESTE.", 80, seed=4) + "\n"
