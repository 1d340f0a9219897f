"""Spatia's camera files: ``w2c.txt`` and ``intrinsics.txt`` in one folder (facts of Spatia's README
and its test cases).

- ``w2c.txt``: one camera per line, a JSON list: an OpenCV world-to-camera (cam_from_world) matrix,
  3x4 or homogeneous 4x4 (``[[r11, r12, r13, t1], [r21, ...], [r31, ...]]``).
- ``intrinsics.txt``: ``[fx fy cx cy]`` (any separators), normalized by the image: fx and cx by the
  width, fy and cy by the height, the origin at the image corner, as RealEstate10K's. ``K`` is
  returned for a 1 x 1 image (``size=(1, 1)``) and rescaled to the render size later; without the
  file the spec's ``intrinsics`` (or the 60 degree default) apply.

The camera source is the folder (``camera: {spatia: case_1}``) or its ``w2c.txt``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem, ProblemList
from mirage_cli.base.files import read_text
from mirage_cli.base.limits import MAX_KEYFRAMES, MAX_TEXT_BYTES
from mirage_cli.camera.conventions import rigid_inverse
from mirage_cli.camera.intrinsics import K_problem
from mirage_cli.camera.keyframes import Keyframes, pose_problem

W2C_NAME = "w2c.txt"
INTRINSICS_NAME = "intrinsics.txt"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)


def spatia_files(path: str | Path) -> tuple[Path, Path | None]:
    """(w2c.txt, intrinsics.txt or None) of a Spatia camera folder or of its ``w2c.txt``."""
    path = Path(path)
    w2c = path / W2C_NAME if os.path.isdir(path) else path
    intrinsics = w2c.parent / INTRINSICS_NAME
    return w2c, intrinsics if intrinsics.is_file() else None


def _camera(line: str) -> tuple[np.ndarray | None, str | None]:
    """(world_from_cam [4, 4], None) of one ``w2c.txt`` line, or (None, why)."""
    try:
        rows = json.loads(line)
        m = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError):
        return None, "expected a JSON list of 3 or 4 rows of 4 numbers (a 3x4 or 4x4 world-to-camera matrix)"
    if m.shape not in ((3, 4), (4, 4)):
        return None, f"expected a 3x4 or 4x4 matrix, got shape {list(m.shape)}"
    cam_from_world = np.eye(4)
    cam_from_world[: m.shape[0]] = m
    if not np.all(np.isfinite(cam_from_world)):
        return None, "contains NaN or inf"
    world_from_cam = rigid_inverse(cam_from_world)
    why = pose_problem(world_from_cam)
    return (None, why) if why else (world_from_cam, None)


def _intrinsics(path: Path) -> np.ndarray:
    """K for a 1 x 1 image from ``intrinsics.txt``."""
    values = [float(x) for x in _NUMBER.findall(read_text(path, MAX_TEXT_BYTES))]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError([Problem(file=str(path), field=None,
                                  message=f"expected 4 finite numbers [fx fy cx cy] normalized by the image, got {values[:8]}")])
    fx, fy, cx, cy = values
    K = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
    why = K_problem(K)
    if why:
        raise InputError([Problem(file=str(path), field=None, message=why)])
    return K


def read_spatia(path: str | Path) -> Keyframes:
    """Read a Spatia camera folder (or its ``w2c.txt``): one keyframe per line, in order."""
    w2c, intrinsics_path = spatia_files(path)
    if not w2c.is_file():
        raise InputError([Problem(file=str(w2c), field=None, message=f"not found: a Spatia camera folder holds {W2C_NAME}")])
    problems = ProblemList(str(w2c))
    poses = []
    for lineno, line in enumerate(read_text(w2c, MAX_TEXT_BYTES).splitlines(), start=1):
        if not line.strip():
            continue
        pose, why = _camera(line)
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
