"""Side-by-side measurement: variants of one render alternated round by round, so drift in the
machine's speed hits every variant alike; numbers are medians over the measured rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

Variant = TypeVar("Variant")


def alternating_rounds(variants: dict[str, Variant], render_one: Callable[[Variant, Path], dict], *, repeat: int,
                       folder: Path, on_run: Callable[[str, int], None] | None = None) -> dict[str, list[dict]]:
    """A warm-up round (round -1, discarded), then ``repeat`` rounds each rendering every variant once,
    in order, into ``folder / "<name>-<round>"``; returns each variant's measured rows.

    ``render_one(variant, out)`` renders and returns its row; ``on_run(name, round)`` is told before each
    render (progress).
    """
    if repeat < 1:
        raise ValueError(f"repeat: expected at least 1, got {repeat}")
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(-1, repeat):
        for name, variant in variants.items():
            if on_run:
                on_run(name, r)
            row = render_one(variant, folder / f"{name}-{r}")
            if r >= 0:
                rows[name].append(row)
    return rows


def medians(rows: dict[str, list[dict]], keys: Iterable[str] | None = None) -> dict[str, dict]:
    """Each variant's median of ``keys`` (default: every key of its first row) over its rows."""
    return {name: {key: statistics.median(row[key] for row in found) for key in (keys or found[0])}
            for name, found in rows.items()}
