"""Errors that carry the process exit code (README, "Commands": 0 done, 1, 2, 75).

Library code raises these; only ``cli.py`` turns them into messages and exit codes.

- ``InputError`` (exit 2): bad usage or bad input. Carries one or more ``Problem`` lines, each
  naming the file, the field (with the YAML line where known) and what is wrong. Validation code
  collects them in a ``ProblemList`` and raises once, so the user sees every problem at once;
  ``did_you_mean`` adds the closest valid name to a message.
- ``RenderError`` (exit 1): a runtime failure that is not the user's input.
- ``Interrupted`` (exit 75): stopped by a signal after a checkpoint was saved.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 75


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input.

    Rendered as ``file:line: field: message`` (parts that are unknown are left out).
    """

    file: str | None
    field: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class MirageError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_FAILURE


class InputError(MirageError):
    """Bad usage or bad input (exit 2). ``problems`` lists every problem found."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem] | Problem | str, *, file: str | None = None, field: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(file=file, field=field, message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = condense(list(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


MAX_PROBLEMS_PER_FILE = 10
"""Problems listed per file; the rest are counted in one line (a broken 100,000-line file is not
100,000 lines of errors)."""


def condense(problems: list[Problem]) -> list[Problem]:
    """The same message at several places said once, naming the others; at most
    ``MAX_PROBLEMS_PER_FILE`` problems per file, then a count of the rest."""
    groups: dict[tuple, list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.file, p.message), []).append(p)
    merged = []
    for (file, message), same in groups.items():
        first = same[0]
        others = [p.field or (f"line {p.line}" if p.line is not None else None) for p in same[1:]]
        others = [o for o in dict.fromkeys(others) if o]
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            first = Problem(file=file, field=first.field, line=first.line, message=f"{message} (the same at {shown})")
        merged.append(first)
    out, per_file = [], {}
    for p in merged:
        per_file[p.file] = per_file.get(p.file, 0) + 1
        if per_file[p.file] <= MAX_PROBLEMS_PER_FILE:
            out.append(p)
    for file, count in per_file.items():
        if count > MAX_PROBLEMS_PER_FILE:
            out.append(Problem(file=file, field=None, message=f"... and {count - MAX_PROBLEMS_PER_FILE} more problems"))
    return out


class RenderError(MirageError):
    """A runtime failure (exit 1): out of memory, disk full, a model that fails to run."""

    exit_code = EXIT_FAILURE


class Interrupted(MirageError):
    """Stopped by a signal with a checkpoint saved (exit 75); the same command resumes."""

    exit_code = EXIT_INTERRUPTED


class ProblemList:
    """Collects the problems of one file; field names get a ``prefix`` and their YAML line.

    Args:
        file: the file the problems are about (None: the command line).
        prefix: prepended to every field name (``"camera"`` -> ``camera.keyframes[2]``).
        line_of: field name -> its line in the file, or None when unknown.
    """

    def __init__(self, file: str | None, prefix: str = "", line_of: Callable[[str], int | None] | None = None):
        self.file = file
        self.prefix = prefix
        self.line_of = line_of
        self.items: list[Problem] = []

    def full(self, name: str) -> str:
        """The field's full name: ``prefix.name`` (``prefix[i]`` for an index)."""
        if not self.prefix:
            return name
        if not name:
            return self.prefix
        return f"{self.prefix}{name}" if name.startswith("[") else f"{self.prefix}.{name}"

    def add(self, name: str, message: str) -> None:
        """Record that field ``name`` (relative to the prefix; "" for the prefix itself) is wrong."""
        f = self.full(name)
        line = self.line_of(f) if (self.line_of and f) else None
        self.items.append(Problem(file=self.file, field=f or None, message=message, line=line))

    def extend(self, problems: Iterable[Problem]) -> None:
        """Add problems found elsewhere (e.g. an ``InputError`` from a file this one points to)."""
        self.items.extend(problems)

    def raise_if_any(self) -> None:
        """Raise one ``InputError`` with every problem collected, if there is any."""
        if self.items:
            raise InputError(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the valid name closest to ``name``, or "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
