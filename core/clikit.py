"""The shell every charlstm command shares: one-line errors with exit 2, quiet Ctrl-C and pipes."""

import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import NoReturn

from charlstm.core.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, BadInput, Note, WriteFailed, one_line


# charlstm is installed from a clone or a wheel (it is not on PyPI); README "Install" says more.
INSTALL_TRAIN = "pip install torch==2.13.0 '.[train]' in a clone of charlstm (README: Install)"
INSTALL_SERVE = "pip install '.[serve]' in a clone of charlstm (README: Install)"


def fail(prog: str, message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(status)


def require_extra(prog: str, *modules: str, extra: str = "train", install: str = INSTALL_TRAIN) -> None:
    """Exit 2 with one line naming the extra if one of `modules` cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            fail(prog, f"{name} is not installed; {prog} needs charlstm's {extra} extra: {install}")


def run(command, prog: str) -> NoReturn:
    """Run a click command; turn every expected failure into one line on stderr and a status."""
    import click  # only here: the commands are click's, the rest of the kit is standard library

    _notes_as_lines(prog)
    try:
        status = command.main(prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        status = e.exit_code
    except click.ClickException as e:
        fail(prog, f"{e.format_message()} (see {prog} --help)")
    except BadInput as e:
        fail(prog, str(e))
    except WriteFailed as e:
        fail(prog, str(e), EXIT_FAILED)
    except (KeyboardInterrupt, click.Abort):
        fail(prog, "interrupted", EXIT_INTERRUPTED)
    sys.exit(status or 0)


def _notes_as_lines(prog: str) -> None:
    """charlstm's Notes on stderr as `prog: note: ...`, one line each; other warnings as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Note):
            print(f"{prog}: note: {one_line(str(message))}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """Stop quietly, status 0, when the reader of stdout goes away (`| head -c 20`)."""
    try:
        yield
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's last flush is quiet too
