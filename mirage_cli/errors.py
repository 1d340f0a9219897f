"""Errors that carry the process exit code of DESIGN.md section 6.

Library code raises these; only ``cli.py`` turns them into messages and exit codes.

- ``InputError`` (exit 2): bad usage or bad input. Carries one or more ``Problem`` lines, each
  naming the file, the field (with the YAML line where known) and what is wrong.
- ``RenderError`` (exit 1): a runtime failure that is not the user's input.
- ``Interrupted`` (exit 75): stopped by a signal after a checkpoint was saved.
"""

from __future__ import annotations

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

    def __init__(self, problems: "list[Problem] | Problem | str", *, file: str | None = None, field: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(file=file, field=field, message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RenderError(MirageError):
    """A runtime failure (exit 1): out of memory, disk full, a model that fails to run."""

    exit_code = EXIT_FAILURE


class Interrupted(MirageError):
    """Stopped by a signal with a checkpoint saved (exit 75); the same command resumes."""

    exit_code = EXIT_INTERRUPTED
