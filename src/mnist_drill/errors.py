"""Every error a user can cause, as one line that names the file, key or option and says what to do, and the exit
code each ends with; only the CLI prints them (`mnist-drill: error: <message>`) and picks exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable

# The exit codes of `mnist-drill`, for scripts and CI (README: "Exit codes").
EXIT_FAILED = 1  # a step, seed or trial ran and failed (diverged, crashed); the others still ran
EXIT_USAGE = 2  # a mistake in the command line, a config, the data or a run folder; nothing was trained
EXIT_STORAGE = 74  # an output could not be written (disk full, no permission): sysexits' EX_IOERR
EXIT_SIGINT = 130  # Ctrl-C: finished epochs are kept, --resume continues
EXIT_SIGTERM = 143  # SIGTERM: the same


Echo = Callable[[str], None]  # where progress lines go: print, or a worker's prefixing printer


def first_line(err: BaseException, *, named: bool = False) -> str:
    """The first line of an exception's message (its class name when it has none); `named`: after its class name."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text.splitlines()[0]}" if named else text.splitlines()[0]


class DrillError(Exception):
    """Something the user asked for cannot be done, in one line ready to print; built from that line alone (pickled)."""

    exit_code = EXIT_USAGE


class ConfigError(DrillError):
    """A config file, `--set` or `--vary` is wrong: names the file (or option) and the dotted key."""


class DataError(DrillError):
    """MNIST is missing, broken or cannot be downloaded."""


class UsageError(DrillError):
    """An option, device, run folder or input file cannot be used as asked."""


class StorageError(DrillError):
    """An output could not be written; what finished before it is intact."""

    exit_code = EXIT_STORAGE


class Terminated(BaseException):
    """SIGTERM, as the CLI raises it: unwinds like Ctrl-C (a BaseException, so no `except Exception` swallows it)."""


def report(err: BaseException) -> int:
    """Print the one line for a user-caused error and return its exit code."""
    print(f"mnist-drill: error: {err}", file=sys.stderr)
    return getattr(err, "exit_code", EXIT_FAILED)
