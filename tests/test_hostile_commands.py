"""The command-line surfaces beside the spec (tests/hostile_commands.py) keep the bad-input contract:
every named case ends in its exit code with one ``error:`` line holding the expected text, within
seconds and bounded memory, and no fuzz case prints a traceback or more than one error line.

Each case runs in this process through the real CLI (typer's runner); memory is measured with
tracemalloc (Python and numpy allocations), time with the wall clock. The benchmark
``benchmarks/hostile_inputs.py --commands`` runs the same cases in child processes, with their RSS.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hostile_commands import CommandCase, fuzz_command_cases, named_command_cases, verdict_problem
from render_helpers import cli

NAMED = named_command_cases()
FUZZ = fuzz_command_cases(40, seed=0)
HANG_SECONDS = 120.0
"""A hang guard, not a speed bound (a busy machine must not fail the suite): how fast bad input is
refused is measured by benchmarks/hostile_inputs.py."""
MAX_TRACED_BYTES = 300 << 20


def run_case(case: CommandCase, folder) -> str:
    """Run ``case`` in ``folder``; returns its stderr after checking the verdict and the bounds."""
    folder.mkdir(parents=True, exist_ok=True)
    args = case.build(folder)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = cli(*args)
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{case.name}: {result.exception!r}"
    problem = verdict_problem(case, result.exit_code, result.stderr)
    assert problem is None, f"{case.name}: {problem}"
    assert seconds < HANG_SECONDS, f"{case.name}: still running after {seconds:.1f} s"
    assert peak < MAX_TRACED_BYTES, f"{case.name}: {peak / 2**20:.0f} MiB"
    return result.stderr


@pytest.mark.parametrize("case", NAMED, ids=[c.name for c in NAMED])
def test_named_command_case(case, tmp_path):
    run_case(case, tmp_path / "case")


@pytest.mark.parametrize("case", FUZZ, ids=[c.name for c in FUZZ])
def test_fuzz_command_case(case, tmp_path):
    run_case(case, tmp_path / "case")


def test_fuzz_cases_are_reproducible():
    assert [c.name for c in fuzz_command_cases(40, seed=0)] == [c.name for c in FUZZ]
