"""The scene spec's checkers, one per concern, each usable alone with a ``ProblemList``.

``load_plan`` (``mirage_cli.spec.plan``) runs them in order: fields and types, frame counts, numbers,
resolution, memory settings, files, camera. A field whose type is wrong is reported once and is
``INVALID`` for every later check, which then says nothing about it (one mistake, one message).
Every number is bounded (``mirage_cli.base.limits``) before anything is sized by it. The start image,
depth and mask are read in full by ``mirage_cli.render.inputs.preflight``, which ``mirage validate`` and
the render both run.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from mirage_cli.base.errors import InputError, ProblemList, did_you_mean
from mirage_cli.base.files import file_problem, output_problem
from mirage_cli.base.limits import (
    MAX_CHUNK_FRAMES_LIMIT,
    MAX_FPS,
    MAX_FRAMES,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    MAX_STEPS,
    MIN_FPS,
)
from mirage_cli.base.options import MAX_CHUNK_FRAMES, MemoryMode, PinMode
from mirage_cli.base.yaml_lines import text_number_hint
from mirage_cli.camera.source import resolve_camera
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.spec.branch_source import BranchSource, parse_branch_source, same_place
from mirage_cli.spec.fields import _NONE, FieldSpec, MemorySettings


class _Invalid:
    """The value of a field that was reported as wrong: later checks skip it."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID = _Invalid()
_MISSING = object()


def _type_name(types: tuple) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "true/false", dict: "mapping", list: "list", _NONE: "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


LIST_HINT = "; to give a list of one entry, start it with '- ' in YAML or write [{...}]"
"""Added when a mapping is given where a list is expected (the one-entry list without its ``-``)."""


def check_fields(data: dict, fields: dict[str, FieldSpec], problems: ProblemList, prefix: str = "") -> dict:
    """Unknown keys, missing required fields and types of a mapping; returns the values, defaults
    filled in and ``INVALID`` where a value was reported (wrong type, NaN or inf)."""
    values = {}
    for key in data:
        if key not in fields:
            problems.add(f"{prefix}{key}", f"unknown field{did_you_mean(key, fields)}")
    for name, spec in fields.items():
        value = data.get(name, _MISSING)
        if value is _MISSING:
            values[name] = spec.default
            if spec.required:
                problems.add(f"{prefix}{name}", f"required field is missing ({spec.doc})")
                values[name] = INVALID
        elif not isinstance(value, spec.types) or (isinstance(value, bool) and bool not in spec.types):
            problems.add(f"{prefix}{name}", f"expected {_type_name(spec.types)}, got {type(value).__name__} {_shown(value)}"
                                            f"{text_number_hint(value) if (int in spec.types or float in spec.types) else ''}"
                                            f"{LIST_HINT if isinstance(value, dict) and list in spec.types else ''}")
            values[name] = INVALID
        elif isinstance(value, float) and not math.isfinite(value):
            problems.add(f"{prefix}{name}", f"must be finite, got {value}")
            values[name] = INVALID
        else:
            values[name] = value
    return values


def valid(*values) -> bool:
    """None of ``values`` was reported as wrong."""
    return all(v is not INVALID for v in values)


def nearest_4k1(n: int) -> tuple[int, int]:
    """The valid frame counts (4k+1) just below and just above ``n``."""
    lo = max(1, ((n - 1) // 4) * 4 + 1)
    return lo, lo + 4


def check_frames(frames, chunk_frames, problems: ProblemList, default_chunk: int = MAX_CHUNK_FRAMES) -> tuple[int | None, int | None]:
    """``frames`` and ``chunk_frames`` are 4k+1 within the limits (chunks at least 5, at most
    ``frames``); returns (frames, chunk length) or None for each that is unusable
    (``chunk_frames`` null -> min(default_chunk, frames))."""
    good_frames = None
    if valid(frames):
        if not 1 <= frames <= MAX_FRAMES:
            problems.add("frames", f"must be between 1 and {MAX_FRAMES:,} (limits.MAX_FRAMES, four hours at 24 fps), got {frames:,}")
        elif (frames - 1) % 4:
            lo, hi = nearest_4k1(frames)
            problems.add("frames", f"must be 4k+1 (Wan2.2's VAE compresses time by 4), got {frames}; nearest valid: {lo} or {hi}")
        else:
            good_frames = frames
    if not valid(chunk_frames):
        return good_frames, None
    if chunk_frames is None:
        return good_frames, None if good_frames is None else min(default_chunk, good_frames)
    if not 5 <= chunk_frames <= MAX_CHUNK_FRAMES_LIMIT or (chunk_frames - 1) % 4:
        lo, hi = nearest_4k1(min(max(chunk_frames, 5), MAX_CHUNK_FRAMES_LIMIT))
        nearest = sorted({max(lo, 5), min(hi, MAX_CHUNK_FRAMES_LIMIT)})
        problems.add("chunk_frames", f"must be 4k+1 between 5 and {MAX_CHUNK_FRAMES_LIMIT}, got {chunk_frames}; "
                                     f"nearest valid: {' or '.join(map(str, nearest))}")
        return good_frames, None
    if good_frames is not None and chunk_frames > good_frames:
        problems.add("chunk_frames", f"{chunk_frames} exceeds frames ({good_frames}); use at most {good_frames} or leave it unset")
        return good_frames, None
    return good_frames, chunk_frames


def check_numbers(values: dict, problems: ProblemList) -> None:
    """Ranges of fps, steps, guidance, shift, seed, depth_scale and the prompts' lengths (a null, the
    method's default still to come, is left to ``fill_method_defaults``)."""

    def given(value) -> bool:
        return valid(value) and value is not None

    fps = values["fps"]
    if given(fps) and not MIN_FPS <= fps <= MAX_FPS:
        problems.add("fps", f"must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got {fps:g}")
    if given(values["steps"]) and not 1 <= values["steps"] <= MAX_STEPS:
        problems.add("steps", f"must be between 1 and {MAX_STEPS}, got {values['steps']}")
    if given(values["guidance"]) and not 0 <= values["guidance"] <= 100:
        problems.add("guidance", f"must be between 0 and 100, got {values['guidance']}")
    if given(values["shift"]) and not 0 < values["shift"] <= 100:
        problems.add("shift", f"must be > 0 and at most 100, got {values['shift']}")
    if given(values["seed"]) and not 0 <= values["seed"] < 2**63:
        problems.add("seed", f"must be in [0, 2^63), got {values['seed']}")
    if given(values["depth_scale"]) and not 0 < values["depth_scale"] <= 1e6:
        problems.add("depth_scale", f"must be > 0 and at most 1e6, got {values['depth_scale']}")
    for name in ("prompt", "negative_prompt"):
        text = values[name]
        if isinstance(text, str) and len(text) > MAX_PROMPT_CHARS:
            problems.add(name, f"is {len(text):,} characters, more than the limit of {MAX_PROMPT_CHARS:,}")
    if isinstance(values["prompt"], str) and not values["prompt"].strip():
        problems.add("prompt", "is empty")


_RESOLUTION_TEXT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_resolution(value) -> tuple[int, int] | str:
    """(width, height) or an error message. Accepts '1280x704', [1280, 704] or {width, height} of
    whole numbers only (no strings inside lists, no fractions: nothing is rounded)."""
    expected = f"expected WIDTHxHEIGHT (e.g. 1280x704), [width, height] or {{width, height}} of whole numbers, got {_shown(value)}"
    if isinstance(value, str):
        m = _RESOLUTION_TEXT.match(value)
        return (int(m.group(1)), int(m.group(2))) if m else expected
    if isinstance(value, list) and len(value) == 2:
        pair = value
    elif isinstance(value, dict) and set(value) == {"width", "height"}:
        pair = [value["width"], value["height"]]
    else:
        return expected
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        return expected
    return pair[0], pair[1]


def check_resolution(value, problems: ProblemList) -> tuple[int, int] | None:
    """(width, height): positive multiples of 32 (one transformer token is 32x32 px) within the limits."""
    if not valid(value):
        return None
    res = parse_resolution(value)
    if isinstance(res, str):
        problems.add("resolution", res)
        return None
    width, height = res
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        problems.add("resolution", f"{width}x{height} is beyond the limits: at most {MAX_SIDE} pixels per side and "
                                   f"{MAX_PIXELS:,} pixels per frame (Wan2.2 renders 1280x704)")
        return None
    bad = [f"{name} {x}" for name, x in zip(("width", "height"), res) if x <= 0 or x % 32]
    if bad:
        fix = "x".join(str(max(32, round(x / 32) * 32)) for x in res)
        problems.add("resolution", f"{' and '.join(bad)} not a positive multiple of 32 (one transformer token is 32x32 px); e.g. {fix}")
        return None
    return res


def check_memory(values: dict, problems: ProblemList) -> MemorySettings | None:
    """Choices and ranges of the type-checked ``memory:`` values; the settings, or None."""
    start = len(problems.items)
    for name, choice in (("mode", MemoryMode), ("pin", PinMode)):
        if valid(values[name]) and values[name] not in choice.values():
            options = choice.values()
            hint = did_you_mean(values[name], options)
            problems.add(f"memory.{name}", f"must be one of {', '.join(options)}, got {values[name]!r}{hint}")
    if valid(values["pin_until"]) and not 0.0 <= float(values["pin_until"]) <= 1.0:
        problems.add("memory.pin_until", f"must be in [0, 1], got {values['pin_until']}")
    if valid(values["voxel_size"]) and values["voxel_size"] is not None and not 0 < values["voxel_size"] <= 1e6:
        problems.add("memory.voxel_size", f"must be > 0 and at most 1e6, got {values['voxel_size']}")
    if valid(values["capacity"]) and values["capacity"] is not None and not 1 <= values["capacity"] <= 2**31:
        problems.add("memory.capacity", f"must be between 1 and 2^31, got {values['capacity']}")
    if valid(values["dynamic_threshold"]) and values["dynamic_threshold"] is not None and not values["dynamic_threshold"] > 0:
        problems.add("memory.dynamic_threshold", f"must be positive or null, got {values['dynamic_threshold']}")
    if len(problems.items) > start or not valid(*values.values()):
        return None
    return MemorySettings.from_fields(values)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEPTH_SUFFIXES = (".npy", ".png")
SUFFIX_HINTS = {
    ".npz": ": an .npz archive may hold several arrays; save the depth map alone with numpy.save(path, depth)",
    ".exr": ": convert the depth to a float32 .npy (numpy.save) or a 16-bit PNG with depth_scale",
    ".tif": ": convert it to a 16-bit PNG or a .npy",
    ".tiff": ": convert it to a 16-bit PNG or a .npy",
}
"""Why a near-miss file type is refused, and what to write instead."""


def resolve_path(base: Path, value: str) -> Path:
    """A spec path: ``~`` expanded, relative paths against the spec's folder."""
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p)


def _check_input_file(values: dict, name: str, base: Path, suffixes: tuple[str, ...], problems: ProblemList) -> Path | None:
    """The resolved path of file field ``name`` when it is a readable regular file of a known type."""
    value = values[name]
    if not isinstance(value, str):
        return None
    path = resolve_path(base, value)
    if path.suffix.lower() not in suffixes:
        hint = SUFFIX_HINTS.get(path.suffix.lower(), "")
        problems.add(name, f"unsupported file type {path.suffix!r} of {path} (expected {', '.join(suffixes)}){hint}")
        return None
    why = file_problem(path, MAX_IMAGE_BYTES)
    if why is not None:
        problems.add(name, f"{path}: {why}")
        return None
    return path


def check_files(values: dict, base: Path, problems: ProblemList) -> tuple[Path | None, Path | None, Path | None]:
    """The start image, depth and mask are readable regular files of a known type (their content is
    read by ``inputs.preflight``); returns their resolved paths (None if not given or unusable)."""
    image = _check_input_file(values, "image", base, IMAGE_SUFFIXES, problems)
    depth = _check_input_file(values, "depth", base, DEPTH_SUFFIXES, problems)
    mask = _check_input_file(values, "mask", base, IMAGE_SUFFIXES, problems)
    if depth is not None and depth.suffix.lower() == ".npy" and valid(values["depth_scale"]) and values["depth_scale"] is not None:
        problems.add("depth_scale", "scales a 16-bit PNG depth only; a .npy depth holds scene units already: remove "
                                    "depth_scale (or multiply the array by it)")
    return image, depth, mask


def resolve_output(values: dict, base: Path, spec_stem: str, problems: ProblemList) -> Path:
    """The run directory (``output``, relative to the spec's folder; default ``runs/<spec stem>`` in the
    spec's folder, so that specs of the same name in different folders never share a run) can be
    created and written."""
    output = resolve_path(base, values["output"]) if isinstance(values["output"], str) else base / "runs" / spec_stem
    why = output_problem(output, directory=True)
    if why is not None and isinstance(values["output"], str):
        problems.add("output", why)
    return output


def resolve_branch_source(values: dict, base: Path, output: Path, problems: ProblemList,
                          given: BranchSource | None = None) -> BranchSource | None:
    """Where the render branches from: ``given`` (``--from``, parsed) when not None, else the spec's
    ``from:`` (``RUN`` or ``RUN@CHUNK``, RUN relative to the spec's folder), else None. The parent's
    checkpoint and the agreement of the prefix are checked when a render starts
    (``mirage_cli.render.branch``: a branch that has started resumes without its parent); here the
    syntax, and that RUN is not the spec's own run directory (``--from`` may name it: ``--out`` decides
    where the render goes, and ``check_branch`` refuses that one)."""
    if given is not None:
        return given
    if not isinstance(values["from"], str):
        return None
    try:
        source = parse_branch_source(values["from"], "from", base)
    except ValueError as e:
        problems.add("from", str(e))
        return None
    if same_place(source.parent) == same_place(output):
        problems.add("from", "names this spec's own run directory; a branch renders into another (output:)")
    return source


def describe_camera_source(section) -> str:
    """A short description like ``colmap: path`` or ``keyframes (4 inline)``."""
    if not isinstance(section, dict):
        return "camera"
    for key, value in section.items():
        if key == "keyframes" and isinstance(value, list):
            return f"keyframes ({len(value)} inline)"
        if key == "preset":
            return f"preset: {value}"
        if key in ("trajectory", "colmap", "realestate10k", "nerfstudio", "json", "spatia", "video"):
            return f"{key}: {value}"
    return "camera"


def check_camera(values: dict, size: tuple[int, int], frames: int, base: Path, problems: ProblemList) -> Trajectory | None:
    """The ``camera:`` section sampled at the render's frames (``mirage_cli.camera.source``), or None."""
    width, height = size
    try:
        return resolve_camera(
            values["camera"],
            spec_file=problems.file,
            base_dir=base,
            width=width,
            height=height,
            frames=frames,
            fps=float(values["fps"]),
            intrinsics=values["intrinsics"],
            line_of=problems.line_of,
        )
    except InputError as e:
        problems.extend(e.problems)
        return None
