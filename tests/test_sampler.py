"""The sampler on known distributions: greedy, top-k, top-p, temperature, penalty, seeds."""

import numpy as np
import pytest

from charlstm.runtime import BadInput, SamplingOptions
from charlstm.runtime.rng import Streams, splitmix64
from charlstm.runtime.sampler import Picker, candidates, kept_count, penalize


def draws(logits, n=20_000, seed=0, **options) -> np.ndarray:
    """Frequencies of each id over n draws from one row of logits."""
    picker = Picker(SamplingOptions(**options), [seed])
    picks = [int(picker.choose(np.asarray([logits], np.float32))[0]) for _ in range(n)]
    return np.bincount(picks, minlength=len(logits)) / n


def test_temperature_one_samples_the_softmax():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    expected = np.exp(logits) / np.exp(logits).sum()
    freq = draws(logits, temperature=1.0)
    # 20,000 draws: the standard error of each frequency is below 0.0035; allow 4 of them
    np.testing.assert_allclose(freq, expected, atol=0.014)


def test_top_k_1_is_greedy_and_top_k_keeps_k():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((50, 30)).astype(np.float32)
    top1 = Picker(SamplingOptions(top_k=1, temperature=1.5), list(range(50))).choose(logits)
    assert (top1 == logits.argmax(1)).all()
    assert (top1 == Picker(SamplingOptions(greedy=True), list(range(50))).choose(logits)).all()
    freq = draws(np.array([3.0, 2.0, 1.0, 0.0, -1.0]), n=5000, temperature=1.0, top_k=2)
    assert freq[2:].sum() == 0 and freq[0] > freq[1] > 0


@pytest.mark.parametrize("p, kept", [(0.5, 1), (0.79, 2), (0.8, 2), (0.81, 3), (0.95, 3), (0.951, 4), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    options = SamplingOptions(temperature=1.0, top_p=p)
    order, weights = candidates(np.log(probs)[None], options)
    assert (order[0] == [0, 1, 2, 3]).all()
    np.testing.assert_allclose(weights[0] / weights[0].sum(), probs)
    assert kept_count(weights, np.add.accumulate(weights, axis=1), options)[0] == kept
    freq = draws(np.log(probs), n=4000, temperature=1.0, top_p=p)
    assert (freq[:kept] > 0).all() and freq[kept:].sum() == 0


def test_temperature_towards_zero_approaches_greedy():
    logits = np.array([1.0, 1.3, 0.9, -2.0])
    spread = [1 - draws(logits, n=4000, temperature=t)[1] for t in (1.0, 0.3, 0.05)]
    assert spread[0] > spread[1] > spread[2] and spread[2] < 0.01
    assert draws(logits, n=200, temperature=0.0)[1] == 1.0


def test_ties_break_towards_the_lower_id():
    assert Picker(SamplingOptions(greedy=True), [0]).choose(np.zeros((1, 5), np.float32))[0] == 0
    assert Picker(SamplingOptions(top_k=1), [0]).choose(np.zeros((1, 5), np.float32))[0] == 0
    order, _ = candidates(np.array([[1.0, 2.0, 1.0, 2.0]]), SamplingOptions(top_k=4))
    assert order[0].tolist() == [1, 3, 0, 2]


def test_the_seed_reproduces_and_lanes_are_independent():
    logits = np.random.default_rng(3).standard_normal((4, 40)).astype(np.float32)

    def run(seeds):
        picker = Picker(SamplingOptions(temperature=1.0), seeds)
        return np.stack([picker.choose(logits) for _ in range(200)])

    a, b = run([5, 6, 7, 8]), run([5, 6, 7, 8])
    assert (a == b).all()
    c = run([5, 60, 7, 80])
    assert (a[:, 0] == c[:, 0]).all() and (a[:, 2] == c[:, 2]).all() and not (a[:, 1] == c[:, 1]).all()


def test_repetition_penalty_discourages_recent_ids_only():
    logits = np.array([[2.0, -1.0, 2.0, 0.5]])
    out = penalize(logits, np.array([[-1, 0, 1]]), 2.0)
    np.testing.assert_allclose(out, [[1.0, -2.0, 2.0, 0.5]])
    recent = np.array([[0, 0, 0]])
    plain = draws(np.array([1.0, 1.0]), n=4000, temperature=1.0)
    assert abs(plain[0] - 0.5) < 0.03
    picker = Picker(SamplingOptions(temperature=1.0, repetition_penalty=3.0), [0])
    picks = [picker.choose(np.array([[1.0, 1.0]], np.float32), recent)[0] for _ in range(4000)]
    expected = np.exp(1 / 3) / (np.exp(1 / 3) + np.exp(1))  # the penalized logit 1 becomes 1/3
    assert abs(np.mean(np.array(picks) == 0) - expected) < 0.03


@pytest.mark.parametrize("options", [
    {"temperature": -0.1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}, {"repetition_penalty": 0},
    {"temperature": float("nan")},
])
def test_bad_options(options):
    with pytest.raises(BadInput):
        SamplingOptions(**options)


def test_splitmix64_is_the_reference_generator():
    """The first outputs of the reference SplitMix64 (Steele, Lea, Flood 2014; Vigna's C code)
    seeded 1234567, and the uniform doubles taken from their top 53 bits."""
    state, outputs = 1234567, []
    for _ in range(3):
        state, z = splitmix64(state)
        outputs.append(z)
    assert outputs == [6457827717110365317, 3203168211198807973, 9817491932198370423]
    assert Streams([1234567]).uniforms()[0] == (outputs[0] >> 11) / 2**53


@pytest.mark.parametrize("seeds", [[0], [2**64 - 1, 0, 5, 1234567], list(range(64))])
def test_one_stream_and_many_streams_draw_the_same_numbers(seeds):
    together = Streams(seeds)
    alone = [Streams([s]) for s in seeds]
    for _ in range(50):
        assert together.uniforms().tolist() == [a.uniforms()[0] for a in alone]


def test_a_target_on_the_total_takes_the_last_candidate_that_can_be_drawn():
    """u * total can round up to the total; the draw then takes the last candidate with weight."""
    picker = Picker(SamplingOptions(temperature=1.0), [0])
    picker.streams.uniforms = lambda: np.array([1.0])  # the largest double below 1 times a total can round to it
    logits = np.array([[0.0, 1.0, -2000.0]], np.float32)  # the last weight underflows to 0
    assert picker.choose(logits)[0] == 1


VOCAB = list("abcdefgh")


def picks_of(options: dict, logits: np.ndarray, n: int = 400) -> np.ndarray:
    picker = Picker(SamplingOptions(**options), list(range(n)), VOCAB)
    return picker.choose(np.repeat(logits[None], n, 0))


def test_bans_are_never_drawn_and_biases_move_the_odds():
    logits = np.array([3, 2.5, 2, 1, 0, 0, -1, 4], np.float32)
    picks = picks_of({"temperature": 1.5, "ban": "ha"}, logits)
    assert not set(picks.tolist()) & {0, 7} and len(set(picks.tolist())) > 3
    assert picks_of({"greedy": True, "ban": "h"}, logits)[0] == 0, "greedy takes the likeliest allowed"
    assert set(picks_of({"temperature": 1.0, "logit_bias": {"e": 100.0}}, logits).tolist()) == {4}
    rare = picks_of({"temperature": 1.0, "logit_bias": {"h": -100.0}}, logits)
    assert 7 not in rare.tolist()
    both = picks_of({"temperature": 1.0, "logit_bias": {"e": 100.0}, "ban": "e"}, logits)
    assert 4 not in both.tolist(), "a character both biased and banned is banned"


def test_min_p_keeps_the_characters_at_least_p_times_as_likely_as_the_likeliest():
    logits = np.array([3, 2.5, 2, 1, 0, 0, -1, 4], np.float32)
    for temperature, min_p in ((1.0, 0.3), (2.0, 0.3), (0.7, 0.05)):
        p = np.exp((logits.astype(np.float64) - logits.max()) / temperature)  # relative to the likeliest
        allowed = set(np.flatnonzero(p >= min_p).tolist())
        picks = set(picks_of({"temperature": temperature, "min_p": min_p}, logits, 2000).tolist())
        assert picks == allowed, (temperature, min_p)
    assert set(picks_of({"min_p": 1.0}, logits).tolist()) == {7}


def test_bias_and_ban_are_checked_against_the_vocabulary():
    with pytest.raises(BadInput, match="ban: 'z' is not in the model's vocabulary"):
        Picker(SamplingOptions(ban="az"), [0], VOCAB)
    with pytest.raises(BadInput, match="logit_bias: 'z' is not in"):
        Picker(SamplingOptions(logit_bias={"z": 1.0}), [0], VOCAB)
    with pytest.raises(BadInput, match="bans every character"):
        Picker(SamplingOptions(ban="abcdefgh"), [0], VOCAB)
    for bad, words in (({"min_p": 0}, "min-p must be in"), ({"min_p": 1.5}, "min-p"),
                       ({"logit_bias": {"a": 100.5}}, "from -100 to 100"), ({"logit_bias": {"ab": 1}}, "single"),
                       ({"logit_bias": {"a": "1"}}, "from -100"), ({"ban": 3}, "ban must name"),
                       ({"logit_bias": {"a": float("nan")}}, "from -100")):
        with pytest.raises(BadInput, match=words):
            SamplingOptions(**bad)
    assert SamplingOptions(logit_bias={"b": 1, "a": 2}, ban="cac") == SamplingOptions(
        logit_bias=(("a", 2), ("b", 1)), ban=("a", "c"))
