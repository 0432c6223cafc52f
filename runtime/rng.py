"""The portable random number generator of the runtime spec: SplitMix64, one state per stream.

Any runtime reproduces it with 64-bit integer arithmetic (docs/formats.md, "Random numbers"):
    state = seed mod 2^64
    next:  state = state + 0x9E3779B97F4A7C15          (mod 2^64)
           z = state
           z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9    (mod 2^64)
           z = (z ^ (z >> 27)) * 0x94D049BB133111EB    (mod 2^64)
           z = z ^ (z >> 31)
    uniform: (z >> 11) * 2^-53, a double in [0, 1)
"""

import numpy as np

MASK = (1 << 64) - 1
GAMMA, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
SEED_LIMIT = 1 << 64  # seeds are integers in [0, 2^64)


def splitmix64(state: int) -> tuple[int, int]:
    """(next state, output) for one stream, in Python integers."""
    state = (state + GAMMA) & MASK
    z = ((state ^ (state >> 30)) * MIX1) & MASK
    z = ((z ^ (z >> 27)) * MIX2) & MASK
    return state, z ^ (z >> 31)


class Streams:
    """One SplitMix64 stream per lane; `uniforms()` draws the next double of each: (B,) float64.
    One lane runs in Python integers (faster than numpy for one number), several vectorized in
    uint64 arrays; both give the same numbers."""

    def __init__(self, seeds: list[int]):
        self._one = seeds[0] % SEED_LIMIT if len(seeds) == 1 else None
        self._many = np.array([s % SEED_LIMIT for s in seeds], np.uint64)

    def uniforms(self) -> np.ndarray:
        if self._one is not None:
            self._one, z = splitmix64(self._one)
            return np.array([(z >> 11) * 2.0**-53])
        s = self._many
        s += np.uint64(GAMMA)  # uint64 arrays wrap modulo 2^64
        z = (s ^ (s >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z ^= z >> np.uint64(31)
        return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
