"""The error a user can fix, how counts in its messages are worded, and the exit status of every command."""

import re

# What a one-line message never holds raw, as it may quote a hostile file: control characters
# (C0, DEL, C1), line and paragraph separators, and the bidirectional controls that can make a
# terminal show text in another order. The same rule in every runtime (docs/formats.md).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """`text` with every UNSAFE character escaped: \\xNN below U+0100, \\uNNNN above."""
    return UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


class BadInput(Exception):
    """A problem the user can fix (wrong file, wrong option); CLIs print it on one line, exit 2.
    The message is made one line: what it quotes from a file is escaped (one_line)."""

    def __init__(self, message: str = ""):
        super().__init__(one_line(str(message)))


class WriteFailed(Exception):
    """Writing an output failed (a full disk, say): the file is as it was before, the temporary
    one removed. CLIs print it on one line and exit 1 (EXIT_FAILED)."""

    def __init__(self, message: str = ""):
        super().__init__(one_line(str(message)))


class Note(UserWarning):
    """Something charlstm did otherwise than it was asked to, and why (a CLI prints it on one line)."""


EXIT_FAILED = 1  # the job itself failed: an export off tolerance, a training run that diverged
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def plural(n: int, noun: str, grouped: bool = True) -> str:
    """'1 character', '2 characters', '1,000 characters' ('1000 steps' when not grouped)."""
    return (f"{n:,}" if grouped else str(n)) + f" {noun}{'' if n == 1 else 's'}"
