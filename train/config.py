"""The hyperparameters: the model's shape and the run's options, each one frozen dataclass."""

import dataclasses
import math
from dataclasses import dataclass

from charlstm.core import limits
from charlstm.core.corpus import VAL_FRACTION
from charlstm.core.errors import BadInput

SEED_LIMIT = 1 << 32  # training seeds are 0 .. 2^32 - 1
DROPOUTS = ("embed_dropout", "input_dropout", "hidden_dropout", "output_dropout", "weight_drop")
INITS = ("torch", "unit-gain")  # train/model.py's initialise
BEFORE_REGULARIZATION = {**{name: 0.0 for name in (*DROPOUTS, "ema", "regularization_epochs")}, "init": "torch"}
MAX_REGULARIZATION_EPOCHS = 1e6
MAX_CHUNK = 1 << 24  # characters of one training step (lanes x chunk length); 64 x 128 by default


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise BadInput(message)


class _AsDict:
    """Round-trip through a plain dict, the form the checkpoint stores (weights_only-safe)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class ModelConfig(_AsDict):
    """Everything needed to rebuild the network; stored as the checkpoint's `config`."""

    vocab_size: int
    embed_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.25

    def __post_init__(self) -> None:
        sizes = {"vocab_size": limits.MAX_VOCAB, "embed_dim": max(limits.MAX_EMBED, self.vocab_size),
                 "hidden_size": limits.MAX_HIDDEN, "num_layers": limits.MAX_LAYERS}
        for name, cap in sizes.items():
            value = getattr(self, name)
            _require(_is_int(value), f"{name} must be an integer, not {value!r}")
            _require(value <= cap, f"--{name.replace('_', '-')} must be at most {cap:,}")
        _require(self.vocab_size >= 2, "the corpus needs at least 2 distinct characters")
        _require(self.embed_dim >= 1, "--embed-dim must be at least 1")
        _require(self.hidden_size >= 1, "--hidden-size must be at least 1")
        _require(self.num_layers >= 1, "--num-layers must be at least 1")
        _require(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "--dropout must be in [0, 1)")

    @property
    def parameters(self) -> int:
        return limits.lstm_parameters(self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers)

    def check_size(self, max_params: int = limits.MAX_PARAMETERS) -> None:
        """BadInput if the model would have more than `max_params` weights (before it is built)."""
        limits.check_shape(self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers, max_params)


@dataclass(frozen=True)
class TrainOptions(_AsDict):
    """How to train; stored in the checkpoint's `train` dict so that --resume can check them."""

    seq_len: int = 128  # characters per truncated-BPTT chunk
    batch_size: int = 64  # parallel lanes over the corpus
    lr: float = 2e-3  # peak learning rate, after warm-up, before cosine decay
    epochs: int = 10
    max_steps: int | None = None  # stops earlier than `epochs` if given
    val_fraction: float = VAL_FRACTION  # the last characters of the corpus, never trained on
    eval_every: int | None = None  # steps between validations; default: 20 per run
    weight_decay: float = 0.01
    clip: float = 1.0  # max global gradient norm
    seed: int = 0
    normalize_newlines: bool = True  # CRLF and CR line ends read as "\n"
    precision: str = "fp32"  # "bf16": forward and backward under bfloat16 autocast (weights stay fp32)
    # Regularisation (train/model.py's Regularization) and weight averaging; all 0 is the
    # recipe of checkpoints written before they existed (BEFORE_REGULARIZATION).
    embed_dropout: float = 0.0  # whole characters dropped from the embedding
    input_dropout: float = 0.0  # locked dropout on the embedding output
    hidden_dropout: float = 0.0  # locked dropout between LSTM layers
    output_dropout: float = 0.0  # locked dropout on the last LSTM output
    weight_drop: float = 0.0  # DropConnect on the recurrent matrices weight_hh
    ema: float = 0.0  # decay of the exponential moving average of the weights that validations use; 0: none
    # A run planned for fewer epochs than this trains with the five dropouts above, and the
    # ema's span, scaled by planned epochs / regularization_epochs (a short run over-fits less); 0: never.
    regularization_epochs: float = 0.0
    init: str = "torch"  # the weights' initialisation, one of INITS

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "epochs", "max_steps", "eval_every"):
            value = getattr(self, name)
            _require(value is None and name in ("max_steps", "eval_every") or _is_int(value),
                     f"--{name.replace('_', '-')} must be an integer, not {value!r}")
        _require(self.batch_size * self.seq_len <= MAX_CHUNK, f"--batch-size x --seq-len must be at most {MAX_CHUNK:,}")
        _require(self.seq_len >= 1, "--seq-len must be at least 1")
        _require(self.batch_size >= 1, "--batch-size must be at least 1")
        _require(math.isfinite(self.lr) and self.lr > 0, "--lr must be a positive number")
        _require(self.epochs >= 1, "--epochs must be at least 1")
        _require(self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1")
        _require(0 < self.val_fraction < 1, "--val-fraction must be in (0, 1)")
        _require(self.eval_every is None or self.eval_every >= 1, "--eval-every must be at least 1")
        _require(self.weight_decay >= 0, "--weight-decay must be >= 0")
        _require(self.clip > 0, "--clip must be positive")
        _require(_is_int(self.seed) and 0 <= self.seed < SEED_LIMIT, f"--seed must be from 0 to {SEED_LIMIT - 1}")
        _require(self.precision in ("fp32", "bf16"), "--precision must be fp32 or bf16")
        _require(self.init in INITS, f"--init must be one of {', '.join(INITS)}, not {self.init!r}")
        for name in (*DROPOUTS, "ema"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1,
                     f"--{name.replace('_', '-')} must be in [0, 1), not {value!r}")
        e = self.regularization_epochs
        _require(isinstance(e, (int, float)) and not isinstance(e, bool) and 0 <= e <= MAX_REGULARIZATION_EPOCHS,
                 f"--regularization-epochs must be from 0 to {MAX_REGULARIZATION_EPOCHS:g}, not {e!r}")

    def regularization_scale(self, planned_epochs: float) -> float:
        """What the dropouts are multiplied by in a run planned for `planned_epochs`."""
        e = self.regularization_epochs
        return min(1.0, planned_epochs / e) if e else 1.0

    @classmethod
    def stored(cls, d: dict) -> dict:
        """A checkpoint's stored options, with the fields it predates at the values that give
        its recipe (its run resumes as it began)."""
        return {**BEFORE_REGULARIZATION, **d}
