"""The scale of a camera path: its units (``camera.units``) and the factor ``camera.scale`` multiplies
its positions by. How the start depth gets the same units is ``mirage_cli.depth.scene_scale``.
"""

from __future__ import annotations

import math

from mirage_cli.base.errors import ProblemList

UNITS = ("metres", "arbitrary")
METRIC_BY_DEFAULT = ("keyframes", "preset", "trajectory")
"""Camera sources whose positions are metres unless ``camera.units`` says otherwise."""
ASSUME = "assume-median-depth"


def path_units(section: dict) -> str:
    """``camera.units``, or the source's default."""
    if isinstance(section, dict) and section.get("units") in UNITS:
        return section["units"]
    source = next((k for k in METRIC_BY_DEFAULT if isinstance(section, dict) and k in section), None)
    return "metres" if source else "arbitrary"


def check_scale_options(section: dict, problems: ProblemList) -> None:
    """``camera.units`` and ``camera.scale`` values (problems named ``camera.units`` / ``camera.scale``)."""
    if not isinstance(section, dict):
        return
    if "units" in section and section["units"] not in UNITS:
        problems.add("camera.units", f"must be one of {', '.join(UNITS)}, got {section['units']!r}")
    if "scale" in section:
        value = section["scale"]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (value == ASSUME or (number and math.isfinite(value) and 0 < value <= 1e6)):
            problems.add("camera.scale", f"must be a positive number (multiplies the camera path) or {ASSUME!r}, got {value!r}")


def path_scale(section: dict) -> float:
    value = section.get("scale") if isinstance(section, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 1.0
