"""Export-time validation: the ONNX graph in onnxruntime beside the torch model, step by step."""

from dataclasses import dataclass

import numpy as np
import torch

from charlstm.runtime import Model
from charlstm.runtime import formats as fmt
from charlstm.train.model import CharLSTM

DEFAULT_ATOL = 1e-4  # float32 kernels differ in summation order; trained 2x512 drifts ~1e-5 in 500 steps


@dataclass
class Worst:
    """The largest |torch - onnxruntime| seen for one output, and where it happened."""

    output: str
    max_abs: float = 0.0
    where: str = "-"


@dataclass
class Report:
    rows: list[Worst]
    atol: float
    steps: int

    @property
    def ok(self) -> bool:
        return all(r.max_abs <= self.atol for r in self.rows)

    def table(self) -> str:
        lines = [f"{'output':<15} {'max |diff|':>11} {'tolerance':>10}  {'result':<6} worst at"]
        for r in self.rows:
            verdict = "ok" if r.max_abs <= self.atol else "FAILED"
            lines.append(f"{r.output:<15} {r.max_abs:>11.3e} {self.atol:>10.1e}  {verdict:<6} {r.where}")
        return "\n".join(lines)


def validate(model: CharLSTM, onnx_bytes: bytes, atol: float = DEFAULT_ATOL, steps: int = 300,
             batches: tuple[int, ...] = (1, 4), seed: int = 0, prefill_bytes: bytes | None = None) -> Report:
    """Run torch and onnxruntime side by side, autoregressively for `steps` characters, from
    zero and from random states, at each batch size; report the worst difference per output.
    With a prefill graph, also compare it on whole sequences against torch's forward."""
    runtime = Model(onnx_bytes, prefill=prefill_bytes, threads=1)
    model = model.eval()
    gen = torch.Generator().manual_seed(seed)
    worst = {name: Worst(name) for name in fmt.OUTPUT_NAMES}
    for batch in batches:
        for start in ("zero", "random"):
            h, c = _initial_state(model, batch, start, gen)
            _run(model, runtime, h, c, steps, gen, worst, f"batch {batch}, {start} state")
    if prefill_bytes is not None:
        worst.update({f"prefill {n}": Worst(f"prefill {n}") for n in fmt.OUTPUT_NAMES})
        for start in ("zero", "random"):
            _run_prefill(model, runtime, steps, gen, worst, start)
    return Report(list(worst.values()), atol, steps)


@torch.no_grad()
def _run_prefill(model, runtime, steps, gen, worst, start) -> None:
    """The prefill graph over a random sequence (two chunks of odd length) against torch."""
    h, c = _initial_state(model, 1, start, gen)
    tokens = torch.randint(model.config.vocab_size, (steps,), generator=gen)
    logits, (h2, c2) = model(tokens[:, None], (h, c))  # (T, 1, V)
    state = runtime.new_state(1)
    state.h[:], state.c[:] = h.numpy(), c.numpy()
    ours, state = runtime.feed(tokens.numpy(), state, chunk=steps // 2 + 1)
    scenario = f"prefill of {steps}, {start} state"
    for name, a, b, lane_axis in (("logits", logits[:, 0], ours, 0), ("h_out", h2, state.h, 1),
                                  ("c_out", c2, state.c, 1)):
        diff = np.abs(a.numpy() - b)
        if diff.max() > worst[f"prefill {name}"].max_abs:
            where = np.unravel_index(diff.argmax(), diff.shape)
            place = f"step {where[0]}" if name == "logits" else f"lane {where[lane_axis]}"
            worst[f"prefill {name}"] = Worst(f"prefill {name}", float(diff.max()), f"{scenario}, {place}")


def _initial_state(model: CharLSTM, batch: int, start: str, gen: torch.Generator):
    h, c = model.zero_state(batch)
    if start == "random":
        h = torch.rand(h.shape, generator=gen) * 2 - 1  # h lies in (-1, 1)
        c = torch.randn(c.shape, generator=gen) * 2  # c is unbounded; trained cells reach a few units
    return h, c


@torch.no_grad()
def _run(model, runtime, h, c, steps, gen, worst, scenario) -> None:
    batch = h.shape[1]
    tokens = torch.randint(model.config.vocab_size, (batch,), generator=gen)
    state = runtime.new_state(batch)
    state.h[:], state.c[:] = h.numpy(), c.numpy()
    for step in range(steps):
        logits, (h, c) = model(tokens[None], (h, c))  # (1, B, V)
        ort_logits, state = runtime.step(tokens.numpy(), state)
        for name, ours, theirs in ((fmt.OUTPUT_LOGITS, logits[0], ort_logits),
                                   (fmt.OUTPUT_H, h, state.h), (fmt.OUTPUT_C, c, state.c)):
            diff = np.abs(ours.numpy() - theirs)
            if diff.max() > worst[name].max_abs:
                lane = np.unravel_index(diff.argmax(), diff.shape)[-2 if name != fmt.OUTPUT_LOGITS else 0]
                worst[name] = Worst(name, float(diff.max()), f"{scenario}, step {step}, lane {lane}")
        tokens = torch.multinomial(torch.softmax(logits[0], -1), 1, generator=gen)[:, 0]
