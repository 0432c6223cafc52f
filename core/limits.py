"""The caps on what a file or an argument can make charlstm allocate, checked before anything is built (docs/security.md)."""

import re

from charlstm.core.errors import BadInput

# A character LSTM's shape. Far beyond any model charlstm trains or reads (the shipped one is
# 3 x 512), small enough that a number in a hostile file cannot ask for a machine's memory.
MAX_LAYERS = 64
MAX_HIDDEN = 16_384  # LSTM units per layer
MAX_EMBED = 16_384  # embedding width (a one-hot input is vocab_size wide: MAX_VOCAB)
MAX_VOCAB = 0x110000  # every Unicode code point
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights; --max-params raises it

# A file's declared sizes: what a zip (torch.save, .npz) says it unpacks to, at most this many
# times the file's own size plus a little: real checkpoints are stored, not compressed.
MAX_UNPACK_RATIO = 4
UNPACK_SLACK = 1 << 20

# The runtime's arguments.
MAX_THREADS = 256  # onnxruntime intra-op threads
MAX_BATCH = 4096  # lanes of one batch (--num-samples)
MAX_STATE_FLOATS = 1 << 26  # layers x batch x hidden of one state array: 256 MB of float32
MAX_WINDOW = 4096  # --repetition-window
MAX_LENGTH = 1_000_000_000  # -n
MAX_HELD = 10_000_000  # characters held at once: samples x length when the samples are printed at the end

_DECIMAL = re.compile(r"[0-9]{1,10}")


def decimal(text: str) -> int | None:
    """A size written in a file: ASCII digits only (no sign, space, '_' or other scripts' digits),
    at most 10 of them; None for anything else. The same rule in every runtime."""
    return int(text) if isinstance(text, str) and _DECIMAL.fullmatch(text) else None


def unpack_cap(file_size: int) -> int:
    """The most bytes a zip file of `file_size` bytes may unpack to."""
    return MAX_UNPACK_RATIO * file_size + UNPACK_SLACK


def lstm_parameters(vocab: int, embed: int, hidden: int, layers: int) -> int:
    """Weights of Embedding(vocab, embed) -> LSTM(embed, hidden, layers) -> Linear(hidden, vocab)."""
    first = 4 * hidden * (embed + hidden + 2)
    rest = 4 * hidden * (2 * hidden + 2) * (layers - 1)
    return vocab * embed + first + rest + vocab * (hidden + 1)


def check_shape(vocab: int, embed: int, hidden: int, layers: int, max_params: int = MAX_PARAMETERS,
                what: str = "the model") -> None:
    """BadInput unless the sizes are within the caps (before anything of that size is built)."""
    for value, cap, name in ((layers, MAX_LAYERS, "layers"), (hidden, MAX_HIDDEN, "hidden units"),
                             (embed, max(MAX_EMBED, vocab), "embedding width"), (vocab, MAX_VOCAB, "characters")):
        if value > cap:
            raise BadInput(f"{what} has {value:,} {name}; charlstm reads at most {cap:,}")
    count = lstm_parameters(vocab, embed, hidden, layers)
    if count > max_params:
        raise BadInput(f"{what} has {count:,} parameters, more than the cap of {max_params:,};"
                       " raise it with --max-params if the file is yours and the machine can hold it")
