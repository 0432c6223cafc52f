"""What a corpus file means: its text (UTF-8, line ends) and the held-out split of its characters."""

from pathlib import Path

from charlstm.core.errors import BadInput

VAL_FRACTION = 0.05  # the default held-out tail
BOM = "\ufeff"


def read_corpus(path: str | Path, normalize_newlines: bool = True) -> str:
    """Read a UTF-8 text file, refusing what is missing, empty, binary or not UTF-8.

    With normalize_newlines, Windows (CRLF) and old Mac (CR) line ends become "\\n", as
    Python's text mode reads them: one character per line break, the same on every system.
    A leading byte-order mark (U+FEFF) marks the encoding, not the text, and is dropped."""
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
    text = text.removeprefix(BOM)
    return normalize_line_ends(text) if normalize_newlines else text


def normalize_line_ends(text: str) -> str:
    """CRLF and CR line ends as "\n", as Python's text mode reads them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_point(n: int, val_fraction: float = VAL_FRACTION) -> int:
    """The held-out split of n characters: the first split_point(n) train, the last
    int(n * val_fraction) are held out for validation and never trained on."""
    return n - int(n * val_fraction)


def held_out(seq, val_fraction: float = VAL_FRACTION):
    """(training part, validation part) of a sequence of characters or ids (str, list, array, tensor)."""
    cut = split_point(len(seq), val_fraction)
    return seq[:cut], seq[cut:]
