"""Export-time validation: the ONNX graphs in onnxruntime beside the torch model, step by step."""

import math
from dataclasses import dataclass

import numpy as np
import torch

from charlstm.core import formats as fmt
from charlstm.core.errors import BadInput
from charlstm.export.agreement import ATOL, RTOL, STEPS, random_state, worst_element
from charlstm.runtime import Model
from charlstm.train.model import CharLSTM

KL = "KL nats/char"


@dataclass
class Worst:
    """The worst |torch - onnxruntime| of one output against its allowance (atol + rtol |torch|),
    and where it happened. `judged` False: shown, not judged (the outputs of an int8 graph)."""

    output: str
    judged: bool = True
    max_abs: float = 0.0  # the difference at the worst element
    limit: float = 0.0  # what that element allows
    where: str = "-"
    ratio: float = 0.0  # max_abs / limit, the quantity that is maximised

    @property
    def ok(self) -> bool:
        return not self.judged or self.max_abs <= self.limit


@dataclass
class Report:
    rows: list[Worst]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def failed(self) -> list[str]:
        return [r.output for r in self.rows if not r.ok]

    def table(self) -> str:
        lines = [f"{'output':<15} {'|diff|':>10} {'allowed':>9}  {'result':<6} worst at"]
        for r in self.rows:
            verdict, limit = ("ok" if r.ok else "FAILED", f"{r.limit:.1e}") if r.judged else ("-", "-")
            lines.append(f"{r.output:<15} {r.max_abs:>10.3e} {limit:>9}  {verdict:<6} {r.where}")
        return "\n".join(lines)


class Tally:
    """The running worst difference of each output and the running KL divergence of one validation."""

    def __init__(self, names, judged: bool, atol: float, rtol: float):
        self.worst = {n: Worst(n, judged=judged) for n in names}
        self.tolerance = (atol, rtol)
        self.kl_sum, self.kl_count = 0.0, 0

    def track(self, name: str, ours: torch.Tensor, theirs: np.ndarray, where) -> None:
        """Keep the worst element of output `name` relative to its allowance; where(index) says
        where it is."""
        i, diff, allowed, ratio = worst_element(theirs, ours.numpy(), *self.tolerance)  # torch is the reference
        w = self.worst[name]
        if ratio > w.ratio:
            w.max_abs, w.limit, w.ratio, w.where = diff, allowed, ratio, where(i)

    def refused(self, names, where: str) -> None:
        """The runtime refused what onnxruntime gave (logits that are not finite, say): those outputs fail."""
        for name in names:
            w = self.worst[name]
            w.judged, w.max_abs, w.ratio, w.where = True, math.inf, math.inf, f"{where}: refused by the runtime"

    def add_kl(self, p: torch.Tensor, theirs: np.ndarray) -> None:
        """KL(torch || onnxruntime) of each lane's next-character distribution: torch's
        log-probabilities `p` and onnxruntime's logits, (B, V) each."""
        q = torch.log_softmax(torch.from_numpy(theirs).double(), -1)
        self.kl_sum += float((p.exp() * (p - q)).sum())
        self.kl_count += p.shape[0]

    def report(self, max_kl: float | None) -> Report:
        mean = self.kl_sum / self.kl_count if self.kl_count else math.nan
        kl_row = Worst(KL, max_kl is not None, mean, max_kl or 0.0, "mean over all steps and lanes")
        return Report(list(self.worst.values()) + [kl_row])


def validate(model: CharLSTM, onnx_bytes: bytes, atol: float = ATOL, steps: int = STEPS,
             batches: tuple[int, ...] = (1, 4), seed: int = 0, prefill_bytes: bytes | None = None,
             max_kl: float | None = None, rtol: float = RTOL) -> Report:
    """Run torch and onnxruntime side by side, autoregressively for `steps` characters, from
    zero and from random states, at each batch size; report the worst difference per output
    and the mean KL divergence of the next-character distributions. With a prefill graph, also
    compare it on whole sequences against torch's forward. Outputs are judged by
    atol + rtol * |torch|, or, for a quantized graph (`max_kl` given), the KL divergence alone."""
    runtime = Model(onnx_bytes, prefill=prefill_bytes, threads=1)
    model = model.eval()
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    names = list(fmt.OUTPUT_NAMES) + ([f"prefill {n}" for n in fmt.OUTPUT_NAMES] if prefill_bytes else [])
    tally = Tally(names, max_kl is None, atol, rtol)
    for batch in batches:
        for start in ("zero", "random"):
            h, c = _initial_state(model, batch, start, rng)
            _run(model, runtime, h, c, steps, gen, tally, f"batch {batch}, {start} state")
    for start in ("zero", "random") if prefill_bytes else ():
        _run_prefill(model, runtime, steps, gen, rng, tally, start)
    return tally.report(max_kl)


def _initial_state(model: CharLSTM, batch: int, start: str, rng: np.random.Generator):
    if start == "zero":
        return model.zero_state(batch)
    cfg = model.config
    return tuple(map(torch.from_numpy, random_state(cfg.num_layers, batch, cfg.hidden_size, rng)))


@torch.no_grad()
def _run(model, runtime, h, c, steps, gen, tally: Tally, scenario) -> None:
    batch = h.shape[1]
    tokens = torch.randint(model.config.vocab_size, (batch,), generator=gen)
    state = runtime.new_state(batch)
    state.h[:], state.c[:] = h.numpy(), c.numpy()
    for step in range(steps):
        logits, (h, c) = model(tokens[None], (h, c))  # (1, B, V)
        try:
            ort_logits, state = runtime.step(tokens.numpy(), state)
        except BadInput:
            return tally.refused(fmt.OUTPUT_NAMES, f"{scenario}, step {step}")
        for name, ours, theirs, lane_axis in ((fmt.OUTPUT_LOGITS, logits[0], ort_logits, 0),
                                              (fmt.OUTPUT_H, h, state.h, 1), (fmt.OUTPUT_C, c, state.c, 1)):
            tally.track(name, ours, theirs, lambda i: f"{scenario}, step {step}, lane {i[lane_axis]}")
        p = torch.log_softmax(logits[0].double(), -1)
        tally.add_kl(p, ort_logits)
        tokens = torch.multinomial(p.exp(), 1, generator=gen)[:, 0]


@torch.no_grad()
def _run_prefill(model, runtime, steps, gen, rng, tally: Tally, start) -> None:
    """The prefill graph over a random sequence (two chunks of odd length) against torch."""
    h, c = _initial_state(model, 1, start, rng)
    tokens = torch.randint(model.config.vocab_size, (steps,), generator=gen)
    logits, (h2, c2) = model(tokens[:, None], (h, c))  # (T, 1, V)
    state = runtime.new_state(1)
    state.h[:], state.c[:] = h.numpy(), c.numpy()
    scenario = f"prefill of {steps}, {start} state"
    try:
        ours, state = runtime.feed(tokens.numpy(), state, chunk=steps // 2 + 1)
    except BadInput:
        return tally.refused([f"prefill {n}" for n in fmt.OUTPUT_NAMES], scenario)
    tally.track("prefill logits", logits[:, 0], ours, lambda i: f"{scenario}, step {i[0]}")
    tally.track("prefill h_out", h2, state.h, lambda i: f"{scenario}, layer {i[0]}")
    tally.track("prefill c_out", c2, state.c, lambda i: f"{scenario}, layer {i[0]}")
