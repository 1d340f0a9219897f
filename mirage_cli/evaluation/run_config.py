"""The chunks of a run directory, from its ``run.json`` (written by every render): where each chunk ends
and the next begins, for the seam measure of ``mirage eval``.

``run.json`` is a file on disk like any other input: it is read within a size bound, and the values
eval uses (``config.frames``, ``config.chunk_frames``, ``config.first_chunk_frames``) are checked as
a scene spec's are (whole numbers, 4k+1, within ``base.limits``) before any chunk is planned, so a
damaged or edited file is refused naming ``run.json`` and the field instead of planning forever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mirage_cli.base.errors import InputError, Problem, ProblemList
from mirage_cli.base.files import read_text
from mirage_cli.base.json_text import JsonTextError, load_json
from mirage_cli.base.limits import MAX_FRAMES, MAX_TEXT_BYTES
from mirage_cli.rundir.layout import RUN_JSON
from mirage_cli.spec.checks import check_frames
from mirage_cli.spec.plan import plan_chunks


@dataclass(frozen=True)
class RunChunks:
    """``frames`` of the render and ``boundaries``, the frames where a chunk ends and the next begins,
    as ``path`` (the run.json) records them."""

    path: Path
    frames: int
    boundaries: list[int]


def _whole_number(config: dict, name: str, problems: ProblemList) -> int | None:
    """``config[name]`` when it is a whole number (a JSON integer, not a boolean), else None with a problem."""
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(name, f"must be a whole number of frames, got {json.dumps(value)[:40]}")
        return None
    return value


def _first_chunk(config: dict, frames: int, problems: ProblemList) -> int | None:
    """``config.first_chunk_frames`` (absent when it equals chunk_frames): 4k+1, at least 5 (or all of
    ``frames``) and at most ``frames``."""
    if config.get("first_chunk_frames") is None:
        return None
    first = _whole_number(config, "first_chunk_frames", problems)
    if first is None:
        return None
    if not (5 <= first <= frames or first == frames) or (first - 1) % 4:
        problems.add("first_chunk_frames", f"must be 4k+1 between 5 and frames ({frames}), got {first}")
        return None
    return first


def read_run_config(path: Path) -> dict:
    """The ``config`` mapping of a ``run.json``; InputError naming the file otherwise."""
    text = read_text(path, MAX_TEXT_BYTES)
    try:
        recorded = load_json(text)
    except JsonTextError as e:
        raise InputError(Problem(file=str(path), field=None, line=e.line, message=e.message)) from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        raise InputError(Problem(file=str(path), field="config", message="is missing: not a run configuration written by "
                                                                          "`mirage render`"))
    return recorded["config"]


def run_chunks(run: Path) -> RunChunks:
    """The frames and chunk boundaries ``run/run.json`` records (module docstring)."""
    path = run / RUN_JSON
    config = read_run_config(path)
    problems = ProblemList(str(path), "config")
    frames, chunk_frames = _whole_number(config, "frames", problems), _whole_number(config, "chunk_frames", problems)
    problems.raise_if_any()
    frames, chunk_frames = check_frames(frames, chunk_frames, problems)  # a spec's rules: 4k+1, chunks of 5 to 241
    problems.raise_if_any()
    first = _first_chunk(config, frames, problems)
    problems.raise_if_any()
    assert frames is not None and chunk_frames is not None and frames <= MAX_FRAMES  # else a problem was raised
    chunks = plan_chunks(frames, chunk_frames, first)
    return RunChunks(path, frames, [chunk.start for chunk in chunks[1:]])
