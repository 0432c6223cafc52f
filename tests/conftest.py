"""Shared fixtures: tiny seeded corpora and models (vocab "abcdef"), the real corpus, CLI runs."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

# One thread for torch here and in every CLI the tests run (charlstm-train's default follows
# OMP_NUM_THREADS), so that the suite runs as fast beside other work as on an idle machine;
# tests that measure threads set their own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from charlstm.export.agreement import worst_element  # noqa: E402
from shared_corpus import MOLIERE, ROOT  # noqa: E402

BIN = Path(sys.executable).parent


def parity_failure(name: str, step: int, ours, theirs, lane_axis: int) -> str | None:
    """None if `ours` agrees with `theirs` (export.agreement's rule: over 1,000 carried steps,
    logits and h stay within 1e-5, c, which reaches ~60 in a trained 2x64, within ~1e-4), else
    a message naming the output, the step, the batch lane and the largest difference."""
    index, diff, allowed, ratio = worst_element(ours, theirs)
    if ratio <= 1:
        return None
    return (f"{name} differs at step {step}, lane {index[lane_axis]}: |diff| {diff:.3e}"
            f" where {np.asarray(theirs)[index]:.4g} allows {allowed:.1e}")
TINY = {"hidden_size": 16, "num_layers": 2, "embed_dim": 8, "dropout": 0.1}
TINY_RUN = {"seq_len": 16, "batch_size": 8, "max_steps": 12, "eval_every": 4, "lr": 2e-2}


def markov_text(n: int, seed: int = 0, alphabet: str = "abcdef") -> str:
    """A learnable text: each letter mostly followed by the next one in `alphabet`."""
    rng = random.Random(seed)
    i, out = 0, []
    for _ in range(n):
        out.append(alphabet[i])
        i = (i + rng.choice((1, 1, 1, 2))) % len(alphabet)
    return "".join(out)


@pytest.fixture(autouse=True, scope="session")
def private_cache_home(tmp_path_factory):
    """The user's cache folder (train/prepare.py: user_cache_dir) inside the test's temp folder,
    for this process and the CLIs it runs, so that tests never write into the real home."""
    folder = tmp_path_factory.mktemp("cache-home")
    folder.chmod(0o700)
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "abcdef.txt"
    path.write_text(markov_text(20_000), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def moliere_slice(tmp_path_factory) -> Path:
    """300,000 characters from the middle of the real corpus (never copied into the project)."""
    if not MOLIERE.is_file():
        pytest.skip(f"the real corpus is not at {MOLIERE} (set CHARLSTM_CORPUS)")
    text = MOLIERE.read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("corpus") / "moliere-slice.txt"
    path.write_text(text[500_000:800_000], encoding="utf-8")
    return path


def train_tiny(corpus: Path, out: Path, model_args: dict | None = None, train_args: dict | None = None):
    """A real (short) training run through the Python API; returns the TrainResult."""
    from charlstm.train import Trainer

    return Trainer(corpus, {**TINY, **(model_args or {})}, {**TINY_RUN, **(train_args or {})}).run(
        out, progress=False, log=lambda msg: None, curve=False)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train_tiny(tiny_corpus, out)
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    from charlstm.export import export

    return export(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx").path


def answer_ctrl_c() -> None:
    """preexec_fn of a child a test interrupts: SIGINT back to its default, for a suite run where it
    is ignored (a shell's background job inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(prog: str, *args, env: dict | None = None, input: str | None = None, cwd=None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the installed console scripts as a user would."""
    return subprocess.run([str(BIN / prog), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, cwd=cwd, timeout=timeout)


def assert_bad_input(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, exactly one line on stderr mentioning `words`, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


def blocked_env(tmp_path: Path, *modules: str) -> dict:
    """Environment in which `import <module>` fails for each module, as if it were not installed."""
    blocker = tmp_path / ("blocked-" + "-".join(modules))
    for name in modules:
        (blocker / name).mkdir(parents=True, exist_ok=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by this test')\n")
    return {"PYTHONPATH": str(blocker)}


def edit_metadata(onnx_path: Path, out: Path, **changes) -> Path:
    """A copy of an exported model with some metadata_props changed (None: removed)."""
    import onnx

    proto = onnx.load(onnx_path)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(changes)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {k: v for k, v in props.items() if v is not None})
    onnx.save(proto, out)
    return out
