"""Spatia's camera files: ``w2c.txt`` and ``intrinsics.txt`` in one folder (facts of Spatia's README
and its test cases).

- ``w2c.txt``: one camera per line, a JSON list: an OpenCV world-to-camera (cam_from_world) matrix,
  3x4 or homogeneous 4x4 (``[[r11, r12, r13, t1], [r21, ...], [r31, ...]]``); a 4x4's bottom row
  is ``[0, 0, 0, 1]`` and the 3x3 part a rotation. Spatia renders one frame per line, so the scene
  spec's ``frames`` must equal the number of lines (``source.py``; ``camera.resample: true``
  spreads them over another count instead).
- ``intrinsics.txt``: ``[fx fy cx cy]`` (separated by spaces or commas, brackets optional),
  normalized by the image: fx and cx by the width, fy and cy by the height, the origin at the image
  corner, as RealEstate10K's. So cx and cy lie in [0, 1] and fx, fy in
  [``MIN_NORMALIZED_FOCAL``, ``MAX_NORMALIZED_FOCAL``] (fields of view of 170 to 1 degrees);
  pixel values are refused. ``K`` is returned for a 1 x 1 image (``size=(1, 1)``) and rescaled to
  the render size later; without the file the spec's ``intrinsics`` (or the 60 degree default)
  apply. A path of that name that is not a regular file (a folder, a FIFO) is refused, not skipped.

The camera source is the folder (``camera: {spatia: case_1}``) or its ``w2c.txt``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem, ProblemList
from mirage_cli.base.files import read_text
from mirage_cli.base.json_text import JsonTextError, load_json
from mirage_cli.base.limits import MAX_KEYFRAMES, MAX_TEXT_BYTES
from mirage_cli.camera.conventions import rigid_inverse
from mirage_cli.camera.intrinsics import K_problem
from mirage_cli.camera.keyframes import Keyframes, pose_problem
from mirage_cli.camera.rotations import rotation_problem

W2C_NAME = "w2c.txt"
INTRINSICS_NAME = "intrinsics.txt"
MAX_LINE_CHARS = 4096
"""Longest ``w2c.txt`` line (a 4x4 matrix of 17-digit numbers takes about 400 characters)."""
MAX_LINES = 2 * MAX_KEYFRAMES
"""Most lines of ``w2c.txt`` (one camera per line, blank lines allowed between)."""
MAX_INTRINSICS_BYTES = 4096
"""Size of ``intrinsics.txt`` (four numbers)."""
BOTTOM_ROW_TOLERANCE = 1e-6
"""Largest difference from [0, 0, 0, 1] accepted in the bottom row of a 4x4 matrix."""
MIN_NORMALIZED_FOCAL = 0.5 / math.tan(math.radians(85.0))
"""Smallest normalized focal length: a field of view of 170 degrees."""
MAX_NORMALIZED_FOCAL = 0.5 / math.tan(math.radians(0.5))
"""Largest normalized focal length: a field of view of 1 degree."""
_SEPARATORS = re.compile(r"[\s,]+")


def spatia_files(path: str | Path) -> tuple[Path, Path | None]:
    """(w2c.txt, intrinsics.txt or None when absent) of a Spatia camera folder or of its ``w2c.txt``."""
    path = Path(path)
    w2c = path / W2C_NAME if os.path.isdir(path) else path
    intrinsics = w2c.parent / INTRINSICS_NAME
    return w2c, intrinsics if os.path.lexists(intrinsics) else None


def _rows(line: str) -> tuple[np.ndarray | None, str | None]:
    """(the [3, 4] or [4, 4] matrix of one ``w2c.txt`` line, None), or (None, why)."""
    expected = "expected a JSON list of 3 or 4 rows of 4 numbers (a 3x4 or 4x4 world-to-camera matrix)"
    try:
        rows = load_json(line)
    except JsonTextError as e:
        return None, f"{e.message}: {expected}"
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        return None, expected
    if len(rows) not in (3, 4) or any(len(r) != 4 for r in rows):
        lengths = sorted({len(r) for r in rows})
        got = f"shape [{len(rows)}, {lengths[0]}]" if len(lengths) == 1 else f"rows of {lengths[0]} to {lengths[-1]} values"
        return None, f"expected a 3x4 or 4x4 matrix, got {got if rows else 'an empty list'}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in rows for v in r):
        return None, f"{expected}, got a value that is not a number"
    try:
        return np.array(rows, dtype=np.float64), None
    except OverflowError:
        return None, "contains a number too large for a float"


def _camera(line: str) -> tuple[np.ndarray | None, str | None]:
    """(world_from_cam [4, 4], None) of one ``w2c.txt`` line, or (None, why)."""
    m, why = _rows(line)
    if why:
        return None, why
    if not np.all(np.isfinite(m)):
        return None, "contains NaN or inf"
    if m.shape == (4, 4) and not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=BOTTOM_ROW_TOLERANCE):
        return None, (f"the bottom row of a 4x4 world-to-camera matrix must be [0, 0, 0, 1], got "
                      f"[{', '.join(f'{v:g}' for v in m[3])}]: the matrix is not a rigid camera pose")
    why = rotation_problem(m[:3, :3])
    if why:
        return None, f"the 3x3 rotation part of the world-to-camera matrix is not a rotation: {why}"
    cam_from_world = np.eye(4)
    cam_from_world[:3] = m[:3]
    world_from_cam = rigid_inverse(cam_from_world)
    why = pose_problem(world_from_cam)
    return (None, why) if why else (world_from_cam, None)


def _normalized_problem(values: list[float]) -> str | None:
    """Why ``[fx, fy, cx, cy]`` are not intrinsics normalized by the image size, or None."""
    fx, fy, cx, cy = values
    bad = [f"{name} {v:g}" for name, v in (("fx", fx), ("fy", fy)) if not MIN_NORMALIZED_FOCAL <= v <= MAX_NORMALIZED_FOCAL]
    bad += [f"{name} {v:g}" for name, v in (("cx", cx), ("cy", cy)) if not 0.0 <= v <= 1.0]
    if not bad:
        return None
    pixels = max(cx, cy) > 1.0 or max(fx, fy) > MAX_NORMALIZED_FOCAL
    what = f"[{' '.join(f'{v:g}' for v in values)}] look like pixels" if pixels else "out of range"
    return (f"{what} ({', '.join(bad)}): {INTRINSICS_NAME} holds [fx fy cx cy] normalized by the image size (fx, cx "
            f"divided by its width, fy, cy by its height), so cx, cy lie in [0, 1] and fx, fy in "
            f"[{MIN_NORMALIZED_FOCAL:.3g}, {MAX_NORMALIZED_FOCAL:.3g}] (fields of view of 170 to 1 degrees)")


def _intrinsics(path: Path) -> np.ndarray:
    """K for a 1 x 1 image from ``intrinsics.txt`` (module docstring)."""
    def refuse(message: str):
        raise InputError([Problem(file=str(path), field=None, message=message)])

    text = read_text(path, MAX_INTRINSICS_BYTES).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    tokens = [t for t in _SEPARATORS.split(text) if t]
    expected = "expected 4 finite numbers [fx fy cx cy] normalized by the image"
    if len(tokens) != 4:
        refuse(f"{expected}, got {len(tokens)} values")
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            refuse(f"{expected}, got {token[:20]!r}")
    if not all(math.isfinite(v) for v in values):
        refuse(f"{expected}, got {', '.join(tokens)}")
    why = _normalized_problem(values)
    if why:
        refuse(why)
    fx, fy, cx, cy = values
    K = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
    why = K_problem(K)
    if why:
        refuse(why)
    return K


def _lines(text: str):
    """(line number, line) of ``text``, a line longer than ``MAX_LINE_CHARS`` as None (not copied)."""
    start, lineno = 0, 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        lineno += 1
        yield lineno, text[start:end] if end - start <= MAX_LINE_CHARS else None
        start = end + 1


def read_spatia(path: str | Path) -> Keyframes:
    """Read a Spatia camera folder (or its ``w2c.txt``): one keyframe per line, in order."""
    w2c, intrinsics_path = spatia_files(path)
    if not os.path.lexists(w2c):
        raise InputError([Problem(file=str(w2c), field=None, message=f"not found: a Spatia camera folder holds {W2C_NAME}")])
    problems = ProblemList(str(w2c))
    text = read_text(w2c, MAX_TEXT_BYTES)
    lines = text.count("\n") + 1
    if lines > MAX_LINES:
        problems.add("", f"{lines:,} lines, more than the limit of {MAX_LINES:,} "
                         f"(one camera per line, at most {MAX_KEYFRAMES:,} cameras)")
        problems.raise_if_any()
    poses = []
    for lineno, line in _lines(text):
        if line is not None and not line.strip():
            continue
        pose, why = _camera(line) if line is not None else (
            None, f"line longer than {MAX_LINE_CHARS:,} characters: expected a 3x4 or 4x4 world-to-camera matrix")
        if why:
            problems.items.append(Problem(file=str(w2c), field=None, line=lineno, message=why))
            continue
        if len(poses) >= MAX_KEYFRAMES:
            problems.items.append(Problem(file=str(w2c), field=None, line=lineno, message=f"more than {MAX_KEYFRAMES:,} cameras"))
            break
        poses.append(pose)
    if not problems and not poses:
        problems.add("", "no cameras (expected one 3x4 or 4x4 world-to-camera matrix per line)")
    problems.raise_if_any()
    K = None if intrinsics_path is None else _intrinsics(intrinsics_path)
    world_from_cam = np.stack(poses)
    return Keyframes(world_from_cam=world_from_cam, K=None if K is None else np.repeat(K[None], len(poses), axis=0),
                     size=None if K is None else (1, 1), frames=len(poses), kind="spatia", file=str(w2c))
