"""Crash reports: the traceback of an internal error (a bug in mirage), written where a user finds it.

An internal error is any exception that is not a ``MirageError`` (those are the user's input or
the machine's state, with their own exit codes). Its full traceback goes into a text file, with
the command line and package versions, and the one-line message on stderr names that file:

- inside a render, the run directory: ``RUN/crash-<UTC time>-<pid>.txt``
  (the session opens ``reports_into(run_dir)`` once the directory exists);
- anywhere else, a temporary file: ``$TMPDIR/mirage-crash-<random>.txt``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from mirage_cli.base.atomic import atomic_write_text
from mirage_cli.base.errors import MirageError
from mirage_cli.base.versions import package_versions

_ATTRIBUTE = "mirage_crash_report"
MAX_MESSAGE_CHARS = 300
"""The exception's message on stderr is cut here (the file holds all of it)."""


def _report_text(error: BaseException) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    lines = [
        "mirage internal error (a bug in mirage: please report it with this file)",
        f"time (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}",
        f"command: {' '.join(sys.argv)}",
        f"working directory: {os.getcwd()}",
        f"versions: {versions}",
        "",
        *traceback.format_exception(type(error), error, error.__traceback__),
    ]
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def write_crash_report(error: BaseException, directory: str | os.PathLike | None = None) -> Path:
    """Write ``error``'s report once and return its path (the same path when called again).

    Args:
        error: the exception, with its traceback.
        directory: where to write (a run directory); None or unwritable: a temporary file.
    """
    existing = getattr(error, _ATTRIBUTE, None)
    if existing is not None:
        return existing
    text = _report_text(error)
    path = None
    if directory is not None:
        candidate = Path(directory) / f"crash-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.txt"
        with contextlib.suppress(OSError):
            atomic_write_text(candidate, text)
            path = candidate
    if path is None:
        fd, name = tempfile.mkstemp(prefix="mirage-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        path = Path(name)
    with contextlib.suppress(AttributeError, TypeError):  # some built-in exceptions take no attributes
        setattr(error, _ATTRIBUTE, path)
    return path


@contextlib.contextmanager
def reports_into(directory: str | os.PathLike) -> Iterator[None]:
    """Within the block, an internal error's report is written into ``directory``, then re-raised."""
    try:
        yield
    except (MirageError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        write_crash_report(e, directory)
        raise


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, cut at ``MAX_MESSAGE_CHARS``."""
    message = " ".join(str(error).split())
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + " ..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
