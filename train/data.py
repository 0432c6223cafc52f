"""The corpus as token ids: its vocabulary, its training and validation parts, the batched lanes."""

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlstm.core.corpus import held_out
from charlstm.core.errors import BadInput, plural
from charlstm.train.prepare import prepare


@dataclass(frozen=True)
class Corpus:
    """A corpus split into training and validation token ids (the validation part is the tail).
    The ids are a read-only memory map of the prepared cache (train/prepare.py)."""

    vocab: list[str]
    train_ids: np.ndarray  # (N,) uint8/uint16/uint32
    val_ids: np.ndarray  # (M,)
    sha256: str
    cache: Path | None = None
    rebuilt: str | None = None  # why the cache was built by this load; None: reused

    @classmethod
    def load(cls, path: str | Path, val_fraction: float, normalize_newlines: bool = True,
             cache_dir: str | Path | None = None) -> "Corpus":
        prepared = prepare(path, normalize_newlines, cache_dir)
        ids = prepared.ids
        train_ids, val_ids = held_out(ids, val_fraction)
        if len(val_ids) < 2:
            raise BadInput(
                f"corpus {path} is too short: of its {plural(len(ids), 'character')}, {len(val_ids)} would be held out"
                f" for validation (--val-fraction {val_fraction}); at least 2 are needed"
            )
        return cls(prepared.vocab, train_ids, val_ids, prepared.sha256, prepared.cache, prepared.rebuilt)


def _gather(ids: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
    """ids[start : start + length] for each start, as int64 (length, len(starts)): lanes seq-first."""
    block = np.asarray(ids[starts[:, None] + np.arange(length)], dtype=np.int64)  # (B, length)
    return torch.from_numpy(block).t()


class Lanes:
    """The training ids cut into B parallel lanes, walked in chunks of T with carried state.

    Lane b of an epoch is ids[offset + b * lane_len : offset + (b + 1) * lane_len]. Each epoch
    starts at a seeded random offset below T, so chunk boundaries move between epochs; the
    number of chunks per epoch stays the same, so a step number locates a chunk. `lanes`: the
    lanes this process owns (a rank of a distributed run), all by default. Only the ids of a
    chunk are read, so memory does not grow with the corpus."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, seed: int, lanes: range | None = None):
        self.ids, self.batch_size, self.seq_len, self.seed = ids, batch_size, seq_len, seed
        self.lanes = np.arange(batch_size)[lanes or slice(None)]
        self.lane_len = (len(ids) - seq_len) // batch_size
        self.chunks_per_epoch = (self.lane_len - 1) // seq_len
        if self.chunks_per_epoch < 1:
            need = batch_size * (seq_len + 1) + seq_len
            raise BadInput(
                f"corpus too short: {plural(len(ids), 'training character')}, but --batch-size {batch_size}"
                f" × --seq-len {seq_len} needs at least {need}; lower them"
            )

    def epoch(self, epoch: int) -> int:
        """Where the lanes of one epoch start in the ids."""
        return random.Random(f"{self.seed}/{epoch}").randrange(self.seq_len)

    def chunk(self, offset: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of chunk i of the epoch starting at `offset`: (T, B) each."""
        starts = offset + self.lanes * self.lane_len + i * self.seq_len
        block = _gather(self.ids, starts, self.seq_len + 1)  # (T + 1, B)
        return block[:-1], block[1:]


class ValLanes:
    """The validation ids as up to `max_lanes` contiguous lanes (each at least `min_lane_len`
    long), read in chunks of steps; `lanes(count)`, a slice, selects some of them (a rank's share)."""

    def __init__(self, ids: np.ndarray, max_lanes: int = 64, min_lane_len: int = 256, lanes=None):
        count = max(1, min(max_lanes, len(ids) // min_lane_len))
        self.ids, self.lane_len = ids, len(ids) // count
        self.lanes = np.arange(count)[lanes(count) if lanes else slice(None)]

    @property
    def shape(self) -> tuple[int, int]:
        return self.lane_len, len(self.lanes)

    def steps(self, start: int, stop: int) -> torch.Tensor:
        """Steps start..stop-1 of the lanes: (stop - start, B) int64."""
        stop = min(stop, self.lane_len)
        return _gather(self.ids, self.lanes * self.lane_len + start, stop - start)

