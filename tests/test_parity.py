"""Parity: torch, the exported graph in onnxruntime and a numpy reference agree, step by step."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlstm.export import export
from charlstm.runtime import Model, SamplingOptions, generate, score
from charlstm.runtime.sampler import Picker
from charlstm.train import Checkpoint, CharLSTM, ModelConfig, build_model, load_checkpoint, save_checkpoint
from charlstm.export.agreement import random_state
from conftest import parity_failure, train_tiny
from reference import ReferenceLSTM

STEPS = 1000

CONFIGS = [  # (layers, hidden, embed): sizes chosen so that embed != hidden in most
    (1, 32, 16), (2, 48, 48), (3, 24, 40), (2, 96, 24),
]


def torch_step(model: CharLSTM, tokens, h, c):
    with torch.no_grad():
        logits, (h, c) = model(torch.as_tensor(tokens)[None], (torch.as_tensor(h), torch.as_tensor(c)))
    return logits[0].numpy(), h.numpy(), c.numpy()


def assert_close(what: str, step: int, name: str, a: np.ndarray, b: np.ndarray) -> float:
    """Fail naming the pair, the output, the step, the batch lane and the difference; else
    return the largest absolute difference (for the report)."""
    failure = parity_failure(name, step, a, b, lane_axis=0 if name == "logits" else 1)
    assert failure is None, f"{what}: {failure}"
    return float(np.abs(np.asarray(a, np.float64) - b).max())


def three_way(model: CharLSTM, runtime: Model, batch: int, start: str, steps: int = STEPS, seed: int = 0) -> dict:
    """Step all three implementations autoregressively on the same tokens; the worst diffs."""
    cfg = model.config
    rng = np.random.default_rng(seed)
    shape = (cfg.num_layers, batch, cfg.hidden_size)
    zeros = (np.zeros(shape, np.float32), np.zeros(shape, np.float32))
    h, c = zeros if start == "zero" else random_state(*shape, rng)
    reference = ReferenceLSTM(model.state_dict(), cfg.num_layers)
    states = {"torch": (h, c), "onnx": runtime.new_state(batch), "ref": (h.astype(np.float64), c.astype(np.float64))}
    states["onnx"].h[:], states["onnx"].c[:] = h, c
    tokens = rng.integers(0, cfg.vocab_size, batch)
    worst = {}
    for step in range(steps):
        out = {"torch": torch_step(model, tokens, *states["torch"]), "ref": reference.step(tokens, *states["ref"])}
        logits, states["onnx"] = runtime.step(tokens, states["onnx"])
        out["onnx"] = (logits, states["onnx"].h, states["onnx"].c)
        states["torch"], states["ref"] = out["torch"][1:], out["ref"][1:]
        for a, b in (("torch", "onnx"), ("torch", "ref"), ("onnx", "ref")):
            for name, x, y in zip(("logits", "h", "c"), out[a], out[b]):
                key = f"{a} vs {b} {name}"
                worst[key] = max(worst.get(key, 0.0), assert_close(f"{a} vs {b}", step, name, x, y))
        probs = np.exp(out["torch"][0] - out["torch"][0].max(1, keepdims=True))
        tokens = np.array([rng.choice(cfg.vocab_size, p=p / p.sum()) for p in probs])
    return worst


def random_model(layers, hidden, embed, vocab=40, seed=0) -> CharLSTM:
    torch.manual_seed(seed)
    return CharLSTM(ModelConfig(vocab, embed, hidden, layers, 0.0)).eval()


def save_and_export(model: CharLSTM, vocab: list[str], folder) -> Model:
    save_checkpoint(folder / "m.pt", Checkpoint.of(model, vocab))
    return Model(export(folder / "m.pt", folder / "m.onnx", validate=False).path)


@pytest.fixture(scope="module")
def trained(moliere_slice, tmp_path_factory):
    """2 x 64, 300 steps on the real text: weights far from their initial values."""
    folder = tmp_path_factory.mktemp("trained")
    result = train_tiny(moliere_slice, folder / "m.pt", {"num_layers": 2, "hidden_size": 64, "embed_dim": 24},
                        {"max_steps": 300, "batch_size": 32, "seq_len": 64, "lr": 5e-3, "eval_every": 100})
    ckpt = load_checkpoint(result.best)
    return build_model(ckpt), Model(export(result.best, folder / "m.onnx").path), ckpt.vocab


@pytest.mark.parametrize("layers, hidden, embed", CONFIGS)
@pytest.mark.parametrize("batch, start", [(1, "zero"), (3, "random")])
def test_random_weights_three_way(layers, hidden, embed, batch, start, tmp_path):
    model = random_model(layers, hidden, embed)
    runtime = save_and_export(model, [chr(ord("!") + i) for i in range(40)], tmp_path)
    three_way(model, runtime, batch, start)


@pytest.mark.parametrize("batch, start", [(1, "zero"), (1, "random"), (4, "zero"), (4, "random")])
@pytest.mark.slow
def test_trained_weights_three_way(trained, batch, start):
    model, runtime, _ = trained
    worst = three_way(model, runtime, batch, start)
    print({k: f"{v:.1e}" for k, v in worst.items()})  # shown with -s: the measured margins


@pytest.mark.slow
def test_torch_steps_equal_its_sequence_forward(trained):
    """No drift between carrying the state by hand and nn.LSTM's own loop over 1,000 steps."""
    model, _, _ = trained
    tokens = torch.randint(model.config.vocab_size, (STEPS, 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole, (h_seq, c_seq) = model(tokens)
        state = model.zero_state(2)
        for step in range(STEPS):
            logits, state = model(tokens[step : step + 1], state)
            assert_close("torch step vs sequence", step, "logits", logits[0].numpy(), whole[step].numpy())
    assert_close("torch step vs sequence", STEPS - 1, "c", state[1].numpy(), c_seq.numpy())


@pytest.mark.slow
def test_greedy_text_is_identical(trained):
    model, runtime, vocab = trained
    prompt = "ALCESTE.\nMoi, je veux"
    ids = runtime.encode(prompt)
    with torch.no_grad():
        logits, state = model(torch.as_tensor(ids)[:, None])
        logits, out = logits[-1], []
        for _ in range(400):
            token = int(logits[0].argmax())
            out.append(vocab[token])
            logits, state = model(torch.tensor([[token]]), state)
            logits = logits[0]
    assert generate(runtime, prompt, 400, greedy=True) == "".join(out)


@pytest.mark.slow
def test_seeded_sampling_is_identical_through_the_runtime_sampler(trained):
    model, runtime, vocab = trained
    options = SamplingOptions(temperature=0.9, top_p=0.95)
    prompt = "Monsieur"
    with torch.no_grad():
        logits, state = model(torch.as_tensor(runtime.encode(prompt))[:, None])
        logits, picker, out = logits[-1].numpy(), Picker(options, [21]), []
        recent = np.full((1, options.repetition_window), -1)
        for _ in range(400):
            token = picker.choose(logits, recent)
            out.append(vocab[int(token[0])])
            logits, state = model(torch.as_tensor(token)[None], state)
            logits = logits[0].numpy()
    assert generate(runtime, prompt, 400, seed=21, temperature=0.9, top_p=0.95) == "".join(out)


@pytest.mark.slow
def test_score_matches_torch(trained, moliere_slice):
    model, runtime, _ = trained
    text = moliere_slice.read_text()[-3000:]
    ids = torch.as_tensor(runtime.encode(text))
    with torch.no_grad():
        logits, _ = model(ids[:-1, None])
        nats = torch.nn.functional.cross_entropy(logits[:, 0].double(), ids[1:]).item()
    assert score(runtime, text).nats_per_char == pytest.approx(nats, abs=1e-5)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(layers=st.integers(1, 3), hidden=st.integers(1, 40), embed=st.integers(1, 40), vocab=st.integers(2, 50),
       batch=st.integers(1, 5), start=st.sampled_from(["zero", "random"]), seed=st.integers(0, 2**16))
@pytest.mark.slow
def test_property_random_configurations(tmp_path_factory, layers, hidden, embed, vocab, batch, start, seed):
    model = CharLSTM(ModelConfig(vocab, embed, hidden, layers, 0.0))
    torch.manual_seed(seed)
    for p in model.parameters():  # wider than the default init, so that gates saturate at times
        torch.nn.init.uniform_(p, -0.6, 0.6)
    runtime = save_and_export(model.eval(), [chr(0x41 + i) for i in range(vocab)], tmp_path_factory.mktemp("h"))
    three_way(model, runtime, batch, start, steps=60, seed=seed)


def test_a_failure_names_the_pair_output_step_lane_and_difference(tmp_path):
    model = random_model(2, 16, 8)
    runtime = save_and_export(model, [chr(ord("!") + i) for i in range(40)], tmp_path)
    with torch.no_grad():
        model.head.bias[3] += 0.01  # torch (and the reference, which reads torch's weights) move
    with pytest.raises(AssertionError, match=r"torch vs onnx: logits differs at step 0, lane [0-2]: \|diff\| 1\.000e-02"):
        three_way(model, runtime, 3, "zero", steps=5)
