"""The scene spec's ``camera:`` section -> a ``Trajectory`` with exactly the render's frames.

``resolve_camera`` is the entry point ``spec.py`` calls; ``build_trajectory`` turns any
``Keyframes`` (from a reader, a preset or inline keyframes) into the render's cameras and is also
what ``mirage trajectory`` uses.

The ``camera:`` mapping holds exactly one source key:
    keyframes: [...]          inline keyframes (schema in keyframes.py)
    trajectory: path.yaml     a trajectory YAML (keyframes or a preset)
    preset: orbit             a preset, its parameters in the same mapping (presets.py)
    colmap: sparse/0          a COLMAP sparse model folder (text or binary)
    realestate10k: clip.txt   a RealEstate10K camera file
    nerfstudio: path.json     a nerfstudio camera_path.json or transforms.json
    json: path.json           a canonical trajectory JSON
    spatia: case_1            a Spatia camera folder (w2c.txt + intrinsics.txt), or its w2c.txt
and options: ``order: name|id`` (COLMAP), ``timing: even|constant_speed``,
``interpolation: spline|linear``, ``units: metres|arbitrary`` and ``scale: S|assume-median-depth``
(``mirage_cli.depth.scene_scale``; a number S multiplies the path's positions). Relative paths resolve
against the spec's folder.

A Spatia folder holds exactly one camera per frame: its number of cameras must equal the render's
``frames`` unless ``resample: true`` (spatia only) asks to spread them evenly over the frames.

Intrinsics: the spec's top-level ``intrinsics`` (``{fov}`` vertical degrees, or ``{fx, fy, cx, cy}``
pixels at the render size) override the source's; otherwise the source's own intrinsics are
rescaled to the render size (``intrinsics.rescale_K``); with neither, a vertical fov of 60 degrees.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, ProblemList
from mirage_cli.base.limits import MAX_FPS, MAX_FRAMES, MAX_SIDE, MIN_FPS
from mirage_cli.base.options import DEFAULT_FPS, DEFAULT_FRAMES, DEFAULT_RESOLUTION
from mirage_cli.base.values import unknown_keys
from mirage_cli.camera.from_video import SAMPLES, estimate_video_cameras
from mirage_cli.camera.interpolate import INTERPOLATIONS, TIMINGS, resample
from mirage_cli.camera.intrinsics import (
    DEFAULT_VERTICAL_FOV_DEG,
    K_from_vertical_fov,
    intrinsics_override,
    rescale_K,
)
from mirage_cli.camera.keyframes import Keyframes, parse_keyframes
from mirage_cli.camera.presets import PRESETS, preset_keyframes, preset_parameters
from mirage_cli.camera.readers import check_choice, read_camera_file
from mirage_cli.camera.scale import check_scale_options, path_scale
from mirage_cli.camera.trajectory import Trajectory

log = logging.getLogger(__name__)

SOURCE_KEYS = ("keyframes", "trajectory", "preset", "colmap", "realestate10k", "nerfstudio", "json", "spatia", "video")
OPTION_KEYS = ("order", "timing", "interpolation", "units", "scale", "resample", "samples")
_FILE_KIND = {"trajectory": "trajectory", "colmap": "colmap", "realestate10k": "realestate10k",
              "nerfstudio": "nerfstudio", "json": "json", "spatia": "spatia"}


def _key_and_sample_times(keys: Keyframes, frames: int, fps: float, problems: ProblemList,
                          field: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Keyframe times and the render's sample times in one unit, or None after a coverage problem."""
    n = len(keys)
    if keys.time_unit is None:
        if n == 1 or frames == 1:
            return np.arange(n, dtype=np.float64), np.zeros(frames)
        return np.linspace(0.0, frames - 1.0, n), np.arange(frames, dtype=np.float64)
    t = keys.times
    where = f" in {keys.file}" if keys.file and keys.kind != "keyframes" else ""
    if keys.time_unit == "frame":
        ok = True
        if t[0] != 0:
            problems.add(field, f"the first keyframe{where} is at frame {t[0]:g}; frame 0 needs a camera "
                                f"(put the first keyframe at frame: 0)")
            ok = False
        if t[-1] < frames - 1:
            problems.add(field, f"keyframes{where} end at frame {t[-1]:g} but frames: {frames} needs cameras up to "
                                f"frame {frames - 1}; add a keyframe at frame {frames - 1} or render at most "
                                f"{int(t[-1]) + 1} frames")
            ok = False
        return (t, np.arange(frames, dtype=np.float64)) if ok else None
    ok = True
    needed = (frames - 1) / fps
    if t[0] != 0:
        problems.add(field, f"the first keyframe{where} is at time {t[0]:g} s; time 0 needs a camera")
        ok = False
    if t[-1] < needed - 1e-9:
        problems.add(field, f"keyframes{where} end at time {t[-1]:g} s but {frames} frames at {fps:g} fps need "
                            f"cameras up to {needed:.6g} s; add a keyframe at time {needed:.6g} or render at most "
                            f"{int(math.floor(t[-1] * fps + 1e-9)) + 1} frames")
        ok = False
    return (t, np.arange(frames, dtype=np.float64) / fps) if ok else None


def _keyframe_K(keys: Keyframes, width: int, height: int) -> np.ndarray:
    """Per-keyframe K (float64 [K, 3, 3]) at width x height from the source's own intrinsics."""
    n = len(keys)
    if keys.K is not None:
        return rescale_K(keys.K, keys.size, (width, height))
    fov = np.full(n, DEFAULT_VERTICAL_FOV_DEG) if keys.fov is None else np.where(
        np.isnan(keys.fov), DEFAULT_VERTICAL_FOV_DEG, keys.fov)
    return np.stack([K_from_vertical_fov(float(f), width, height) for f in fov])


def build_trajectory(keys: Keyframes, *, frames: int, fps: float, width: int, height: int,
                     K_override: np.ndarray | None = None, timing: str | None = None,
                     interpolation: str | None = None, problems: ProblemList | None = None,
                     field: str = "camera") -> Trajectory:
    """Resample ``keys`` to exactly ``frames`` cameras at ``width`` x ``height`` and ``fps``.

    Keyframes at frame indices are sampled at 0..frames-1; at times in seconds at i / fps; without
    times they are spread evenly over the frames. ``timing``/``interpolation`` default to the
    source's own (trajectory YAML) or "even"/"spline".

    Args:
        K_override: float [3, 3] pixels at width x height for every frame, or None.
        problems: collector for coverage problems (named ``field``); a fresh one when None.
    Raises:
        InputError: the keyframes cannot cover the requested frames (says what is needed).
        ValueError: frames < 1, fps <= 0 or a size <= 0 (the caller validates these first).
    """
    if frames < 1 or fps <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"frames, fps, width, height must be positive, got {frames}, {fps}, {width}, {height}")
    own = problems is None
    problems = ProblemList(keys.file) if own else problems
    times = _key_and_sample_times(keys, frames, fps, problems, field)
    if times is None:
        if own:
            raise InputError(problems.items)
        return None
    key_t, sample_t = times
    K_keys = None if K_override is not None else _keyframe_K(keys, width, height)
    world_from_cam, K = resample(key_t, keys.world_from_cam, sample_t, timing=timing or keys.timing or "even",
                                 interpolation=interpolation or keys.interpolation or "spline", K=K_keys)
    if K_override is not None:
        K = np.repeat(np.asarray(K_override, dtype=np.float64)[None], frames, axis=0)  # [N, 3, 3]
    bad = np.flatnonzero(~(np.isfinite(world_from_cam).all(axis=(1, 2)) & np.isfinite(K).all(axis=(1, 2))))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:5]) + (f" and {bad.size - 5} more" if bad.size > 5 else "")
        problems.add(field, f"interpolating the keyframes gives cameras with NaN or inf at frame{'s' if bad.size > 1 else ''} "
                            f"{shown}: the keyframe values are too large or too close together")
        if own:
            raise InputError(problems.items)
        return None
    return Trajectory(world_from_cam=world_from_cam, K=K, width=int(width), height=int(height), fps=float(fps))


def resolve_camera(section: dict, *, spec_file: str, base_dir: Path, width: int, height: int, frames: int,
                   fps: float, intrinsics: dict | None, line_of: Callable[[str], int | None]) -> Trajectory:
    """The spec's ``camera:`` mapping -> a Trajectory of exactly ``frames`` cameras.

    Args:
        section: the YAML-parsed ``camera:`` value (module docstring lists its keys).
        spec_file: the spec's path, used in problems about the spec itself.
        base_dir: folder that relative camera paths resolve against (the spec's folder).
        width, height, frames, fps: the render's (already validated, all > 0).
        intrinsics: the spec's top-level ``intrinsics`` mapping, or None.
        line_of: field name (e.g. "camera.keyframes[2].position") -> its line in the spec, or None.
    Returns:
        Trajectory with ``frames`` cameras at width x height, fps ``fps``.
    Raises:
        InputError: every problem found, each naming the file (the spec, or the camera file when the
        problem is inside it), the field (``camera.…`` / ``intrinsics.…``) and the line where known.
    """
    problems = ProblemList(spec_file, "", line_of)
    K_override = intrinsics_override(intrinsics, width, height, problems)
    cam = ProblemList(spec_file, "camera", line_of)
    keys = _camera_keys(section, base_dir, cam)
    problems.items.extend(cam.items)
    if keys is not None and not problems:
        if keys.kind == "keyframes" and intrinsics is not None and keys.fov is not None:
            problems.add("intrinsics", "both top-level intrinsics and per-keyframe fov are given; remove one")
        else:
            src = next(k for k in SOURCE_KEYS if k in section)
            why = _frame_count_problem(keys, frames, section.get("resample") is True)
            if why:
                problems.add(f"camera.{src}", why)
                raise InputError(problems.items)
            trajectory = build_trajectory(keys, frames=frames, fps=fps, width=width, height=height,
                                          K_override=K_override, timing=section.get("timing"),
                                          interpolation=section.get("interpolation"), problems=problems,
                                          field=f"camera.{src}")
            if trajectory is not None and not problems:
                S = path_scale(section)
                if S != 1.0:
                    moved = trajectory.world_from_cam.copy()
                    moved[:, :3, 3] *= S
                    trajectory = Trajectory(moved, trajectory.K, trajectory.width, trajectory.height, trajectory.fps)
                return trajectory
    raise InputError(problems.items)


def camera_section_problems(section: dict, *, spec_file: str, base_dir: Path, line_of: Callable[[str], int | None]) -> list:
    """The problems of the spec's ``camera:`` mapping that do not depend on the render's size, length or
    fps (its keys, options and source, the source's file read): reported with the spec's other problems
    when those values are themselves refused, so that one pass names every problem."""
    cam = ProblemList(spec_file, "camera", line_of)
    _camera_keys(section, base_dir, cam)
    return cam.items


def _frame_count_problem(keys: Keyframes, frames: int, resample: bool) -> str | None:
    """Why a source of one camera per frame (Spatia) does not fit ``frames``, or None."""
    if keys.kind != "spatia" or resample or len(keys) == frames:
        return None
    return (f"{keys.file} has {len(keys):,} cameras but frames is {frames:,}: Spatia gives exactly one camera per "
            f"frame; set frames: {len(keys)}, give {frames} lines in the file, or set resample: true in the camera "
            f"section to spread the {len(keys):,} cameras evenly over {frames:,} frames")


def _camera_keys(section, base_dir: Path, problems: ProblemList) -> Keyframes | None:
    """Validate the ``camera:`` mapping and read its source; problems named ``camera.<key>``."""
    if not isinstance(section, dict):
        problems.add("", f"expected a mapping with one source ({', '.join(SOURCE_KEYS)}), got "
                         f"{type(section).__name__}")
        return None
    sources = [k for k in SOURCE_KEYS if k in section]
    params = ()
    if isinstance(section.get("preset"), str) and section["preset"] in PRESETS:
        params = tuple(preset_parameters(section["preset"]))
    unknown_keys(section, SOURCE_KEYS + OPTION_KEYS + params, problems, "")
    check_choice(section, "timing", TIMINGS, problems)
    check_choice(section, "interpolation", INTERPOLATIONS, problems)
    check_choice(section, "order", ("name", "id"), problems)

    scale_problems = ProblemList(problems.file, "", problems.line_of)
    check_scale_options(section, scale_problems)
    problems.items.extend(scale_problems.items)
    if len(sources) != 1:
        why = "no camera source" if not sources else f"more than one camera source ({', '.join(sources)})"
        problems.add("", f"{why}: give exactly one of {', '.join(SOURCE_KEYS)}")
        for src in sources:  # still report what is wrong inside each
            _read_source(section, src, params, base_dir, problems)
        return None
    if "samples" in section and sources[0] != "video":
        problems.add("samples", "'samples' only applies to a video source (frames sampled from the clip)")
    elif "samples" in section and (type(section["samples"]) is not int or section["samples"] < 3):
        problems.add("samples", f"expected a whole number of frames, at least 3, got {section['samples']!r:.40}")
    if "order" in section and sources[0] != "colmap":
        problems.add("order", "'order' only applies to a colmap source")
    if "resample" in section and not isinstance(section["resample"], bool):
        problems.add("resample", f"expected true or false, got {type(section['resample']).__name__} {section['resample']!r:.40}")
    elif "resample" in section and sources[0] != "spatia":
        problems.add("resample", "'resample' only applies to a spatia source (one camera per frame); other sources "
                                 "are always sampled at the render's frames")
    return _read_source(section, sources[0], params, base_dir, problems)


def _read_source(section: dict, src: str, params: tuple, base_dir: Path, problems: ProblemList) -> Keyframes | None:
    """Keyframes of one source key of the ``camera:`` mapping, or None after adding problems."""
    if src == "keyframes":
        return parse_keyframes(section["keyframes"], problems, name="keyframes")
    if src == "preset":
        given = {k: v for k, v in section.items() if k in params}
        items = preset_keyframes(section["preset"], given, problems, where="")
        if items is None:
            return None
        return parse_keyframes(items, problems, name="preset")
    value = section[src]
    if not isinstance(value, str) or not value.strip():
        problems.add(src, f"expected a path (string), got {type(value).__name__} {value!r}")
        return None
    path = Path(value)
    path = path if path.is_absolute() else Path(base_dir) / path
    if not os.path.exists(path):
        problems.add(src, f"not found: {path}")
        return None
    if src in ("trajectory", "realestate10k", "nerfstudio", "json") and os.path.isdir(path):
        problems.add(src, f"is a folder, expected a file: {path}")
        return None
    if src == "colmap" and not os.path.isdir(path):
        problems.add(src, f"expected a COLMAP model folder, got a file: {path}")
        return None
    if src == "video":
        samples = section.get("samples", SAMPLES)
        if type(samples) is not int or samples < 3:
            return None  # refused above
        try:
            return estimate_video_cameras(path, samples, field="camera.video", log=log.info,
                                          before_reconstructing=log.warning).keyframes
        except InputError as e:
            problems.items.extend(e.problems)
            return None
    try:
        return read_camera_file(path, _FILE_KIND[src], order=section.get("order", "name")
                                if section.get("order") in ("name", "id") else "name")
    except InputError as e:
        problems.items.extend(e.problems)
        return None


def load_trajectory(source: str | Path, *, frames: int | None = None, fps: float | None = None,
                    width: int | None = None, height: int | None = None, order: str = "name") -> Trajectory:
    """Read any camera file or COLMAP folder and resample it (what ``mirage trajectory`` shows).

    Defaults: the source's own frame count (121 for presets and keyframes without frame/time),
    fps (24 if unknown) and size (1280x704 if unknown). Kind is detected from the extension and,
    for .json, the content.

    Raises:
        InputError: unreadable or invalid source, bad options, or a path that cannot cover ``frames``.
    """
    check_sampling(frames=frames, fps=fps, width=width, height=height)
    return sample_keyframes(read_camera_file(Path(source), order=order), frames=frames, fps=fps, width=width, height=height)


def check_sampling(*, frames: int | None, fps: float | None, width: int | None, height: int | None) -> None:
    """Refuse (InputError, every problem) sampling options out of their limits."""
    problems = ProblemList(None)
    for name, value, limit in (("--frames", frames, MAX_FRAMES), ("--width", width, MAX_SIDE), ("--height", height, MAX_SIDE)):
        if value is not None and not 1 <= value <= limit:
            problems.add(name, f"must be between 1 and {limit:,}, got {value}")
    if fps is not None and not MIN_FPS <= fps <= MAX_FPS:
        problems.add("--fps", f"must be between {MIN_FPS:g} and {MAX_FPS:g}, got {fps:g}")
    if (width is None) != (height is None):
        problems.add("--width/--height", "give both --width and --height, or neither")
    if problems:
        raise InputError(problems.items)


def sample_keyframes(keys: Keyframes, *, frames: int | None = None, fps: float | None = None, width: int | None = None,
                     height: int | None = None) -> Trajectory:
    """``keys`` sampled at ``frames`` frames (default: the source's own count, or what its times in
    seconds cover at ``fps``, else 121), ``fps`` (the source's, else 24) and ``width`` x ``height``
    (the source's, else 1280x704); the options are checked first (``check_sampling``)."""
    problems = ProblemList(None)
    size = (width, height) if width is not None else (keys.native_size or DEFAULT_RESOLUTION)
    fps = fps or keys.fps or DEFAULT_FPS
    if frames is None and keys.frames is None and keys.time_unit == "second":
        covered = math.floor(keys.times[-1] * fps + 1e-9) + 1  # every frame the keyframe times cover
        if covered > MAX_FRAMES:
            problems.add("--frames", f"the keyframe times cover {covered:,} frames at {fps:g} fps, more than the limit "
                                     f"of {MAX_FRAMES:,}; give --frames or a lower --fps")
            raise InputError(problems.items)
        frames = covered
    frames = frames or keys.frames or DEFAULT_FRAMES
    if frames > MAX_FRAMES:
        problems.add("--frames", f"the source has {frames:,} frames, more than the limit of {MAX_FRAMES:,}; give --frames")
        raise InputError(problems.items)
    return build_trajectory(keys, frames=int(frames), fps=float(fps), width=int(size[0]), height=int(size[1]),
                            field="keyframes")
