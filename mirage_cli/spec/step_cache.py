"""The spec's ``step_cache:`` section: skip transformer work between denoising steps with one of
diffusers' step caches (``mirage_cli.denoise.step_cache`` applies them).

``method``: ``none`` (default) | ``first-block`` (First Block Cache: when the first block's residual
barely changed since the last step, the other blocks' cached residual is reused; knob ``threshold``,
diffusers' default 0.05) | ``mag`` (MagCache: skips whole steps while the accumulated error predicted
by a calibrated curve of residual magnitudes stays under ``threshold``, default 0.06; needs
``calibration:``, a file ``mirage calibrate-cache`` writes) | ``taylorseer`` (TaylorSeer: every
``interval``-th step computed, the steps between predicted by a Taylor expansion of the attention
outputs; default 5). Higher threshold / interval: faster, further from the uncached render.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from mirage_cli.base.errors import InputError, Problem, ProblemList, did_you_mean
from mirage_cli.spec.checks import valid
from mirage_cli.spec.fields import _NONE, FieldSpec

METHODS = ("none", "first-block", "mag", "taylorseer")
DEFAULT_THRESHOLD = {"first-block": 0.05, "mag": 0.06}
DEFAULT_INTERVAL = 5
CALIBRATION_FORMAT = "mirage-magcache-calibration"

STEP_CACHE_FIELDS: dict[str, FieldSpec] = {
    "method": FieldSpec((str,), "none", " | ".join(METHODS)),
    "threshold": FieldSpec((int, float, _NONE), None, "first-block / mag: skip while the change is under this (null: 0.05 / 0.06)"),
    "interval": FieldSpec((int, _NONE), None, f"taylorseer: compute every Nth step, predict the others (null: {DEFAULT_INTERVAL})"),
    "calibration": FieldSpec((str, _NONE), None, "mag: the calibration file `mirage calibrate-cache` wrote"),
}
"""The fields of the spec's ``step_cache:`` section."""


@dataclass(frozen=True)
class StepCacheSettings:
    """The spec's ``step_cache:`` section, validated. ``threshold`` / ``interval`` are resolved to the
    method's default (None where the method has no such knob); ``calibration``: a resolved path or None;
    ``ratios``: the calibration's per-step magnitude ratios (mag only)."""

    method: str = "none"
    threshold: float | None = None
    interval: int | None = None
    calibration: Path | None = None
    ratios: tuple[float, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def summary(self) -> dict:
        return {"method": self.method, "threshold": self.threshold, "interval": self.interval,
                "calibration": None if self.calibration is None else str(self.calibration)}


def read_calibration(path: Path) -> dict:
    """A calibration file's content; ValueError saying what is wrong with it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise ValueError(f"is not a MagCache calibration (expected format {CALIBRATION_FORMAT!r}, written by `mirage calibrate-cache`)")
    ratios = data.get("ratios")
    if not isinstance(ratios, list) or len(ratios) < 2 or not all(isinstance(r, (int, float)) and math.isfinite(r) for r in ratios):
        raise ValueError("holds no list of finite per-step ratios")
    return data


def check_step_cache(values: dict, base_dir: Path, problems: ProblemList) -> StepCacheSettings | None:
    """Choices, ranges and the calibration file of the type-checked ``step_cache:`` values; the settings, or None."""
    start = len(problems.items)
    method, threshold, interval, calibration = values["method"], values["threshold"], values["interval"], values["calibration"]
    if valid(method) and method not in METHODS:
        problems.add("step_cache.method", f"must be one of {', '.join(METHODS)}, got {method!r}{did_you_mean(method, METHODS)}")
    if method == "none":  # the knobs of a switched-off cache are left alone (``--cache none`` on a spec with one)
        threshold = interval = calibration = None
    if valid(threshold) and threshold is not None:
        if method not in DEFAULT_THRESHOLD:
            problems.add("step_cache.threshold", f"is a knob of first-block and mag, not of {method} (taylorseer: interval)")
        elif not (math.isfinite(float(threshold)) and 0.0 < float(threshold) <= 1.0):
            problems.add("step_cache.threshold", f"must be in (0, 1], got {threshold}")
    if valid(interval) and interval is not None:
        if method != "taylorseer":
            problems.add("step_cache.interval", f"is the knob of taylorseer, not of {method} (first-block, mag: threshold)")
        elif not 1 <= interval <= 50:
            problems.add("step_cache.interval", f"must be between 1 and 50, got {interval}")
    path, ratios = None, ()
    if method == "mag" and calibration is None:
        problems.add("step_cache.calibration", "mag needs a calibration of the model at this size: run `mirage calibrate-cache SCENE "
                                               "--out FILE` once, then give step_cache.calibration: FILE (or --cache-calibration FILE)")
    elif valid(calibration) and calibration is not None:
        path = Path(calibration).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if method != "mag":
            problems.add("step_cache.calibration", f"is used by mag only, not by {method}")
        else:
            try:
                ratios = tuple(float(r) for r in read_calibration(path)["ratios"])
            except ValueError as exc:
                problems.add("step_cache.calibration", f"{path} {exc}")
    if len(problems.items) > start or not valid(*values.values()):
        return None
    if method == "none":
        return StepCacheSettings()
    return StepCacheSettings(
        method=method,
        threshold=float(threshold if threshold is not None else DEFAULT_THRESHOLD[method]) if method in DEFAULT_THRESHOLD else None,
        interval=int(interval if interval is not None else DEFAULT_INTERVAL) if method == "taylorseer" else None,
        calibration=path,
        ratios=ratios,
    )


def check_calibration_fits(cache: StepCacheSettings, model: str, resolution: str) -> None:
    """Refuse (exit 2) a MagCache calibration measured on another model (``model``, the run config's) or
    at another size (``resolution``, "WxH")."""
    if cache.method != "mag" or cache.calibration is None:
        return
    data = read_calibration(cache.calibration)
    mine = {"model": model, "resolution": resolution}
    for key, value in mine.items():
        if data.get(key) != value:
            raise InputError(Problem(file=str(cache.calibration), field="step_cache.calibration",
                                     message=f"was measured for {key} {data.get(key)!r}, this render uses {value!r}: run "
                                             "`mirage calibrate-cache` with this render's model and resolution"))
