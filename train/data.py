"""The corpus as token ids: its vocabulary, its training and validation parts, the batched lanes."""

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.core.corpus import held_out, read_corpus
from charlstm.core.errors import BadInput, plural
from charlstm.core.files import sha256_file


@dataclass(frozen=True)
class Corpus:
    """A corpus split into training and validation token ids (the validation part is the tail)."""

    vocab: list[str]
    train_ids: torch.Tensor  # (N,) int64
    val_ids: torch.Tensor  # (M,) int64
    sha256: str

    @classmethod
    def load(cls, path: str | Path, val_fraction: float, normalize_newlines: bool = True) -> "Corpus":
        text = read_corpus(path, normalize_newlines)
        vocab = sorted(set(text))
        index = {ch: i for i, ch in enumerate(vocab)}
        ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
        train_ids, val_ids = held_out(ids, val_fraction)
        if len(val_ids) < 2:
            raise BadInput(
                f"corpus {path} is too short: of its {plural(len(ids), 'character')}, {len(val_ids)} would be held out"
                f" for validation (--val-fraction {val_fraction}); at least 2 are needed"
            )
        return cls(vocab, train_ids, val_ids, sha256_file(path))


class Lanes:
    """The training ids cut into B parallel lanes, walked in chunks of T with carried state.

    Each epoch starts at a seeded random offset below T, so chunk boundaries move between
    epochs; the number of chunks per epoch stays the same, so a step number locates a chunk."""

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, seed: int):
        self.ids, self.batch_size, self.seq_len, self.seed = ids, batch_size, seq_len, seed
        self.lane_len = (len(ids) - seq_len) // batch_size
        self.chunks_per_epoch = (self.lane_len - 1) // seq_len
        if self.chunks_per_epoch < 1:
            need = batch_size * (seq_len + 1) + seq_len
            raise BadInput(
                f"corpus too short: {plural(len(ids), 'training character')}, but --batch-size {batch_size}"
                f" × --seq-len {seq_len} needs at least {need}; lower them"
            )

    def epoch(self, epoch: int) -> torch.Tensor:
        """The lanes of one epoch, seq-first: (lane_len, B)."""
        offset = random.Random(f"{self.seed}/{epoch}").randrange(self.seq_len)
        span = self.ids[offset : offset + self.batch_size * self.lane_len]
        return span.view(self.batch_size, self.lane_len).t()

    def chunk(self, lanes: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of chunk i: (T, B) each."""
        start = i * self.seq_len
        return lanes[start : start + self.seq_len], lanes[start + 1 : start + self.seq_len + 1]


def val_lanes(ids: torch.Tensor, max_lanes: int = 64, min_lane_len: int = 256) -> torch.Tensor:
    """The validation ids as up to `max_lanes` contiguous lanes, seq-first: (lane_len, B)."""
    lanes = max(1, min(max_lanes, len(ids) // min_lane_len))
    lane_len = len(ids) // lanes
    return ids[: lanes * lane_len].view(lanes, lane_len).t()
