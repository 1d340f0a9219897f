"""Checks of single spec values that every section shares: unknown keys, finite numbers."""

from __future__ import annotations

import math
from typing import Any

from mirage_cli.base.errors import ProblemList, did_you_mean
from mirage_cli.base.yaml_lines import text_number_hint


def unknown_keys(mapping: dict, valid, problems: ProblemList, where: str) -> None:
    """Add a problem for every key of ``mapping`` that is not in ``valid``."""
    for key in mapping:
        if key not in valid:
            name = f"{where}.{key}" if where else str(key)
            problems.add(name, f"unknown key '{key}'{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}")


def describe_value(value: Any) -> str:
    """A value as a short phrase for a problem message: its type and (cut) repr."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def as_number(value: Any) -> tuple[float | None, str | None]:
    """(float, None) for a finite number, else (None, why)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"expected a number, got {describe_value(value)}{text_number_hint(value)}"
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range
        return None, f"is an integer of {len(str(abs(value)))} digits: too large"
    if not math.isfinite(number):
        return None, f"is {value} (NaN or inf)"
    return number, None
