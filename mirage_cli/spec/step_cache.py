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

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mirage_cli.base.errors import InputError, Problem, ProblemList, did_you_mean
from mirage_cli.base.files import file_problem, read_text
from mirage_cli.base.json_text import JsonTextError, load_json
from mirage_cli.base.limits import MAX_CALIBRATION_BYTES, MAX_STEPS
from mirage_cli.spec.checks import valid
from mirage_cli.spec.fields import _NONE, FieldSpec

METHODS = ("none", "first-block", "mag", "taylorseer")
DEFAULT_THRESHOLD = {"first-block": 0.05, "mag": 0.06}
DEFAULT_INTERVAL = 5
CALIBRATION_FORMAT = "mirage-magcache-calibration"
CALIBRATION_VERSION = 1
CALIBRATION_KEYS = ("format", "version", "model", "resolution", "chunk_frames", "steps", "shift", "guidance", "seed", "ratios",
                    "ratios_by_branch", "created")
"""The keys of a calibration file (``mirage_cli.measure.calibration``); ``ratios`` is the curve used,
``steps``, ``model`` and ``resolution`` are compared with the render, the others are a record."""
MAX_RATIO = 100.0
"""Largest per-step magnitude ratio a calibration may hold: measured curves stay near 1 (0.5 to 1.5);
a larger value comes from a damaged or edited file."""
_RESOLUTION = re.compile(r"[1-9][0-9]*x[1-9][0-9]*")

STEP_CACHE_FIELDS: dict[str, FieldSpec] = {
    "method": FieldSpec((str,), "none", " | ".join(METHODS)),
    "threshold": FieldSpec((int, float, _NONE), None, "first-block / mag: skip while the change is under this (null: 0.05 / 0.06)"),
    "interval": FieldSpec((int, _NONE), None, f"taylorseer: compute every Nth step, predict the others (null: {DEFAULT_INTERVAL})"),
    "calibration": FieldSpec((str, _NONE), None, "mag: the calibration file `mirage calibrate-cache` wrote"),
}
"""The fields of the spec's ``step_cache:`` section."""


@dataclass(frozen=True)
class Calibration:
    """A checked MagCache calibration file: one magnitude ratio per denoising step (so ``steps`` is
    their count), and the model and resolution ("WxH") it was measured for (None where the file does
    not record them)."""

    path: Path
    ratios: tuple[float, ...]
    model: str | None = None
    resolution: str | None = None

    @property
    def steps(self) -> int:
        return len(self.ratios)


@dataclass(frozen=True)
class StepCacheSettings:
    """The spec's ``step_cache:`` section, validated. ``threshold`` / ``interval`` are resolved to the
    method's default (None where the method has no such knob); ``calibration``: a resolved path or None;
    ``ratios``: the calibration's per-step magnitude ratios (mag only); ``measured``: the checked
    calibration file (mag only), for the fit checks (``calibration_misfit``)."""

    method: str = "none"
    threshold: float | None = None
    interval: int | None = None
    calibration: Path | None = None
    ratios: tuple[float, ...] = ()
    measured: Calibration | None = field(default=None, compare=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def summary(self) -> dict:
        return {"method": self.method, "threshold": self.threshold, "interval": self.interval,
                "calibration": None if self.calibration is None else str(self.calibration)}


def _shown(value) -> str:
    """``value`` for a message: a long number or text shortened, control characters escaped."""
    text = repr(value) if isinstance(value, str) and not value.isprintable() else str(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text):,} characters)"


def _ratio_problem(value) -> str | None:
    """Why ``value`` is not a usable per-step magnitude ratio, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {type(value).__name__} {_shown(repr(value))}"
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    if not 0.0 < value <= MAX_RATIO:
        return f"must be > 0 and at most {MAX_RATIO:g} (a ratio of residual magnitudes, near 1), got {value}"
    return None


def _content_problem(data) -> tuple[str | None, str] | None:
    """(field, what is wrong) for the first problem of a parsed calibration file, or None."""
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        return "format", f"is not a MagCache calibration (expected format {CALIBRATION_FORMAT!r}, written by `mirage calibrate-cache`)"
    if data.get("version", CALIBRATION_VERSION) != CALIBRATION_VERSION:
        return "version", f"is {data.get('version')!r}; this mirage reads version {CALIBRATION_VERSION}: run `mirage calibrate-cache` again"
    unknown = [key for key in data if key not in CALIBRATION_KEYS]
    if unknown:
        return _shown(unknown[0]), (f"unknown key{did_you_mean(unknown[0], CALIBRATION_KEYS)}: `mirage calibrate-cache` writes "
                                 f"{', '.join(CALIBRATION_KEYS)}")
    ratios = data.get("ratios")
    if not isinstance(ratios, list) or not 1 <= len(ratios) <= MAX_STEPS:
        shown = f"a list of {len(ratios)}" if isinstance(ratios, list) else type(ratios).__name__
        return "ratios", f"expected a list of 1 to {MAX_STEPS} per-step ratios, got {shown}"
    for i, ratio in enumerate(ratios):
        why = _ratio_problem(ratio)
        if why:
            return f"ratios[{i}]", why
    steps = data.get("steps", len(ratios))
    if isinstance(steps, bool) or not isinstance(steps, int):
        return "steps", f"expected the number of denoising steps (an integer), got {type(steps).__name__} {_shown(repr(steps))}"
    if steps != len(ratios):
        return "steps", f"says {steps} steps but the file holds {len(ratios)} ratios (one per step): run `mirage calibrate-cache` again"
    branches = data.get("ratios_by_branch", {})
    if not isinstance(branches, dict):
        return "ratios_by_branch", f"expected a mapping of CFG branch to its ratios, got {type(branches).__name__}"
    for name, curve in branches.items():
        if not isinstance(curve, list) or len(curve) != len(ratios):
            return f"ratios_by_branch.{name}", f"expected a list of {len(ratios)} ratios (one per step, as `ratios`)"
        for i, ratio in enumerate(curve):
            why = _ratio_problem(ratio)
            if why:
                return f"ratios_by_branch.{name}[{i}]", why
    for key in ("model", "resolution"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            return key, f"expected a non-empty string, got {type(data[key]).__name__} {_shown(repr(data[key]))}"
    if "resolution" in data and not _RESOLUTION.fullmatch(data["resolution"]):
        return "resolution", f"expected WIDTHxHEIGHT, got {_shown(repr(data['resolution']))}"
    return None


def read_calibration(path: Path) -> Calibration:
    """The checked content of a calibration file (a regular file of at most
    ``limits.MAX_CALIBRATION_BYTES``, JSON nested at most ``limits.MAX_NESTING`` deep).

    Raises:
        InputError: naming the file and the field of the first thing wrong with it.
    """

    def fail(field: str | None, message: str, line: int | None = None) -> InputError:
        return InputError([Problem(file=str(path), field=field, message=message, line=line)])

    text = read_text(path, MAX_CALIBRATION_BYTES, field="step_cache.calibration")
    try:
        data = load_json(text)
    except JsonTextError as e:
        raise fail(None, e.message, e.line) from None
    problem = _content_problem(data)
    if problem is not None:
        raise fail(*problem)
    model, resolution = data.get("model"), data.get("resolution")
    return Calibration(path=path, ratios=tuple(float(r) for r in data["ratios"]), model=model, resolution=resolution)


def check_step_cache(values: dict, base_dir: Path, problems: ProblemList) -> StepCacheSettings | None:
    """Choices, ranges and the calibration file of the type-checked ``step_cache:`` values; the settings, or None."""
    start = len(problems.items)
    method, threshold, interval, calibration = values["method"], values["threshold"], values["interval"], values["calibration"]
    if valid(method) and method not in METHODS:
        problems.add("step_cache.method", f"must be one of {', '.join(METHODS)}, got {_shown(repr(method))}{did_you_mean(method, METHODS)}")
    if method == "none":  # the knobs of a switched-off cache are left alone (``--cache none`` on a spec with one)
        threshold = interval = calibration = None
    if valid(threshold) and threshold is not None:
        if method not in DEFAULT_THRESHOLD:
            problems.add("step_cache.threshold", f"is a knob of first-block and mag, not of {method} (taylorseer: interval)")
        elif not 0 < threshold <= 1:  # NaN and inf were refused with the types; no float() of a huge integer
            problems.add("step_cache.threshold", f"must be in (0, 1], got {_shown(threshold)}")
    if valid(interval) and interval is not None:
        if method != "taylorseer":
            problems.add("step_cache.interval", f"is the knob of taylorseer, not of {method} (first-block, mag: threshold)")
        elif not 1 <= interval <= 50:
            problems.add("step_cache.interval", f"must be between 1 and 50, got {_shown(interval)}")
    path, measured = None, None
    if method == "mag" and calibration is None:
        problems.add("step_cache.calibration", "mag needs a calibration of the model at this size: run `mirage calibrate-cache SCENE "
                                               "--out FILE` once, then give step_cache.calibration: FILE (or --cache-calibration FILE)")
    elif valid(calibration) and calibration is not None:
        path = Path(calibration).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if method != "mag":
            problems.add("step_cache.calibration", f"is used by mag only, not by {method}")
        else:
            measured = _checked_calibration(path, problems)
    if len(problems.items) > start or not valid(*values.values()):
        return None
    if method == "none":
        return StepCacheSettings()
    return StepCacheSettings(
        method=method,
        threshold=float(threshold if threshold is not None else DEFAULT_THRESHOLD[method]) if method in DEFAULT_THRESHOLD else None,
        interval=int(interval if interval is not None else DEFAULT_INTERVAL) if method == "taylorseer" else None,
        calibration=path,
        ratios=() if measured is None else measured.ratios,
        measured=measured,
    )


def _checked_calibration(path: Path, problems: ProblemList) -> Calibration | None:
    """The calibration file at ``path``, or None after adding its problem: one that cannot be a file
    (missing, a FIFO, a device, too large) is the spec's ``step_cache.calibration`` problem; one in its
    content is the calibration file's."""
    why = file_problem(path, MAX_CALIBRATION_BYTES)
    if why is not None:
        shown = str(path) if str(path).isprintable() else repr(str(path))  # a NUL or a newline is not printed raw
        problems.add("step_cache.calibration", f"{shown}: {why}")
        return None
    try:
        return read_calibration(path)
    except InputError as e:
        problems.extend(e.problems)
        return None


def calibration_misfit(cache: StepCacheSettings, *, steps: int, resolution: str, model: str | None = None,
                       scene: Path | None = None) -> Problem | None:
    """Why the MagCache calibration of ``cache`` does not fit a render of ``steps`` steps at
    ``resolution`` ("WxH") of ``model`` (the run config's: the model id, or ``preset:NAME``; None: not
    known yet, not compared), or None. A recorded value that differs is a misfit (diffusers would
    silently stretch a curve of another length over the steps); an unrecorded model or resolution is
    not compared. One problem names every difference and the command that measures a fitting curve."""
    measured = cache.measured
    if cache.method != "mag" or measured is None:
        return None
    theirs, mine, flags = [], [], []
    if measured.steps != steps:
        theirs.append(f"{measured.steps} steps")
        mine.append(f"{steps} steps")
        flags.append(f"--steps {steps}")
    if measured.resolution is not None and measured.resolution != resolution:
        theirs.append(f"resolution {measured.resolution}")
        mine.append(f"resolution {resolution}")
        flags.append(f"--resolution {resolution}")
    if model is not None and measured.model is not None and measured.model != model:
        theirs.append(f"model {measured.model!r}")
        mine.append(f"model {model!r}")
        if model.startswith("preset:"):
            flags.append(f"--preset {model.removeprefix('preset:')}")
    if not theirs:
        return None
    command = " ".join(["mirage calibrate-cache", str(scene) if scene is not None else "SCENE", *flags, "--out FILE"])
    return Problem(file=str(measured.path), field="step_cache.calibration",
                   message=f"was measured for {' and '.join(theirs)}, this render uses {' and '.join(mine)}: run `{command}` "
                           "(with the render's model) and give that file, or render without the mag cache")


def check_calibration_fits(cache: StepCacheSettings, *, steps: int, resolution: str, model: str | None = None,
                           scene: Path | None = None) -> None:
    """Refuse (exit 2) a MagCache calibration that does not fit the render (``calibration_misfit``)."""
    problem = calibration_misfit(cache, steps=steps, resolution=resolution, model=model, scene=scene)
    if problem is not None:
        raise InputError(problem)
