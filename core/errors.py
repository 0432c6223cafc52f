"""The error a user can fix, and the exit status of every charlstm command."""


class BadInput(Exception):
    """A problem the user can fix (wrong file, wrong option); CLIs print it on one line, exit 2."""


EXIT_OK = 0
EXIT_FAILED = 1  # the job itself failed: an export off tolerance, a training run that diverged
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
