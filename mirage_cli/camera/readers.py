"""Readers: one per camera-path source, each returning ``Keyframes`` in our convention.

Each reader collects every problem in its file and raises one ``InputError`` listing them all
(file, field, line where known, what is wrong). Conversions happen in ``conventions.py`` and
``intrinsics.py``; readers only parse and validate.

Sources:
- COLMAP sparse model (text or binary), through pycolmap; ordered by image name (natural order,
  frame_9 before frame_10) or by image id.
- RealEstate10K .txt: first line the video URL, then ``timestamp fx fy cx cy 0 0`` + 3x4 cam_from_world.
- nerfstudio ``camera_path.json`` (viewer render path) or ``transforms.json`` (dataset), OpenGL.
- canonical trajectory JSON (docs/CONVENTIONS.md).
- trajectory YAML: ``keyframes:`` or ``preset:`` + parameters (see ``keyframes.py``, ``presets.py``).
- Spatia: a folder with ``w2c.txt`` (+ ``intrinsics.txt``), see ``spatia.py``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mirage_cli.base.errors import InputError, Problem, ProblemList
from mirage_cli.base.files import read_text
from mirage_cli.base.json_text import JsonTextError, load_json
from mirage_cli.base.limits import MAX_FPS, MAX_KEYFRAMES, MAX_TEXT_BYTES, MAX_YAML_BYTES, MIN_FPS
from mirage_cli.base.values import as_number, unknown_keys
from mirage_cli.base.yaml_lines import load_yaml_with_lines
from mirage_cli.camera.colmap import read_colmap
from mirage_cli.camera.conventions import opengl_to_opencv, realestate10k_row_to_camera
from mirage_cli.camera.interpolate import INTERPOLATIONS, TIMINGS
from mirage_cli.camera.intrinsics import K_from_params, K_problem, fov_problem, from_corner_origin, rescale_K
from mirage_cli.camera.keyframes import Keyframes, as_matrix, parse_keyframes, pose_problem
from mirage_cli.camera.presets import PRESETS, preset_keyframes, preset_parameters
from mirage_cli.camera.spatia import W2C_NAME, read_spatia

log = logging.getLogger(__name__)

KINDS = ("colmap", "realestate10k", "nerfstudio", "json", "trajectory", "spatia")

MAX_IMAGE_SIDE = 100_000
"""Largest image side a camera file may state (its intrinsics are in pixels of that size)."""


def _check_count(count: int, field: str, problems: ProblemList) -> None:
    """Refuse more than ``limits.MAX_KEYFRAMES`` cameras (then raise at once: nothing is read further)."""
    if count > MAX_KEYFRAMES:
        problems.add(field, f"{count:,} cameras: more than the limit of {MAX_KEYFRAMES:,}")
        problems.raise_if_any()


def _read_text(path: Path, field: str | None = None, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A camera file's text: a regular file within the size limit (``mirage_cli.base.files``)."""
    return read_text(path, max_bytes, field=field)


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return load_json(text)
    except JsonTextError as e:
        raise InputError([Problem(file=str(path), field=None, line=e.line, message=e.message)]) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- RealEstate10K ---------------------------------------------------------------------------------


def read_realestate10k(path: str | Path) -> Keyframes:
    """Read a RealEstate10K camera file.

    Line 1 is the video URL (any first line that is not 19 numbers is skipped); every further
    non-empty line is converted by ``conventions.realestate10k_row_to_camera``. Intrinsics are
    normalized, so ``K`` is returned for a 1 x 1 image (``size=(1, 1)``) and rescaled to the
    render size later. fps comes from the median timestamp step (microseconds).
    """
    path = Path(path)
    text = _read_text(path)
    problems = ProblemList(str(path))
    stamps, poses, Ks = [], [], []
    previous = None  # the previous camera line's timestamp
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(x) for x in parts]
        except ValueError:
            values = None
        if lineno == 1 and (values is None or len(values) != 19):
            continue  # the source video URL
        if values is None or len(values) != 19:
            bad = next((i for i, x in enumerate(parts) if not _is_number(x)), None)
            got = f"got {len(parts)} fields" if bad is None else f"field {bad + 1} is not a number: {parts[bad][:20]!r}"
            problems.items.append(Problem(file=str(path), field=None, line=lineno,
                                          message=f"expected 19 numbers (timestamp fx fy cx cy 0 0 + 3x4 cam_from_world), {got}"))
            continue
        if not all(math.isfinite(v) for v in values):
            problems.items.append(Problem(file=str(path), field=None, line=lineno, message="contains NaN or inf"))
            continue
        ts, world_from_cam, K = realestate10k_row_to_camera(values, 1, 1)
        why = pose_problem(world_from_cam) or K_problem(K)
        if why is None and previous is not None and ts <= previous:
            why = f"timestamp {ts:.0f} does not follow the previous line's ({previous:.0f}): timestamps must increase"
        previous = ts
        if why:
            problems.items.append(Problem(file=str(path), field=None, line=lineno, message=why))
            continue
        if len(stamps) >= MAX_KEYFRAMES:
            problems.items.append(Problem(file=str(path), field=None, line=lineno, message=f"more than {MAX_KEYFRAMES:,} cameras"))
            break
        stamps.append(ts)
        poses.append(world_from_cam)
        Ks.append(K)
    if not problems and not poses:
        problems.add("", "no camera lines (expected 19 numbers per line after the URL line)")
    problems.raise_if_any()
    fps = None
    if len(stamps) > 1:
        dt = float(np.median(np.diff(stamps)))
        if dt > 0:
            fps = round(1e6 / dt, 3)
    return Keyframes(world_from_cam=np.stack(poses), K=np.stack(Ks), size=(1, 1), fps=fps, frames=len(poses),
                     kind="realestate10k", file=str(path))


# --- nerfstudio ------------------------------------------------------------------------------------


def _ns_matrix(value, problems: ProblemList, field: str) -> np.ndarray | None:
    m, why = as_matrix(value, 4, 4)
    if why:
        problems.add(field, why)
        return None
    world_from_cam = opengl_to_opencv(m)
    why = pose_problem(world_from_cam)
    if why:
        problems.add(field, why)
        return None
    return world_from_cam


def _ns_intrinsics(d: dict, problems: ProblemList, where: str, size) -> np.ndarray | None:
    """K (ours) from nerfstudio fl_x, fl_y, cx, cy (corner origin) in ``d``, or None if absent."""
    if "fl_x" not in d and "fl_y" not in d and "camera_angle_x" not in d:
        return None
    vals = {}
    for key in ("fl_x", "fl_y", "cx", "cy", "camera_angle_x"):
        if key in d:
            v, why = as_number(d[key])
            if why:
                problems.add(f"{where}{key}", why)
                return None
            vals[key] = v
    if size is None:
        problems.add(f"{where}w", "image size 'w' and 'h' are needed with fl_x/fl_y/cx/cy")
        return None
    w, h = size
    if "fl_x" not in vals:
        angle = vals["camera_angle_x"]
        if not 0.0 < angle < math.radians(179.0):
            problems.add(f"{where}camera_angle_x", f"must be between 0 and 179 degrees (in radians), got {angle:g}")
            return None
        vals["fl_x"] = 0.5 * w / math.tan(angle / 2.0)
    fx = vals["fl_x"]
    fy = vals.get("fl_y", fx)
    K = from_corner_origin(K_from_params(fx, fy, vals.get("cx", w / 2.0), vals.get("cy", h / 2.0)))
    why = K_problem(K)
    if why:
        problems.add(f"{where}fl_x", why)
        return None
    return K


def _optional_fps(data: dict, problems) -> float | None:
    """The file's ``fps`` if present and positive; a problem is recorded otherwise."""
    if "fps" not in data:
        return None
    fps, why = as_number(data["fps"])
    if why or not MIN_FPS <= fps <= MAX_FPS:
        problems.add("fps", why or f"must be between {MIN_FPS:g} and {MAX_FPS:g}, got {fps:g}")
        return None
    return fps


def _ns_size(d: dict, problems: ProblemList, where: str, wkey: str, hkey: str):
    if wkey not in d and hkey not in d:
        return None
    w, h = d.get(wkey), d.get(hkey)
    for key, v in ((wkey, w), (hkey, h)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_IMAGE_SIDE:
            problems.add(f"{where}{key}", f"expected a whole number of pixels between 1 and {MAX_IMAGE_SIDE:,}, got {v!r}")
            return None
    return int(w), int(h)


def read_nerfstudio(path: str | Path) -> Keyframes:
    """Read a nerfstudio ``camera_path.json`` or ``transforms.json``.

    camera_path.json: ``camera_path: [{camera_to_world: 16 floats row-major (OpenGL), fov: vertical
    degrees}]``, ``render_width``, ``render_height``, ``fps``. transforms.json: ``frames:
    [{transform_matrix: 4x4 (OpenGL), file_path}]`` with ``fl_x, fl_y, cx, cy, w, h`` at top level or
    per frame (corner-origin principal point), frames kept in file order. Poses go through
    ``conventions.opengl_to_opencv``.
    """
    path = Path(path)
    data = _read_json(path)
    problems = ProblemList(str(path))
    if not isinstance(data, dict) or ("camera_path" not in data and "frames" not in data):
        problems.add("", "not a nerfstudio file: expected 'camera_path' (camera_path.json) or 'frames' (transforms.json)")
        problems.raise_if_any()
    if "camera_path" in data:
        return _read_ns_camera_path(path, data, problems)
    return _read_ns_transforms(path, data, problems)


def _read_ns_camera_path(path: Path, data: dict, problems: ProblemList) -> Keyframes:
    cam_type = data.get("camera_type", "perspective")
    if cam_type != "perspective":
        problems.add("camera_type", f"only 'perspective' cameras are supported, got {cam_type!r}")
    size = _ns_size(data, problems, "", "render_width", "render_height")
    fps = _optional_fps(data, problems)
    items = data["camera_path"]
    if not isinstance(items, list) or not items:
        problems.add("camera_path", "expected a non-empty list of cameras")
        problems.raise_if_any()
    _check_count(len(items), "camera_path", problems)
    poses, fovs = [], []
    for i, item in enumerate(items):
        where = f"camera_path[{i}]"
        if not isinstance(item, dict) or "camera_to_world" not in item:
            problems.add(where, "expected a mapping with 'camera_to_world' (16 numbers) and 'fov'")
            continue
        m = _ns_matrix(item["camera_to_world"], problems, f"{where}.camera_to_world")
        fov = item.get("fov", math.nan)
        if "fov" in item:
            why = fov_problem(fov)
            if why:
                problems.add(f"{where}.fov", why)
                continue
        if m is not None:
            poses.append(m)
            fovs.append(float(fov))
    problems.raise_if_any()
    fov_arr = np.asarray(fovs)
    return Keyframes(world_from_cam=np.stack(poses), fov=None if np.all(np.isnan(fov_arr)) else fov_arr, fps=fps,
                     frames=len(poses), native_size=size, kind="nerfstudio", file=str(path))


def _read_ns_transforms(path: Path, data: dict, problems: ProblemList) -> Keyframes:
    size = _ns_size(data, problems, "", "w", "h")
    top_K = _ns_intrinsics(data, problems, "", size)
    items = data["frames"]
    if not isinstance(items, list) or not items:
        problems.add("frames", "expected a non-empty list of frames")
        problems.raise_if_any()
    _check_count(len(items), "frames", problems)
    poses, Ks, names = [], [], []
    for i, item in enumerate(items):
        where = f"frames[{i}]"
        if not isinstance(item, dict) or "transform_matrix" not in item:
            problems.add(where, "expected a mapping with 'transform_matrix' (4x4)")
            continue
        m = _ns_matrix(item["transform_matrix"], problems, f"{where}.transform_matrix")
        fsize = _ns_size(item, problems, f"{where}.", "w", "h") or size
        K = _ns_intrinsics(item, problems, f"{where}.", fsize)
        if K is not None and fsize != size and size is not None:
            K = rescale_K(K, fsize, size)
        K = K if K is not None else top_K
        if m is not None:
            poses.append(m)
            Ks.append(K)
            names.append(str(item.get("file_path", "")))
    problems.raise_if_any()
    have = [K is not None for K in Ks]
    if any(have) and not all(have):
        problems.add("frames", "some frames have intrinsics (fl_x/fl_y) and some do not")
        problems.raise_if_any()
    K_arr = np.stack(Ks) if all(have) else None
    if K_arr is not None and size is None:
        size = _ns_size(items[0], problems, "frames[0].", "w", "h")
    return Keyframes(world_from_cam=np.stack(poses), K=K_arr, size=size if K_arr is not None else None,
                     frames=len(poses), native_size=size, kind="nerfstudio", file=str(path), names=names)


# --- canonical JSON --------------------------------------------------------------------------------


def read_canonical_json(path: str | Path) -> Keyframes:
    """Read the canonical trajectory JSON (docs/CONVENTIONS.md):
    ``{"fps": f, "width": W, "height": H, "frames": [{"world_from_cam": 4x4 rows, "K": 3x3 rows}]}``,
    OpenCV convention, K in pixels at W x H with integer pixel centres.
    """
    path = Path(path)
    data = _read_json(path)
    problems = ProblemList(str(path))
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        problems.add("frames", "not a canonical trajectory JSON: expected an object with a 'frames' list")
        problems.raise_if_any()
    unknown_keys(data, ("fps", "width", "height", "frames"), problems, "")
    size = _ns_size(data, problems, "", "width", "height")
    if size is None and "width" not in data:
        problems.add("width", "missing 'width' and 'height' (the size K is in pixels of)")
    fps = _optional_fps(data, problems)
    if not data["frames"]:
        problems.add("frames", "no frames: need at least one camera")
    _check_count(len(data["frames"]), "frames", problems)
    poses, Ks = [], []
    for i, item in enumerate(data["frames"]):
        where = f"frames[{i}]"
        if not isinstance(item, dict):
            problems.add(where, "expected an object with 'world_from_cam' and 'K'")
            continue
        unknown_keys(item, ("world_from_cam", "K"), problems, where)
        m, why = as_matrix(item.get("world_from_cam"), 4, 4)
        why = why or pose_problem(m)
        if why:
            problems.add(f"{where}.world_from_cam", why)
        K, whyk = as_matrix(item.get("K"), 3, 3)
        whyk = whyk or K_problem(K)
        if whyk:
            problems.add(f"{where}.K", whyk)
        if not why and not whyk:
            poses.append(m)
            Ks.append(K)
    problems.raise_if_any()
    return Keyframes(world_from_cam=np.stack(poses), K=np.stack(Ks), size=size, fps=fps, frames=len(poses),
                     native_size=size, kind="json", file=str(path))


# --- trajectory YAML -------------------------------------------------------------------------------

TRAJECTORY_YAML_KEYS = ("keyframes", "preset", "fps", "frames", "image_size", "fov", "timing", "interpolation")


def check_choice(mapping: dict, key: str, choices, problems: ProblemList, name: str | None = None) -> str | None:
    """The value of ``mapping[key]`` if it is one of ``choices`` (else a problem), None if absent."""
    if key not in mapping:
        return None
    v = mapping[key]
    if not isinstance(v, str) or v not in choices:
        shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
        problems.add(name or key, f"expected one of {', '.join(choices)}, got {shown}")
        return None
    return v


def read_trajectory_yaml(path: str | Path) -> Keyframes:
    """Read a trajectory YAML: ``keyframes:`` (schema in ``keyframes.py``) or ``preset: NAME`` with
    the preset's parameters at top level, plus optional ``fps``, ``frames``, ``image_size: [W, H]``
    (the size per-keyframe K refers to, and the default render size), ``fov`` (default vertical fov
    for keyframes without one), ``timing``, ``interpolation``.
    """
    path = Path(path)
    text = _read_text(path, max_bytes=MAX_YAML_BYTES)
    data, line_of = load_yaml_with_lines(text, str(path))
    problems = ProblemList(str(path), "", line_of)
    if not isinstance(data, dict):
        problems.add("", "expected a mapping with 'keyframes:' or 'preset:'")
        problems.raise_if_any()
    has_kf, has_preset = "keyframes" in data, "preset" in data
    if has_kf == has_preset:
        problems.add("", "give exactly one of 'keyframes:' or 'preset:'" + (", not both" if has_kf else ""))
        problems.raise_if_any()
    preset_params = {}
    if has_preset:
        if isinstance(data["preset"], str) and data["preset"] in PRESETS:
            params = preset_parameters(data["preset"])
            preset_params = {k: v for k, v in data.items() if k in params}
    rest = {k: v for k, v in data.items() if k not in preset_params}
    unknown_keys(rest, TRAJECTORY_YAML_KEYS + tuple(preset_params), problems, "")
    timing = check_choice(data, "timing", TIMINGS, problems)
    interpolation = check_choice(data, "interpolation", INTERPOLATIONS, problems)
    size = None
    if "image_size" in data:
        v = data["image_size"]
        if (isinstance(v, list) and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
            size = (v[0], v[1])
        else:
            problems.add("image_size", f"expected [width, height] in pixels (positive integers), got {v!r}")
    fps = frames = fov = None
    if "fps" in data:
        fps, why = as_number(data["fps"])
        if why or fps <= 0:
            problems.add("fps", why or f"must be > 0, got {fps:g}")
    if "frames" in data:
        frames = data["frames"]
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            problems.add("frames", f"expected an integer >= 1, got {frames!r}")
            frames = None
    if "fov" in data:
        why = fov_problem(data["fov"])
        if why:
            problems.add("fov", why)
        else:
            fov = float(data["fov"])
    if has_kf:
        items = data["keyframes"]
    else:
        items = preset_keyframes(data["preset"], preset_params, problems)
    keys = None
    if items is not None:
        keys = parse_keyframes(items, problems, name="keyframes", default_fov=fov, size=size)
    problems.raise_if_any()
    if keys.fov is None and fov is not None:
        keys = keys.with_(fov=np.full(len(keys), fov))
    if frames is None and keys.time_unit == "frame":
        frames = int(keys.times[-1]) + 1
    if frames is None and keys.time_unit == "second" and fps:
        frames = int(math.floor(keys.times[-1] * fps + 1e-9)) + 1
    return keys.with_(kind="trajectory", file=str(path), fps=fps, frames=frames, native_size=size,
                      timing=timing, interpolation=interpolation)


# --- detection -------------------------------------------------------------------------------------


def detect_kind(path: str | Path) -> str | None:
    """Which reader fits ``path``: by extension, and for .json by content. None if unknown."""
    path = Path(path)
    if os.path.isdir(path):
        return "spatia" if os.path.lexists(path / W2C_NAME) else "colmap"  # a w2c.txt of any kind: the reader says what is wrong
    if path.name == W2C_NAME:
        return "spatia"
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "trajectory"
    if suffix == ".txt":
        return "realestate10k"
    if suffix in (".bin",) or path.name in ("cameras.txt", "images.txt"):
        return "colmap"
    if suffix == ".json":
        try:
            data = load_json(read_text(path, MAX_TEXT_BYTES))  # a FIFO or a device is refused, never opened
        except (InputError, JsonTextError):
            return "json"  # the canonical reader reports the exact problem
        if isinstance(data, dict):
            if "camera_path" in data:
                return "nerfstudio"
            frames = data.get("frames")
            if isinstance(frames, list) and frames and isinstance(frames[0], dict) and "transform_matrix" in frames[0]:
                return "nerfstudio"
        return "json"
    return None


def read_camera_file(path: str | Path, kind: str | None = None, *, order: str = "name") -> Keyframes:
    """Read any supported camera source; ``kind`` (one of KINDS) or detected from ``path``."""
    path = Path(path)
    if kind is None:
        if not os.path.exists(path):
            raise InputError([Problem(file=str(path), field=None, message="file or folder not found")])
        kind = detect_kind(path)
        if kind is None:
            raise InputError([Problem(file=str(path), field=None,
                                      message="unknown camera file type: expected .json, .txt (RealEstate10K), "
                                              ".yaml/.yml (trajectory), a COLMAP model folder or a Spatia folder (w2c.txt)")])
    if kind == "colmap":
        if os.path.isfile(path):
            path = path.parent
        return read_colmap(path, order=order)
    readers = {"realestate10k": read_realestate10k, "nerfstudio": read_nerfstudio, "json": read_canonical_json,
               "trajectory": read_trajectory_yaml, "spatia": read_spatia}
    return readers[kind](path)
