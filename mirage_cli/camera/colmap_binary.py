"""A structural check of COLMAP's binary model files, run before pycolmap reads them.

pycolmap trusts the counts and strings in a binary model: a truncated ``images.bin`` makes it read
an image name past the end of the file forever (the name grows until memory runs out), and a
count of 2^62 points makes it reserve that much. This walk reads every count, skips every record
by its size, and refuses a file whose counts do not fit its bytes, so pycolmap only ever sees
files whose structure holds. It reads headers and names only, never the point data.

Layout (little endian), as COLMAP writes it (``src/colmap/scene/reconstruction_io_binary.cc``):

- ``rigs.bin``: u64 rigs; per rig u32 id, u32 sensors; if sensors > 0, the reference sensor
  (i32 type, u32 id); per further sensor i32 type, u32 id, u8 has_pose, then 7 f64 if has_pose.
- ``cameras.bin``: u64 cameras; per camera u32 id, i32 model id, u64 width, u64 height, then the
  model's parameters as f64.
- ``frames.bin``: u64 frames; per frame u32 id, u32 rig id, 7 f64 (rig_from_world), u32 data
  ids, each i32 sensor type, u32 sensor id, u64 data id.
- ``images.bin``: u64 images; per image u32 id, 7 f64 (cam_from_world), u32 camera id, a
  NUL-terminated name, u64 points2D, each f64 x, f64 y, u64 point3D id.

``points3D.bin`` is never read: mirage uses cameras and images only (``colmap.py`` hands pycolmap
an empty point list).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from mirage_cli.base.errors import Problem

MAX_NAME_BYTES = 4096
"""Longest image name accepted (a path relative to the image folder)."""


class _Damaged(Exception):
    """The file's structure does not hold at this point (message says how)."""


class _Cursor:
    """Reads little-endian fields from a file, never past its end."""

    def __init__(self, f: BinaryIO, size: int):
        self.f = f
        self.size = size

    @property
    def at(self) -> int:
        return self.f.tell()

    def remaining(self) -> int:
        return self.size - self.at

    def read(self, fmt: str) -> tuple:
        n = struct.calcsize("<" + fmt)
        data = self.f.read(n)
        if len(data) != n:
            raise _Damaged("the file is empty" if self.size == 0 else
                           f"ends at byte {self.size:,} in the middle of a record (truncated)")
        return struct.unpack("<" + fmt, data)

    def skip(self, n: int, what: str) -> None:
        if n > self.remaining():
            raise _Damaged(f"{what} needs {n:,} more bytes at byte {self.at:,} but the file has {self.remaining():,} left")
        self.f.seek(n, 1)

    def count(self, what: str, min_record_bytes: int) -> int:
        (n,) = self.read("Q")
        if n * min_record_bytes > self.remaining():
            raise _Damaged(f"declares {n:,} {what} but has {self.remaining():,} bytes left for them (truncated or damaged)")
        return n

    def name(self) -> bytes:
        start = self.at
        data = self.f.read(min(MAX_NAME_BYTES + 1, self.remaining()))
        end = data.find(b"\0")
        if end < 0:
            raise _Damaged(f"an image name at byte {start:,} has no end within {MAX_NAME_BYTES} bytes (truncated or damaged)")
        self.f.seek(start + end + 1)
        return data[:end]


def _rigs(c: _Cursor) -> None:
    for _ in range(c.count("rigs", 8)):
        _, sensors = c.read("II")
        if sensors > 0:
            c.read("iI")
        for _ in range(max(0, sensors - 1)):
            _, _, has_pose = c.read("iIB")
            if has_pose:
                c.skip(7 * 8, "a sensor pose")


def _cameras(c: _Cursor, num_params: dict[int, int]) -> None:
    for i in range(c.count("cameras", 24)):
        camera_id, model_id, _, _ = c.read("IiQQ")
        if model_id not in num_params:
            raise _Damaged(f"camera {camera_id} (record {i}): unknown camera model id {model_id}")
        c.skip(8 * num_params[model_id], f"camera {camera_id}'s parameters")


def _frames(c: _Cursor) -> None:
    for _ in range(c.count("frames", 8 + 56 + 4)):
        c.skip(8 + 56, "a frame")
        (data_ids,) = c.read("I")
        c.skip(16 * data_ids, f"{data_ids:,} data ids")


def _images(c: _Cursor) -> None:
    for _ in range(c.count("images", 4 + 56 + 4 + 1 + 8)):
        (image_id,) = c.read("I")
        c.skip(56 + 4, f"image {image_id}'s pose")
        c.name()
        (points,) = c.read("Q")
        c.skip(24 * points, f"image {image_id}'s {points:,} points")


def binary_model_problems(model: Path, num_params: dict[int, int]) -> list[Problem]:
    """One problem per binary file of ``model`` whose structure does not hold (module docstring).

    Args:
        model: the model folder.
        num_params: camera model id -> number of parameters (from pycolmap).
    """
    walks = {"rigs.bin": _rigs, "cameras.bin": lambda c: _cameras(c, num_params), "frames.bin": _frames,
             "images.bin": _images}
    problems = []
    for name, walk in walks.items():
        path = model / name
        if not path.exists():
            continue
        with open(path, "rb") as f:
            cursor = _Cursor(f, path.stat().st_size)
            try:
                walk(cursor)
            except _Damaged as e:
                problems.append(Problem(file=str(path), field=None, message=f"damaged: {e}"))
    return problems
