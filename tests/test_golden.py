"""The golden files every runtime reads (tests/golden/*.json): torch's outputs, the generator, the sampler, texts.

This module imports numpy and charlstm.runtime only (no torch), so it runs on a base install;
runtime/js/test reads the same files. They come from tests/golden/make_golden.py.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from charlstm.runtime import BadInput, Model, SamplingOptions, generate, generate_batch, score
from charlstm.runtime.rng import Streams, splitmix64
from charlstm.runtime.sampler import Picker
from conftest import ROOT, parity_failure

GOLDEN = Path(__file__).resolve().parent / "golden"
MODELS = {"tiny": GOLDEN / "tiny.onnx", "moliere": ROOT / "models" / "moliere.onnx"}


def read(name: str):
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny():
    return Model(MODELS["tiny"])


@pytest.fixture(scope="module")
def steps():
    record = read("steps.json")
    return {k: np.asarray(v, np.float32 if k != "tokens" else np.int64) if k != "texts" else v
            for k, v in record.items()}


def test_steps_match_torch(tiny, steps):
    state = tiny.new_state(steps["tokens"].shape[1])
    state.h[:], state.c[:] = steps["h0"], steps["c0"]
    for step, tokens in enumerate(steps["tokens"]):
        logits, state = tiny.step(tokens, state)
        for name, ours, torch_out in (("logits", logits, steps["logits"][step]), ("h", state.h, steps["h"][step]),
                                      ("c", state.c, steps["c"][step])):
            failure = parity_failure(name, step, ours, torch_out, lane_axis=0 if name == "logits" else 1)
            assert failure is None, f"onnxruntime vs recorded torch: {failure}"


def test_prefill_graph_matches_torch(tiny, steps):
    assert tiny.has_prefill  # tiny.prefill.onnx lies beside tiny.onnx
    for lane in range(steps["tokens"].shape[1]):
        state = tiny.new_state(1)
        state.h[:], state.c[:] = steps["h0"][:, lane : lane + 1], steps["c0"][:, lane : lane + 1]
        logits, state = tiny.feed(steps["tokens"][:, lane], state, chunk=64)
        failure = parity_failure("logits", 0, logits, steps["logits"][:, lane], lane_axis=0)
        assert failure is None, f"prefill vs recorded torch, lane {lane}: {failure} (the 'lane' is the step)"
        assert parity_failure("c", len(logits), state.c, steps["c"][-1][:, lane : lane + 1], 1) is None


def test_texts_match_torch(tiny, steps):
    texts = steps["texts"]
    assert generate(tiny, texts["prompt"], texts["length"], greedy=True) == texts["greedy"]
    assert generate(tiny, texts["prompt"], texts["length"], seed=texts["seed"], **texts["sampling"]) == texts["sampled"]


def test_the_generator():
    for case in read("rng.json"):
        state, outputs = int(case["seed"]), []
        for _ in case["outputs"]:
            state, z = splitmix64(state)
            outputs.append(str(z))
        assert outputs == case["outputs"]
        stream = Streams([int(case["seed"])])
        assert [stream.uniforms()[0] for _ in case["uniforms"]] == case["uniforms"]


def test_the_sampler():
    for case in read("sampler.json"):
        picker = Picker(SamplingOptions(**case["options"]), [case["seed"]], case["vocab"])
        logits, recent = np.asarray([case["logits"]], np.float32), np.asarray([case["recent"]])
        assert [int(picker.choose(logits, recent)[0]) for _ in case["picks"]] == case["picks"], case["options"]


@pytest.mark.parametrize("case", read("texts.json"), ids=lambda c: f"{c['model']}-{c['prompt'][:8]!r}-{c['seed']}")
def test_the_texts_every_runtime_must_print(case):
    model = Model(MODELS[case["model"]])
    seed = None if case["seed"] is None else int(case["seed"])
    texts = generate_batch(model, case["prompt"], case["length"], case["samples"], seed=seed, stop=case["stop"],
                           **case["options"])
    assert texts == case["texts"]


def test_the_regex_dfas():
    from charlstm.runtime.regex import compile_regex

    golden = read("regex.json")
    for case in golden["cases"]:
        dfa = compile_regex(case["pattern"], golden["vocab"])
        assert len(dfa.next) == case["states"]
        for row in case["strings"]:
            state = 0
            for ch in row["text"]:
                state = int(dfa.next[state, golden["vocab"].index(ch)]) if state >= 0 else -1
            assert (state >= 0 and bool(dfa.accepting[state])) == row["match"]
            assert ([] if state < 0 else dfa.allowed(state, 10**9).tolist()) == row["next"]
    for case in golden["refused"]:
        with pytest.raises(BadInput) as refused:
            compile_regex(case["pattern"], golden["vocab"])
        assert str(refused.value) == case["message"]


def test_the_refusals_of_edited_model_files(tmp_path, monkeypatch):
    """Each edit of tiny.onnx's metadata is refused with the line recorded (and Node's suite reads the same file)."""
    from golden.make_golden import with_metadata

    data = (GOLDEN / "tiny.onnx").read_bytes()
    monkeypatch.chdir(tmp_path)
    for case in read("refusals.json"):
        Path("model.onnx").write_bytes(with_metadata(data, case["metadata"]))
        with pytest.raises(BadInput) as refused:
            Model("model.onnx", prefill=None)
        assert str(refused.value) == case["message"]


def test_the_stop_matcher():
    from charlstm.runtime.generate import _StopMatcher

    for case in read("stops.json"):
        m = _StopMatcher(case["stops"])
        pieces = [m.push(ch) if not m.done else "" for ch in case["text"]]
        assert [*pieces, m.flush()] == case["pieces"] and m.done == case["done"], case


def test_the_scores():
    for case in read("scores.json"):
        s = score(Model(MODELS[case["model"]]), case["text"])
        assert (s.nats_per_char, s.chars) == (case["nats_per_char"], case["chars"])


def test_the_beams_and_logprob_records():
    from golden.make_golden import beam_cases, logprob_cases

    models = {name: Model(path) for name, path in MODELS.items()}
    assert beam_cases(models) == read("beams.json")
    assert _same(logprob_cases(models), read("logprobs.json"))


def _same(ours, golden) -> bool:
    """Equal, floats to 1e-12: the log-softmax sums in float64 in an order numpy picks per CPU
    (an AVX2 machine's records differed from the AVX-512 one's by 1.4e-17; the same characters)."""
    if isinstance(golden, float):
        return isinstance(ours, float) and math.isclose(ours, golden, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(golden, dict):
        return isinstance(ours, dict) and ours.keys() == golden.keys() and all(_same(ours[k], golden[k]) for k in golden)
    if isinstance(golden, list):
        return isinstance(ours, list) and len(ours) == len(golden) and all(map(_same, ours, golden))
    return ours == golden


@pytest.mark.slow
def test_the_cli_transcripts_are_current():
    """The Python CLI still prints what transcripts.json says (the Node suite demands the same bytes)."""
    from golden.make_golden import transcript_cases

    assert transcript_cases() == read("transcripts.json")
