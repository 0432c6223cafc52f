"""The error a user can fix, how counts in its messages are worded, and the exit status of every command."""


class BadInput(Exception):
    """A problem the user can fix (wrong file, wrong option); CLIs print it on one line, exit 2."""


EXIT_FAILED = 1  # the job itself failed: an export off tolerance, a training run that diverged
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def plural(n: int, noun: str, grouped: bool = True) -> str:
    """'1 character', '2 characters', '1,000 characters' ('1000 steps' when not grouped)."""
    return (f"{n:,}" if grouped else str(n)) + f" {noun}{'' if n == 1 else 's'}"
