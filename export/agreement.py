"""What "two implementations agree" means, torch-free: default tolerances, the atol + rtol·|x| rule, random start states.

Used by the export's validation, the parity tests and the golden files alike.
"""

import numpy as np

# Two float32 implementations differ in summation order; over hundreds of carried steps the
# differences grow to ~1e-5 on logits and h (order 1). The cell state c is unbounded (tens in
# trained models) and drifts in proportion: 3x512 trained reached 2.3e-4 on c in 300 steps.
# So an element agrees when |diff| <= ATOL + RTOL * |reference|. Both stay far below a
# one-weight bug (0.05 on one recurrent weight moves outputs by > 1e-3 within 50 steps).
ATOL = 1e-4
RTOL = 1e-5
MAX_KL = 0.01  # int8: mean KL(torch || onnx) per character, in nats; ~ the loss it may add
STEPS = 300  # autoregressive steps per validation scenario
MAX_STEPS = 100_000  # what --steps accepts: 2 x 2 x 100,000 steps is hours of validation already


def worst_element(ours, reference, atol: float = ATOL, rtol: float = RTOL) -> tuple[tuple, float, float, float]:
    """The element of `ours` furthest outside its allowance around `reference`:
    (index, |diff|, allowance atol + rtol·|reference|, ratio |diff| / allowance). All elements
    agree when the ratio is <= 1. NaN counts as an infinite difference."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    diff = np.abs(ours - reference)
    diff[np.isnan(diff)] = np.inf
    allowed = atol + rtol * np.abs(reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / allowed)  # 0 / 0 allowed (atol = rtol = 0) is a match
    i = np.unravel_index(ratio.argmax(), ratio.shape)
    return i, float(diff[i]), float(allowed[i]), float(ratio[i])


def random_state(num_layers: int, batch: int, hidden_size: int, rng: np.random.Generator):
    """A random LSTM state (h, c), float32 (L, B, H) each, of the range trained models reach:
    h in (-1, 1), c unbounded (a few units)."""
    shape = (num_layers, batch, hidden_size)
    h = rng.uniform(-1, 1, shape).astype(np.float32)
    c = (2 * rng.standard_normal(shape)).astype(np.float32)
    return h, c
