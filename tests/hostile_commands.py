"""Hostile inputs on the command line: the surfaces beside the scene spec (``mirage eval``, trained
weights, Spatia camera folders, per-chunk prompts, step-cache calibration files, the VRAM budget,
``mirage batch``, COLMAP models).

``tests/hostile_inputs.py`` covers what a scene spec and the files it names can hold; a case here is
a whole command: ``build(folder)`` writes what the command needs into an empty folder and returns the
``mirage`` arguments. ``expect`` is a piece of text the one ``error:`` line must contain (the file,
the field and what is wrong); ``None`` marks a fuzz case, which may end in exit 0 or in exit 2 with
one line. ``exit_code`` is 2 for bad input.

The cases live in one module per surface (``hostile_eval``, ``hostile_weights``, ``hostile_cameras``,
``hostile_settings``), each listing ``NAMED_CASES`` and ``fuzz_cases(n, seed)``; ``command_cases``
gathers them for ``tests/test_hostile_commands.py`` (in this process) and
``benchmarks/hostile_inputs.py`` (a child process each, as a user runs them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SURFACES = ("hostile_eval", "hostile_weights", "hostile_cameras", "hostile_settings")
"""The modules holding the cases, one per surface."""


@dataclass(frozen=True)
class CommandCase:
    """One command: ``build(folder) -> mirage arguments``; ``expect``: text its one error line must
    contain (None: a fuzz case, exit 0 or exit 2 with one line)."""

    name: str
    build: Callable[[Path], list[str]]
    expect: str | None
    exit_code: int = 2


def named_command_cases() -> list[CommandCase]:
    """Every surface's named cases."""
    return [case for module in SURFACES for case in importlib.import_module(module).NAMED_CASES]


def fuzz_command_cases(per_surface: int, seed: int = 0) -> list[CommandCase]:
    """``per_surface`` seeded fuzz cases of every surface that has a fuzzer."""
    cases = []
    for module in map(importlib.import_module, SURFACES):
        fuzz = getattr(module, "fuzz_cases", None)
        if fuzz is not None:
            cases += fuzz(per_surface, seed)
    return cases


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines of a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def verdict_problem(case: CommandCase, exit_code: int | None, stderr: str) -> str | None:
    """Why a command's outcome breaks the contract for ``case``, or None."""
    if exit_code is None:
        return "did not end within its time"
    if "Traceback" in stderr:
        return f"printed a traceback: {stderr.strip()[-300:]}"
    errors = error_lines(stderr)
    if case.expect is None:
        if exit_code == 0:
            return None
        if exit_code != 2 or len(errors) != 1:
            return f"exit {exit_code} with {len(errors)} error lines: {stderr.strip()[-300:]}"
        return None
    if exit_code != case.exit_code:
        return f"exit {exit_code}, expected {case.exit_code}: {stderr.strip()[-300:]}"
    if len(errors) != 1:
        return f"{len(errors)} error lines, expected one: {stderr.strip()[-500:]}"
    if case.expect not in errors[0]:
        return f"{case.expect!r} not in {errors[0]!r}"
    return None
