"""Keyframes: the camera path as a source gives it, before resampling to the render's frames.

Every reader returns ``Keyframes``. This module also parses the keyframe schema shared by inline
``camera: keyframes:`` in a scene spec and by trajectory YAML files:

    - frame: 0                 # OR time: 0.0 (seconds); OR neither on every keyframe: spread evenly
      position: [0, 0, 0]      # camera centre in world coordinates (OpenCV: x right, y down, z forward)
      yaw: 0                   # rotation: ONE of yaw/pitch/roll (degrees), look_at (+ up),
      pitch: 0                 #   quaternion [w, x, y, z] (world_from_cam), or world_from_cam (4x4 rows,
      roll: 0                  #   then no position); none given = identity (looking along +z)
      fov: 60                  # optional vertical field of view in degrees, OR K (3x3 rows in pixels
                               #   at the file's image_size [W, H])

Signs (yaw/pitch/roll all 0 = identity: camera looks along world +z, x right, y down): yaw > 0 turns
right (towards +x), pitch > 0 looks up (towards -y), roll > 0 turns the image clockwise as seen from
behind the camera. See ``rotations.yaw_pitch_roll_to_matrix``. ``look_at`` uses ``up`` (default
[0, -1, 0], i.e. world up is -y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mirage_cli.base.errors import ProblemList
from mirage_cli.base.limits import MAX_COORDINATE, MAX_KEYFRAMES
from mirage_cli.base.values import as_number, describe_value, unknown_keys
from mirage_cli.camera.intrinsics import K_problem, fov_problem
from mirage_cli.camera.rotations import (
    DEFAULT_UP,
    look_at_matrix,
    quat_to_matrix,
    quaternion_problem,
    rotation_problem,
    yaw_pitch_roll_to_matrix,
)

KEYFRAME_KEYS = ("frame", "time", "position", "look_at", "up", "yaw", "pitch", "roll", "quaternion",
                 "world_from_cam", "fov", "K")


@dataclass
class Keyframes:
    """A camera path at its keyframes (any source), OpenCV convention.

    Attributes:
        world_from_cam: float64 [K, 4, 4].
        K: float64 [K, 3, 3] pixel intrinsics at ``size`` (integer pixel centres), or None.
        size: (width, height) that ``K`` refers to, or None. Normalized intrinsics use (1, 1).
        fov: float64 [K] vertical fov in degrees per keyframe (NaN where not given), or None.
        times: float64 [K] keyframe times, strictly increasing, or None (spread evenly).
        time_unit: "frame" or "second" for ``times``, else None.
        fps: the source's own frame rate, if it has one.
        frames: the source's own frame count, if it has one.
        native_size: the source's own image size (width, height), if it has one.
        kind: source kind ("keyframes", "colmap", "realestate10k", "nerfstudio", "json", ...).
        file: the file it came from, if any.
        timing, interpolation: defaults the source asks for (trajectory YAML), or None.
    """

    world_from_cam: np.ndarray
    K: np.ndarray | None = None
    size: tuple[int, int] | None = None
    fov: np.ndarray | None = None
    times: np.ndarray | None = None
    time_unit: str | None = None
    fps: float | None = None
    frames: int | None = None
    native_size: tuple[int, int] | None = None
    kind: str = "keyframes"
    file: str | None = None
    timing: str | None = None
    interpolation: str | None = None
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.world_from_cam.shape[0])

    def with_(self, **changes) -> Keyframes:
        return replace(self, **changes)


def as_vector(value: Any, n: int) -> tuple[np.ndarray | None, str | None]:
    """(float64 [n], None) for a list of n finite numbers, else (None, why)."""
    if not isinstance(value, (list, tuple)) or len(value) != n:
        return None, f"expected a list of {n} numbers, got {describe_value(value)}"
    out = []
    for i, v in enumerate(value):
        x, why = as_number(v)
        if why:
            return None, f"entry {i} {why}"
        out.append(x)
    return np.asarray(out, dtype=np.float64), None


def as_matrix(value: Any, rows: int, cols: int) -> tuple[np.ndarray | None, str | None]:
    """(float64 [rows, cols], None) from nested rows (or rows*cols flat numbers), else (None, why)."""
    if isinstance(value, (list, tuple)) and len(value) == rows * cols and not any(isinstance(v, (list, tuple)) for v in value):
        flat, why = as_vector(value, rows * cols)
        return (flat.reshape(rows, cols), None) if why is None else (None, why)
    if not isinstance(value, (list, tuple)) or len(value) != rows:
        return None, f"expected {rows} rows of {cols} numbers, got {describe_value(value)}"
    out = []
    for i, row in enumerate(value):
        r, why = as_vector(row, cols)
        if why:
            return None, f"row {i}: {why}"
        out.append(r)
    return np.stack(out), None


def pose_problem(world_from_cam: np.ndarray) -> str | None:
    """Why a 4x4 world_from_cam is unusable (NaN/inf, bottom row, rotation, a camera farther than
    ``limits.MAX_COORDINATE`` from the origin), or None."""
    m = np.asarray(world_from_cam, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        return "pose contains NaN or inf"
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        return f"last row must be [0, 0, 0, 1], got {m[3].tolist()}"
    why = coordinate_problem(m[:3, 3])
    return f"camera position: {why}" if why else rotation_problem(m[:3, :3])


def coordinate_problem(point: np.ndarray) -> str | None:
    """Why a point is too far out to be a camera position or target (``limits.MAX_COORDINATE``), or None."""
    size = float(np.max(np.abs(point)))
    return f"coordinates must be at most {MAX_COORDINATE:g} in size, got {size:g}" if size > MAX_COORDINATE else None


def _rotation_of(item: dict, name: str, position: np.ndarray | None, problems: ProblemList) -> np.ndarray | None:
    """The world_from_cam rotation of one keyframe item (see module docstring), or None on error."""
    groups = {
        "look_at": "look_at" in item,
        "yaw/pitch/roll": any(k in item for k in ("yaw", "pitch", "roll")),
        "quaternion": "quaternion" in item,
        "world_from_cam": "world_from_cam" in item,
    }
    given = [g for g, present in groups.items() if present]
    if len(given) > 1:
        problems.add(name, f"give the rotation one way only, got {' and '.join(given)}")
        return None
    if "up" in item and "look_at" not in item:
        problems.add(f"{name}.up", "'up' is only used together with 'look_at'")
    if not given:
        return np.eye(3)
    if given[0] == "look_at":
        target, why = as_vector(item["look_at"], 3)
        why = why or coordinate_problem(target)
        if why:
            problems.add(f"{name}.look_at", why)
            return None
        up = np.asarray(DEFAULT_UP)
        if "up" in item:
            up, why = as_vector(item["up"], 3)
            if why:
                problems.add(f"{name}.up", why)
                return None
        if position is None:
            return None
        try:
            return look_at_matrix(position, target, up)
        except ValueError as e:
            problems.add(f"{name}.look_at", str(e))
            return None
    if given[0] == "yaw/pitch/roll":
        angles = []
        for key in ("yaw", "pitch", "roll"):
            x, why = as_number(item.get(key, 0.0))
            if why:
                problems.add(f"{name}.{key}", why)
                return None
            angles.append(x)
        return yaw_pitch_roll_to_matrix(*angles)
    if given[0] == "quaternion":
        q = item["quaternion"]
        if not isinstance(q, (list, tuple)) or len(q) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in q):
            problems.add(f"{name}.quaternion", f"expected 4 numbers [w, x, y, z], got {describe_value(q)}")
            return None
        why = quaternion_problem(q)
        if why:
            problems.add(f"{name}.quaternion", why)
            return None
        return quat_to_matrix(np.asarray(q, dtype=np.float64))
    return None  # world_from_cam handled by the caller


@dataclass
class _Keyframe:
    """One parsed keyframe item. ``unit`` is the kind of timing it uses (even when its value is bad;
    ``timing_known`` is False when it gave both kinds); ``world_from_cam`` / ``K`` are None when
    absent or invalid; ``fov`` is NaN when not given."""

    time: float | None
    unit: str | None
    timing_known: bool
    world_from_cam: np.ndarray | None
    fov: float
    K: np.ndarray | None


def _keyframe_time(item: dict, kf: str, problems: ProblemList) -> tuple[float | None, str | None, bool]:
    """(time, unit, timing_known): ``frame`` (an index) or ``time`` (seconds), or neither."""
    if "frame" in item and "time" in item:
        problems.add(kf, "give 'frame' or 'time', not both")
        return None, None, False
    if "frame" in item:
        v = item["frame"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.add(f"{kf}.frame", f"expected a frame index (integer >= 0), got {describe_value(v)}")
            return None, "frame", True
        return float(v), "frame", True
    if "time" in item:
        x, why = as_number(item["time"])
        if why or x < 0:
            problems.add(f"{kf}.time", why or f"must be >= 0 seconds, got {x:g}")
            return None, "second", True
        return x, "second", True
    return None, None, True


def _keyframe_pose(item: dict, kf: str, problems: ProblemList) -> np.ndarray | None:
    """world_from_cam float64 [4, 4] from ``world_from_cam``, or from ``position`` and a rotation."""
    if "world_from_cam" in item:
        if "position" in item:
            problems.add(kf, "give 'position' or 'world_from_cam', not both (world_from_cam holds the position)")
        m, why = as_matrix(item["world_from_cam"], 4, 4)
        why = why or pose_problem(m)
        if why:
            problems.add(f"{kf}.world_from_cam", why)
            return None
        others = [k for k in ("look_at", "yaw", "pitch", "roll", "quaternion") if k in item]
        if others:
            problems.add(kf, f"world_from_cam already holds the rotation; remove {', '.join(others)}")
        return m
    position = None
    if "position" not in item:
        problems.add(kf, "missing 'position' (or 'world_from_cam')")
    else:
        position, why = as_vector(item["position"], 3)
        why = why or coordinate_problem(position)
        if why:
            problems.add(f"{kf}.position", why)
    R = _rotation_of(item, kf, position, problems)
    if position is None or R is None:
        return None
    m = np.eye(4)
    m[:3, :3] = R
    m[:3, 3] = position
    return m


def _keyframe_intrinsics(item: dict, kf: str, problems: ProblemList, size) -> tuple[float, np.ndarray | None]:
    """(vertical fov in degrees or NaN, K float64 [3, 3] in pixels at ``size`` or None)."""
    if "fov" in item and "K" in item:
        problems.add(kf, "give 'fov' or 'K', not both")
    fov = math.nan
    if "fov" in item:
        why = fov_problem(item["fov"])
        if why:
            problems.add(f"{kf}.fov", why)
        else:
            fov = float(item["fov"])
    K = None
    if "K" in item:
        if size is None:
            problems.add(f"{kf}.K", "K needs the file's top-level 'image_size: [width, height]' (the size K is in pixels of)")
        K, why = as_matrix(item["K"], 3, 3)
        why = why or K_problem(K)
        if why:
            problems.add(f"{kf}.K", why)
    return fov, K


def parse_keyframe(item: Any, kf: str, problems: ProblemList, size: tuple[int, int] | None) -> _Keyframe | None:
    """One keyframe item (schema in the module docstring), named ``kf`` in problems; None when it is
    not a mapping."""
    if not isinstance(item, dict):
        problems.add(kf, f"expected a mapping with position and rotation, got {describe_value(item)}")
        return None
    unknown_keys(item, KEYFRAME_KEYS, problems, kf)
    time, unit, timing_known = _keyframe_time(item, kf, problems)
    pose = _keyframe_pose(item, kf, problems)
    fov, K = _keyframe_intrinsics(item, kf, problems, size)
    return _Keyframe(time, unit, timing_known, pose, fov, K)


def parse_keyframes(items: Any, problems: ProblemList, *, name: str = "keyframes",
                    default_fov: float | None = None, size: tuple[int, int] | None = None) -> Keyframes | None:
    """Parse a keyframe list (schema in the module docstring); problems go to ``problems``.

    Each item is parsed by ``parse_keyframe``; then the list as a whole: one kind of timing,
    strictly increasing times, ``K`` on every keyframe or on none.

    Args:
        items: the YAML value of ``keyframes``.
        problems: collector; fields are named ``{name}[i].key``.
        name: field name of the list.
        default_fov: vertical fov for keyframes without one when some keyframes have one.
        size: (width, height) that per-keyframe ``K`` refers to, or None (then ``K`` is refused).
    Returns:
        Keyframes (kind "keyframes") or None when any problem was found.
    """
    if not isinstance(items, list) or not items:
        problems.add(name, f"expected a non-empty list of keyframes, got {describe_value(items)}")
        return None
    if len(items) > MAX_KEYFRAMES:
        problems.add(name, f"{len(items):,} keyframes: more than the limit of {MAX_KEYFRAMES:,}")
        return None
    start = len(problems.items)
    parsed = [parse_keyframe(item, f"{name}[{i}]", problems, size) for i, item in enumerate(items)]
    kinds = {k.unit for k in parsed if k is not None and k.timing_known}
    if len(kinds) > 1:
        problems.add(name, "every keyframe needs the same kind of timing: all 'frame', all 'time', or none "
                           f"(spread evenly); got {sorted(str(k) for k in kinds)}")
    if len(problems.items) > start:
        return None
    unit = parsed[0].unit
    t = np.asarray([k.time for k in parsed], dtype=np.float64) if unit else None
    if t is not None and len(t) > 1:
        bad = np.nonzero(np.diff(t) <= 0)[0]
        if len(bad):
            i = int(bad[0]) + 1
            key = "frame" if unit == "frame" else "time"
            problems.add(f"{name}[{i}].{key}", f"keyframe {key}s must increase strictly; {t[i]:g} follows {t[i - 1]:g}")
            return None
    Ks = [k.K for k in parsed]
    if any(K is not None for K in Ks) and any(K is None for K in Ks):
        problems.add(name, "give 'K' on every keyframe or on none")
        return None
    fov = np.asarray([k.fov for k in parsed], dtype=np.float64)
    if np.all(np.isnan(fov)):
        fov = None
    elif default_fov is not None:
        fov = np.where(np.isnan(fov), default_fov, fov)
    K_arr = np.stack(Ks) if Ks[0] is not None else None
    return Keyframes(world_from_cam=np.stack([k.world_from_cam for k in parsed]), K=K_arr,
                     size=size if K_arr is not None else None, fov=fov, times=t, time_unit=unit, kind="keyframes")
