"""Training-only regularisation and weight averaging: what they drop, that eval and export see plain weights, exact resume, old checkpoints, threads."""

import os
import signal
import warnings

import pytest
import torch

from charlstm.core.errors import BadInput, Note
from charlstm.export import export
from charlstm.train import Interrupted, Trainer, load_checkpoint
from charlstm.train.config import BEFORE_REGULARIZATION, DROPOUTS, ModelConfig, TrainOptions
from charlstm.train.loop import supports
from charlstm.train.model import CharLSTM, Regularization, _locked, initialise
from conftest import TINY, TINY_RUN, assert_bad_input, run_cli, train_tiny

AWD = {"embed_dropout": 0.1, "input_dropout": 0.2, "hidden_dropout": 0.25, "output_dropout": 0.3,
       "weight_drop": 0.4, "ema": 0.9}
CONFIG = ModelConfig(7, 5, 6, 3, 0.0)


def test_the_layer_by_layer_path_is_the_fused_lstm_when_nothing_is_dropped():
    torch.manual_seed(0)
    model = CharLSTM(CONFIG, Regularization(weight=1e-9)).train()  # active, but drops nothing in practice
    tokens = torch.randint(7, (11, 4))
    state = tuple(torch.randn(3, 4, 6) for _ in range(2))
    ours, (h, c) = model._regularized(tokens, state)
    plain, (h2, c2) = model.head(model.lstm(model.embedding(tokens), state)[0]), model.lstm(
        model.embedding(tokens), state)[1]
    for a, b in ((ours, plain), (h, h2), (c, c2)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_locked_dropout_keeps_one_mask_per_lane_for_the_whole_chunk():
    torch.manual_seed(0)
    x = _locked(torch.ones(50, 8, 16), 0.5)  # (T, B, F)
    assert torch.equal(x, x[:1].expand_as(x)), "the same mask at every step"
    assert not torch.equal(x[:, 0], x[:, 1]), "another mask in another lane"
    assert set(x.unique().tolist()) == {0.0, 2.0}


def test_training_drops_and_evaluation_does_not():
    torch.manual_seed(0)
    model = CharLSTM(CONFIG, Regularization(**{"embed": 0.1, "input": 0.2, "hidden": 0.25, "output": 0.3,
                                               "weight": 0.4}))
    plain = CharLSTM(CONFIG)
    plain.load_state_dict(model.state_dict())
    assert list(model.state_dict()) == list(plain.state_dict()), "the same names: a plain nn.LSTM's"
    tokens = torch.randint(7, (9, 3))
    model.train()
    a, b = model(tokens)[0], model(tokens)[0]
    assert not torch.equal(a, b), "training draws new masks"
    model.eval(), plain.eval()
    assert torch.equal(model(tokens)[0], plain(tokens)[0])
    model.train()
    model(tokens)[0].sum().backward()
    assert model.lstm.weight_hh_l0.grad is not None and model.lstm.weight_hh_l0.grad.abs().sum() > 0


def test_unit_gain_gives_gate_pre_activations_the_variance_of_the_input():
    torch.manual_seed(0)
    model = CharLSTM(CONFIG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initialise(model, "unit-gain")
    for k in range(CONFIG.num_layers):
        w = getattr(model.lstm, f"weight_ih_l{k}").detach()  # (4H, in)
        assert w.abs().max() <= (3 / w.shape[1]) ** 0.5
        # |row|^2 averages 1 (nn.LSTM's own: in / 3H, 0.28 here), its mean over 4H rows has std < 0.1
        assert abs(float((w @ torch.randn(w.shape[1], 100_000)).var()) - 1) < 0.3
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"lstm.weight_ih_l{k}" for k in range(CONFIG.num_layers)}
    torch.manual_seed(0)
    plain = CharLSTM(CONFIG)
    initialise(plain, "torch")
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items()), "torch: nn.LSTM's own draw"


def test_a_unit_gain_run_records_its_init_and_exports(tiny_corpus, tmp_path):
    result = train_tiny(tiny_corpus, tmp_path / "m.pt", train_args={"init": "unit-gain"})
    assert load_checkpoint(result.best).train.options["init"] == "unit-gain"
    assert export(result.best, tmp_path / "m.onnx", steps=20).report.ok
    with pytest.raises(BadInput, match="--init must be one of torch, unit-gain"):
        TrainOptions(init="xavier")


def test_options_are_checked():
    for name in AWD:
        for bad in (-0.1, 1.0, float("nan"), True, "0.2"):
            with pytest.raises(BadInput, match=f"--{name.replace('_', '-')} must be in"):
                TrainOptions(**{name: bad})


def test_a_run_shorter_than_regularization_epochs_scales_the_dropouts(tiny_corpus):
    epoch = Trainer(tiny_corpus, TINY, TINY_RUN).lanes.chunks_per_epoch  # steps
    for steps, full_at, scale in ((epoch, 4, 0.25), (3 * epoch, 4, 0.75), (4 * epoch, 4, 1.0), (8 * epoch, 4, 1.0),
                                  (epoch, 0, 1.0)):
        trainer = Trainer(tiny_corpus, TINY, {**TINY_RUN, **AWD, "max_steps": steps, "epochs": 100,
                                              "regularization_epochs": full_at})
        assert trainer.regularization_scale == scale
        assert trainer.model.regularization == Regularization(*(AWD[name] * scale for name in DROPOUTS))
    for bad in (-1, float("nan"), float("inf"), True, "4"):
        with pytest.raises(BadInput, match="--regularization-epochs must be from 0"):
            TrainOptions(regularization_epochs=bad)


@pytest.mark.slow
def test_scaled_dropouts_train_as_the_same_dropouts_given_scaled(tiny_corpus, tmp_path):
    """Half the planned epochs: the run is bit for bit the one given half of each strength
    (halving is exact in binary), and ema is not scaled."""
    epoch = Trainer(tiny_corpus, TINY, TINY_RUN).lanes.chunks_per_epoch
    run = {"max_steps": epoch, "epochs": 100, "eval_every": epoch}
    scaled = train_tiny(tiny_corpus, tmp_path / "a.pt", train_args={**run, **AWD, "regularization_epochs": 2})
    halved = train_tiny(tiny_corpus, tmp_path / "b.pt",
                        train_args={**run, **AWD, **{name: AWD[name] / 2 for name in DROPOUTS}})
    a, b = load_checkpoint(scaled.latest), load_checkpoint(halved.latest)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not torch.equal(a.state_dict["lstm.weight_hh_l0"], load_checkpoint(
        train_tiny(tiny_corpus, tmp_path / "c.pt", train_args={**run, **AWD}).latest).state_dict["lstm.weight_hh_l0"])


def test_a_scaled_run_averages_over_fewer_steps(tiny_corpus, tmp_path):
    """s (10 + n) under 9 steps: no average at all, the validated weights are the trained ones;
    at s = 1 the average is the usual one (test_validation_and_the_best_checkpoint_use_the_average)."""
    run = {**AWD, "max_steps": 12, "eval_every": 12, "regularization_epochs": 1e6}
    result = train_tiny(tiny_corpus, tmp_path / "m.pt", train_args=run)
    best, last = load_checkpoint(result.best), load_checkpoint(result.latest)
    assert all(torch.equal(best.state_dict[k], last.state_dict[k]) for k in best.state_dict)


@pytest.mark.slow
def test_bf16_trains_only_where_the_machine_has_it(tiny_corpus, tmp_path):
    """On a CPU without AVX512-BF16 or AMX, oneDNN has no bfloat16 LSTM: one line and exit 2,
    before any work, not a traceback from the first step."""
    proc = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", "--hidden-size", 16, "--num-layers", 1,
                   "--embed-dim", 8, "--seq-len", 16, "--batch-size", 8, "--max-steps", 2, "--precision", "bf16",
                   "--threads", 1, "--no-progress")
    if supports("bf16", torch.device("cpu")):
        assert proc.returncode == 0, proc.stderr
    else:
        assert_bad_input(proc, "--precision bf16", "use --precision fp32")
        assert not (tmp_path / "m.last.pt").exists()


def test_validation_and_the_best_checkpoint_use_the_average(tiny_corpus, tmp_path):
    result = train_tiny(tiny_corpus, tmp_path / "m.pt", train_args={**AWD, "max_steps": 12, "eval_every": 12})
    best, last = load_checkpoint(result.best), load_checkpoint(result.latest)
    assert best.train.step == last.resume.step == 12
    names = [n for n, _ in CharLSTM(best.config).named_parameters()]
    for name, average in zip(names, last.resume.average, strict=True):
        assert torch.equal(best.state_dict[name], average)
    assert not torch.equal(best.state_dict["lstm.weight_hh_l0"], last.state_dict["lstm.weight_hh_l0"])
    judge = Trainer(tiny_corpus, TINY, TINY_RUN)  # the same validation split, of the weights in `best`
    judge.model.load_state_dict(best.state_dict)
    assert best.train.val_loss == judge.evaluate()


def test_resume_restores_the_average_exactly(tiny_corpus, tmp_path):
    args = {**AWD, "max_steps": 20, "eval_every": 5}
    full = train_tiny(tiny_corpus, tmp_path / "full.pt", train_args=args)
    out = tmp_path / "cut.pt"
    trainer = Trainer(tiny_corpus, TINY, {**TINY_RUN, **args})
    with pytest.raises(Interrupted) as stopped:
        trainer.run(out, progress=False, log=lambda m: m.startswith("step 10/") and os.kill(os.getpid(), signal.SIGINT))
    resumed = Trainer(tiny_corpus, resume=stopped.value.args[0]).run(out, progress=False, log=lambda m: None)
    for kind in (lambda r: r.best, lambda r: r.latest):
        a, b = load_checkpoint(kind(full)), load_checkpoint(kind(resumed))
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    a, b = load_checkpoint(full.latest).resume.average, load_checkpoint(resumed.latest).resume.average
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_checkpoint_from_before_resumes_with_its_own_recipe(tiny_corpus, tmp_path):
    """A .last.pt whose options and resume state predate regularisation (keys removed as the
    old writer never wrote them) resumes, and goes on as a run without regularisation does."""
    args = {"max_steps": 20, "eval_every": 5}
    full = train_tiny(tiny_corpus, tmp_path / "full.pt", train_args=args)
    out = tmp_path / "cut.pt"
    trainer = Trainer(tiny_corpus, TINY, {**TINY_RUN, **args})
    with pytest.raises(Interrupted) as stopped:
        trainer.run(out, progress=False, log=lambda m: m.startswith("step 10/") and os.kill(os.getpid(), signal.SIGINT))
    old = load_checkpoint(stopped.value.args[0])
    for name in BEFORE_REGULARIZATION:
        del old.train.options[name]
    old.resume.average = None
    payload = old.to_dict()
    del payload["resume"]["average"]
    torch.save(payload, stopped.value.args[0])
    resumed = Trainer(tiny_corpus, resume=stopped.value.args[0]).run(out, progress=False, log=lambda m: None)
    a, b = load_checkpoint(full.latest), load_checkpoint(resumed.latest)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert export(resumed.best, tmp_path / "m.onnx", steps=20).report.ok


def test_a_regularised_model_exports_and_validates(tiny_corpus, tmp_path):
    result = train_tiny(tiny_corpus, tmp_path / "m.pt", train_args=AWD)
    assert export(result.best, tmp_path / "m.onnx", steps=50).report.ok


def test_threads(tiny_corpus, tmp_path):
    assert Trainer(tiny_corpus, TINY, TINY_RUN, threads=1).threads == 1 == torch.get_num_threads()
    with pytest.raises(BadInput, match="--threads must be an integer from 1"):
        Trainer(tiny_corpus, TINY, TINY_RUN, threads=0)
    out = tmp_path / "cut.pt"
    trainer = Trainer(tiny_corpus, TINY, {**TINY_RUN, "max_steps": 20, "eval_every": 5}, threads=1)
    with pytest.raises(Interrupted) as stopped:
        trainer.run(out, progress=False, log=lambda m: m.startswith("step 5/") and os.kill(os.getpid(), signal.SIGINT))
    assert load_checkpoint(stopped.value.args[0]).resume.threads == 1
    with pytest.warns(Note, match="--threads 2: the run was started with 1"):
        assert Trainer(tiny_corpus, resume=stopped.value.args[0], threads=2).threads == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Trainer(tiny_corpus, resume=stopped.value.args[0]).threads == 1
    torch.set_num_threads(1)


@pytest.mark.slow
def test_cli_threads_and_regularisation_flags(tiny_corpus, tmp_path):
    flags = ["--hidden-size", 16, "--num-layers", 2, "--embed-dim", 8, "--seq-len", 16, "--batch-size", 8,
             "--max-steps", 6]
    proc = run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "m.pt", *flags, "--threads", 1,
                   "--weight-drop", 0.3, "--hidden-dropout", 0.2, "--ema", 0.99, "--regularization-epochs", 1e4, "--init", "unit-gain")
    assert proc.returncode == 0 and "(1 thread);" in proc.stderr, proc.stderr
    assert "; dropouts x " in proc.stderr and "--regularization-epochs 10000)" in proc.stderr, proc.stderr
    options = load_checkpoint(tmp_path / "m.pt").train.options
    assert (options["weight_drop"], options["hidden_dropout"], options["ema"]) == (0.3, 0.2, 0.99)
    assert options["regularization_epochs"] == 1e4 and options["init"] == "unit-gain"
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "x.pt", "--weight-drop", 1), "[0, 1)")
    assert_bad_input(run_cli("charlstm-train", tiny_corpus, "-o", tmp_path / "x.pt", "--threads", 0), "--threads")
