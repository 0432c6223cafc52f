"""The corpus: reading it safely, its vocabulary, the held-out split and the batched lanes."""

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.runtime.common import BadInput, sha256_file


def read_corpus(path: str | Path, normalize_newlines: bool = True) -> str:
    """Read a UTF-8 text file, refusing what is missing, empty, binary or not UTF-8.

    With normalize_newlines, Windows (CRLF) and old Mac (CR) line ends become "\n", as
    Python's text mode reads them: one character per line break, the same on every system."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"corpus {path} does not exist")
    if not path.is_file():
        raise BadInput(f"corpus {path} is not a file")
    raw = path.read_bytes()
    if not raw:
        raise BadInput(f"corpus {path} is empty")
    if b"\x00" in raw:
        raise BadInput(f"corpus {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(
            f"corpus {path} is not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start});"
            " convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if normalize_newlines else text


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
        n_val = int(len(ids) * val_fraction)
        if n_val < 2:
            raise BadInput(
                f"corpus {path} is too short: {len(ids)} characters leave {n_val} for validation"
                f" (--val-fraction {val_fraction}); at least 2 are needed"
            )
        return cls(vocab, ids[:-n_val], ids[-n_val:], sha256_file(path))


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
                f"corpus too short: {len(ids)} training characters, but --batch-size {batch_size}"
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
