"""The house: each layer imports only what it may; the shared rules of core; the training loop's pieces."""

import ast
import math
import subprocess
import sys

import pytest
import torch

from charlstm.core import artifacts
from charlstm.core.corpus import held_out, split_point
from conftest import ROOT

LOADED = "import sys; {imports}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"


def top_level_modules_after(*imports: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after these imports, beyond those it
    holds after none (site's own: an editable install's finder, setuptools' hooks)."""
    return _loaded(*imports) - _loaded()


def _loaded(*imports: str) -> set[str]:
    code = LOADED.format(imports="; ".join(["pass", *(f"import {m}" for m in imports)]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_core_loads_no_third_party_module():
    modules = [f"charlstm.core.{p.stem}" for p in (ROOT / "core").glob("*.py") if p.stem != "__init__"]
    loaded = top_level_modules_after("charlstm.core", *modules)
    assert loaded - set(sys.stdlib_module_names) - {"charlstm"} == set()


def test_core_source_imports_the_standard_library_only():
    """Also the imports inside functions (clikit imports click only to run a command)."""
    for path in (ROOT / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                allowed = name.startswith("charlstm.core") or top in sys.stdlib_module_names
                assert allowed or (path.name, name) == ("clikit.py", "click"), f"{path.name} imports {name}"


@pytest.mark.slow
def test_training_and_export_do_not_load_onnxruntime():
    loaded = top_level_modules_after("charlstm.train", "charlstm.export", "charlstm.train.trainer",
                                     "charlstm.train.cli", "charlstm.export.cli")
    assert "onnxruntime" not in loaded
    assert "torch" in top_level_modules_after("charlstm.train.trainer")  # the check can see an import


def test_the_runtime_loads_neither_torch_nor_onnx():
    loaded = top_level_modules_after("charlstm.runtime", "charlstm.runtime.cli", "charlstm.models")
    assert {"torch", "onnx", "starlette", "uvicorn"} & loaded == set() and "onnxruntime" in loaded


def test_the_server_loads_neither_torch_nor_onnx():
    loaded = top_level_modules_after("charlstm.serve.api", "charlstm.serve.cli")
    assert {"torch", "onnx"} & loaded == set() and {"starlette", "onnxruntime"} <= loaded


def test_runtime_source_uses_neither_train_nor_export():
    for path in (ROOT / "runtime").glob("*.py"):
        source = path.read_text()
        for forbidden in ("charlstm.train", "charlstm.export", "charlstm.serve", "import torch", "import onnx\n"):
            assert forbidden not in source, f"{path.name} mentions {forbidden!r}"


@pytest.mark.parametrize("package", ["charlstm.train", "charlstm.export"])
def test_lazy_exports_resolve_every_listed_name(package):
    module = __import__(package, fromlist=["__all__"])
    for name in module.__all__:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope


@pytest.mark.parametrize("module", ["charlstm.train.cli", "charlstm.export.cli", "charlstm.runtime.cli"])
def test_every_cli_option_says_what_it_does_and_its_default(module):
    import importlib

    import click

    command = importlib.import_module(module).command
    with click.Context(command, info_name=command.name, **command.context_settings) as ctx:
        for option in (p for p in command.get_params(ctx) if isinstance(p, click.Option) and "--help" not in p.opts):
            _, text = option.get_help_record(ctx)
            assert option.help and "[default: " in text, f"{module} {option.opts[-1]}: {text!r}"


def test_artifact_names():
    assert str(artifacts.latest_path("runs/m.pt")) == "runs/m.last.pt"
    assert str(artifacts.latest_path("runs/m")) == "runs/m.last.pt"
    assert str(artifacts.curve_path("runs/m.pt")) == "runs/m.loss.png"
    assert str(artifacts.onnx_path("runs/m.pt")) == "runs/m.onnx"
    assert str(artifacts.onnx_path("runs/m.pt", "int8")) == "runs/m.int8.onnx"
    assert str(artifacts.prefill_path("runs/m.onnx")) == "runs/m.prefill.onnx"
    assert str(artifacts.prefill_path("runs/m.int8.onnx")) == "runs/m.int8.prefill.onnx"


@pytest.mark.parametrize("n, fraction, n_val", [(100, 0.05, 5), (101, 0.05, 5), (39, 0.05, 1), (10, 0.5, 5)])
def test_the_held_out_split_is_the_tail(n, fraction, n_val):
    text = "".join(chr(65 + i % 26) for i in range(n))
    train, val = held_out(text, fraction)
    assert split_point(n, fraction) == n - n_val == len(train)
    assert train + val == text and len(val) == n_val
    ids = torch.arange(n)
    assert torch.equal(held_out(ids, fraction)[1], ids[n - n_val:])


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    from charlstm.train.loop import lr_at

    total, peak = 1000, 2e-3  # warm-up: 5% of the run, 50 steps
    assert lr_at(0, total, peak) == pytest.approx(peak / 50)
    assert lr_at(49, total, peak) == pytest.approx(peak)
    after = [lr_at(s, total, peak) for s in range(50, total + 1)]
    assert after[0] == pytest.approx(peak) and after[-1] == pytest.approx(peak / 10)
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert lr_at(500 + 25, total, peak) == pytest.approx(peak * (0.1 + 0.45 * (1 + math.cos(math.pi / 2))))
    assert lr_at(0, 100_000, peak) == pytest.approx(peak / 200), "warm-up is at most 200 steps"
    assert lr_at(0, 3, peak) == peak, "a run too short to warm up starts at the peak"


@pytest.mark.parametrize("n, lanes, lane_len", [(100_000, 64, 1562), (1_000, 3, 333), (100, 1, 100)])
def test_val_lanes_are_contiguous_slices(n, lanes, lane_len):
    from charlstm.train.data import ValLanes

    ids = torch.arange(n)
    val = ValLanes(ids.numpy())
    got = val.steps(0, val.shape[0])  # (lane_len, lanes)
    assert val.shape == got.shape == (lane_len, lanes)
    for b in range(lanes):
        assert torch.equal(got[:, b], ids[b * lane_len:(b + 1) * lane_len])
