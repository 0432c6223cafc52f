"""The training loop's pieces — schedule, one optimizer step, evaluation — as functions of model, optimizer and lanes."""

import math

import torch
import torch.nn.functional as F

from charlstm.train.data import ValLanes
from charlstm.train.model import State


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 5% (at most 200 steps), then cosine decay to peak / 10."""
    warmup = max(1, min(200, total // 20))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               state: State | None, *, lr: float, clip: float, precision: str) -> tuple[float, State]:
    """One optimizer step on a chunk: inputs x and targets y (T, B), from the carried state of
    each lane (None: zeros). Returns the mean loss (nats/char) and the next state, detached."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    with torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16"):
        logits, state = model(x, state)  # (T, B, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item(), (state[0].detach().float(), state[1].detach().float())


def supports(precision: str, device: torch.device) -> bool:
    """Whether an LSTM trains under `precision` on `device`: oneDNN has no bfloat16 LSTM on
    CPUs without AVX512-BF16 or AMX, and says so only once the first step runs."""
    if precision != "bf16":
        return True
    lstm = torch.nn.LSTM(2, 2).to(device)
    try:
        with torch.autocast(device.type, torch.bfloat16):
            lstm(torch.zeros(2, 1, 2, device=device))[0].float().sum().backward()
    except RuntimeError:
        return False
    return True


@torch.no_grad()
def evaluate(model: torch.nn.Module, lanes: ValLanes, device: torch.device, chunk: int = 512) -> tuple[float, int]:
    """The summed cross-entropy (nats) and the number of characters predicted over validation
    lanes, each read in order with carried state (sums, so that shards can be added)."""
    model.eval()
    total, count, state = 0.0, 0, None
    steps, batch = lanes.shape
    for start in range(0, steps - 1 if batch else 0, chunk):
        block = lanes.steps(start, start + chunk + 1).to(device)  # (T + 1, B)
        x, y = block[:-1], block[1:]
        logits, state = model(x, state)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total, count
