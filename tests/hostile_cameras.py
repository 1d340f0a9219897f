"""Hostile command-line cases: the cameras surface (tests/hostile_commands.py).

Spatia camera folders (``w2c.txt`` + ``intrinsics.txt``) read through a scene spec (``mirage
validate``) or alone (``mirage trajectory``), and COLMAP text models written by pycolmap itself.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hostile_commands import CommandCase
from hostile_inputs import FRAMES, base_spec, write_spec

SPATIA_FOLDER = "case"
INTRINSICS = "[0.62 1.1 0.5 0.5]"
"""Valid normalized intrinsics (fx fy cx cy): a 77 degree horizontal field of view."""


def spatia_rows(count: int) -> list[list[list[float]]]:
    """``count`` 4x4 world-to-camera matrices of a camera walking forward and turning."""
    rows = []
    for i in range(count):
        angle = 0.02 * i
        m = np.eye(4)
        m[0, 0] = m[2, 2] = np.cos(angle)
        m[0, 2], m[2, 0] = np.sin(angle), -np.sin(angle)
        m[:3, 3] = [0.01 * i, 0.0, -0.05 * i]
        rows.append(m.tolist())
    return rows


def write_spatia_scene(folder: Path, count: int = FRAMES, lines: list[str] | None = None,
                       intrinsics: str | Callable[[Path], None] | None = INTRINSICS, **camera) -> Path:
    """The small scene with ``camera: {spatia: case}``: ``count`` cameras (or the ``lines`` given)
    in ``case/w2c.txt``, ``intrinsics`` as text, made by a function, or absent; ``camera`` adds keys."""
    spec = base_spec()
    spec.pop("intrinsics")
    spec["camera"] = {"spatia": SPATIA_FOLDER, **camera}
    path = write_spec(folder, spec)
    case = folder / SPATIA_FOLDER
    case.mkdir()
    lines = [json.dumps(r) for r in spatia_rows(count)] if lines is None else lines
    (case / "w2c.txt").write_text("".join(line + "\n" for line in lines))
    if callable(intrinsics):
        intrinsics(case / "intrinsics.txt")
    elif intrinsics is not None:
        (case / "intrinsics.txt").write_text(intrinsics)
    return path


def validate(**kw) -> Callable[[Path], list[str]]:
    """``mirage validate`` of a Spatia scene (``write_spatia_scene`` arguments)."""
    return lambda folder: ["validate", str(write_spatia_scene(folder, **kw))]


def line_two(text: str) -> Callable[[Path], list[str]]:
    """``mirage validate`` of a Spatia scene whose second ``w2c.txt`` line is ``text``."""
    lines = [json.dumps(r) for r in spatia_rows(FRAMES)]
    lines[1] = text
    return validate(lines=lines)


def changed_w2c(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """``mirage validate`` of a Spatia scene whose ``w2c.txt`` is replaced by ``make(path)``."""

    def build(folder: Path) -> list[str]:
        spec = write_spatia_scene(folder)
        w2c = folder / SPATIA_FOLDER / "w2c.txt"
        w2c.unlink()
        make(w2c)
        return ["validate", str(spec)]

    return build


def sparse_file(size: int) -> Callable[[Path], None]:
    """A file of ``size`` zero bytes that takes no disk (a hole)."""

    def make(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(size)

    return make


def trajectory_of_spatia(make_w2c: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """``mirage trajectory`` of a Spatia folder whose ``w2c.txt`` is made by ``make_w2c(path)``."""

    def build(folder: Path) -> list[str]:
        case = folder / SPATIA_FOLDER
        case.mkdir(parents=True)
        make_w2c(case / "w2c.txt")
        (case / "intrinsics.txt").write_text(INTRINSICS)
        return ["trajectory", str(case)]

    return build


def matrix_line(m: list[list[float]]) -> str:
    return json.dumps(m)


IDENTITY = np.eye(4).tolist()


# --- COLMAP ---------------------------------------------------------------------------------------


def write_colmap_text(folder: Path, count: int = 6) -> Path:
    """A COLMAP text model written by pycolmap: PINHOLE and SIMPLE_RADIAL cameras, ``count``
    images, every other one without 2D points (an empty POINTS2D line), the others with points at
    whole pixels (lines that start like image lines)."""
    from mirage_cli.camera.colmap import import_pycolmap

    pycolmap = import_pycolmap()
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="PINHOLE", width=224, height=128,
                                                    params=[120.0, 121.0, 112.0, 64.0]))
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=2, model="SIMPLE_RADIAL", width=224, height=128,
                                                    params=[118.0, 112.0, 64.0, 0.01]))
    for i in range(1, count + 1):
        points = [] if i % 2 else [pycolmap.Point2D(np.array([200.0 + j, 100.0])) for j in range(3)]
        image = pycolmap.Image(name=f"frame_{i}.png", camera_id=1 + i % 2, image_id=i, points2D=points)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([0.0, 0.05 * i, 0.0, 1.0]) / np.hypot(1.0, 0.05 * i)),
                                np.array([0.1 * i, 0.0, 0.0]))
        rec.add_image_with_trivial_frame(image, pose)
    model = folder / "model"
    model.mkdir(parents=True)
    rec.write_text(str(model))
    return model


def colmap_case(edit: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """``mirage trajectory`` of a pycolmap text model changed by ``edit(model folder)``."""

    def build(folder: Path) -> list[str]:
        model = write_colmap_text(folder)
        edit(model)
        return ["trajectory", str(model)]

    return build


def image_line(image_id: int, change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    """Replace the fields of image ``image_id``'s line of images.txt by ``change(fields)``."""

    def edit(model: Path) -> None:
        path = model / "images.txt"
        lines = path.read_text().split("\n")
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{image_id} "))
        lines[at] = " ".join(change(lines[at].split()))
        path.write_text("\n".join(lines))

    return edit


def drop_points_line(image_id: int) -> Callable[[Path], None]:
    """Delete the POINTS2D line after image ``image_id``'s line."""

    def edit(model: Path) -> None:
        path = model / "images.txt"
        lines = path.read_text().split("\n")
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{image_id} "))
        del lines[at + 1]
        path.write_text("\n".join(lines))

    return edit


def replace_file(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        (model / name).unlink()
        make(model / name)

    return edit


def append_text(name: str, text: str) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        with open(model / name, "a") as f:
            f.write(text)

    return edit


def scaled_quaternion(fields: list[str]) -> list[str]:
    return fields[:1] + [str(2 * float(v)) for v in fields[1:5]] + fields[5:]


def fifo_argv(path: Path, argv: list[str]) -> list[str]:
    """Make ``path`` a named pipe; ``argv`` the command that reads it."""
    os.mkfifo(path)
    return argv


NAMED_CASES: list[CommandCase] = [
    # Spatia: one camera per frame
    CommandCase("cameras-spatia-500-cameras-for-17-frames", validate(count=500),
                "/case/w2c.txt has 500 cameras but frames is 17: Spatia gives exactly one "
                "camera per frame; set frames: 500, give 17 lines in the file, or set resample: true"),
    CommandCase("cameras-spatia-3-cameras-for-17-frames", validate(count=3),
                "has 3 cameras but frames is 17: Spatia gives exactly one camera per frame; set frames: 3"),
    CommandCase("cameras-spatia-resample-not-a-bool", validate(count=3, resample="yes"),
                "camera.resample: expected true or false, got str 'yes'"),
    CommandCase("cameras-spatia-resample-on-a-preset", lambda folder: ["validate", str(write_spec(folder, {
        **base_spec(), "camera": {"preset": "orbit", "resample": True}}))],
        "camera.resample: 'resample' only applies to a spatia source"),
    # Spatia: w2c.txt matrices
    CommandCase("cameras-spatia-bottom-row-5559", line_two(matrix_line(IDENTITY[:3] + [[5, 5, 5, 9]])),
                "w2c.txt:2: the bottom row of a 4x4 world-to-camera matrix must be [0, 0, 0, 1], got [5, 5, 5, 9]"),
    CommandCase("cameras-spatia-bottom-row-projective", line_two(matrix_line(IDENTITY[:3] + [[0, 0, 0.01, 1]])),
                "w2c.txt:2: the bottom row of a 4x4 world-to-camera matrix must be [0, 0, 0, 1], got [0, 0, 0.01, 1]"),
    CommandCase("cameras-spatia-scaled-rotation", line_two(matrix_line([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]])),
                "w2c.txt:2: the 3x3 rotation part of the world-to-camera matrix is not a rotation: rotation is not orthonormal"),
    CommandCase("cameras-spatia-sheared-rotation", line_two(matrix_line([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])),
                "w2c.txt:2: the 3x3 rotation part of the world-to-camera matrix is not a rotation"),
    CommandCase("cameras-spatia-reflection", line_two(matrix_line([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])),
                "w2c.txt:2: the 3x3 rotation part of the world-to-camera matrix is not a rotation: rotation is a reflection"),
    CommandCase("cameras-spatia-nan", line_two('[[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]'), "w2c.txt:2: contains NaN or inf"),
    CommandCase("cameras-spatia-infinity", line_two('[[1, 0, 0, Infinity], [0, 1, 0, 0], [0, 0, 1, 0]]'),
                "w2c.txt:2: contains NaN or inf"),
    CommandCase("cameras-spatia-1e999", line_two('[[1, 0, 0, 1e999], [0, 1, 0, 0], [0, 0, 1, 0]]'), "w2c.txt:2: contains NaN or inf"),
    CommandCase("cameras-spatia-400-digit-integer", line_two(f'[[1, 0, 0, {"9" * 400}], [0, 1, 0, 0], [0, 0, 1, 0]]'),
                "w2c.txt:2: holds an integer of 400 digits (at most 30)"),
    CommandCase("cameras-spatia-far-camera", line_two('[[1, 0, 0, 1e300], [0, 1, 0, 0], [0, 0, 1, 0]]'),
                "w2c.txt:2: camera position: coordinates must be at most 1e+06"),
    CommandCase("cameras-spatia-booleans", line_two('[[true, false, false, 0], [0, 1, 0, 0], [0, 0, 1, 0]]'),
                "w2c.txt:2: expected a JSON list of 3 or 4 rows of 4 numbers (a 3x4 or 4x4 world-to-camera matrix), "
                "got a value that is not a number"),
    CommandCase("cameras-spatia-strings", line_two('[["1", "0", "0", "0"], [0, 1, 0, 0], [0, 0, 1, 0]]'),
                "got a value that is not a number"),
    CommandCase("cameras-spatia-3x3", line_two("[[1, 0, 0], [0, 1, 0], [0, 0, 1]]"),
                "w2c.txt:2: expected a 3x4 or 4x4 matrix, got shape [3, 3]"),
    CommandCase("cameras-spatia-ragged-rows", line_two("[[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0, 7]]"),
                "w2c.txt:2: expected a 3x4 or 4x4 matrix, got rows of 3 to 5 values"),
    CommandCase("cameras-spatia-16-values-flat", line_two(json.dumps(sum(IDENTITY, []))),
                "w2c.txt:2: expected a JSON list of 3 or 4 rows of 4 numbers"),
    CommandCase("cameras-spatia-object", line_two('{"w2c": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}'),
                "w2c.txt:2: expected a JSON list of 3 or 4 rows of 4 numbers"),
    CommandCase("cameras-spatia-not-json", line_two("1 0 0 0 0 1 0 0 0 0 1 0"), "w2c.txt:2: JSON does not parse"),
    CommandCase("cameras-spatia-nested-100000", line_two("[" * 100_000 + "]" * 100_000),
                "w2c.txt:2: line longer than 4,096 characters"),
    CommandCase("cameras-spatia-nested-2000", line_two("[" * 2_000 + "]" * 2_000), "w2c.txt:2: JSON nested deeper than 64 levels"),
    CommandCase("cameras-spatia-nested-objects", line_two('{"a": ' * 500 + "1" + "}" * 500),
                "w2c.txt:2: JSON nested deeper than 64 levels"),
    # Spatia: the files themselves
    CommandCase("cameras-spatia-w2c-missing", changed_w2c(lambda p: None), "w2c.txt: not found: a Spatia camera folder holds w2c.txt"),
    CommandCase("cameras-spatia-w2c-empty", changed_w2c(lambda p: p.write_text("")), "w2c.txt: no cameras"),
    CommandCase("cameras-spatia-w2c-blank-lines", changed_w2c(lambda p: p.write_text("\n \n\t\n")), "w2c.txt: no cameras"),
    CommandCase("cameras-spatia-w2c-fifo", changed_w2c(os.mkfifo), "w2c.txt: is a named pipe (FIFO), expected a regular file"),
    CommandCase("cameras-spatia-w2c-directory", changed_w2c(os.mkdir), "w2c.txt: is a directory, expected a regular file"),
    CommandCase("cameras-spatia-w2c-dev-zero", changed_w2c(lambda p: os.symlink("/dev/zero", p)), "w2c.txt: is a device"),
    CommandCase("cameras-spatia-w2c-dangling-link", changed_w2c(lambda p: os.symlink(p.parent / "gone", p)),
                "w2c.txt: file not found"),
    CommandCase("cameras-spatia-w2c-65-MiB", changed_w2c(sparse_file(65 << 20)), "w2c.txt: is 68,157,440 bytes, more than the limit"),
    CommandCase("cameras-spatia-w2c-300000-lines", changed_w2c(lambda p: p.write_text("\n" * 300_000)),
                "w2c.txt: 300,001 lines, more than the limit of 200,000"),
    CommandCase("cameras-spatia-w2c-one-huge-line", changed_w2c(lambda p: p.write_text("[" + "0, " * 5_000_000 + "0]\n")),
                "w2c.txt:1: line longer than 4,096 characters"),
    CommandCase("cameras-spatia-w2c-not-utf8", changed_w2c(lambda p: p.write_bytes(b"[[1, 0, 0, 0\xff]]\n")), "w2c.txt: not UTF-8 text"),
    CommandCase("cameras-spatia-folder-missing", lambda folder: ["validate", str(write_spec(folder, {
        **{k: v for k, v in base_spec().items() if k != "intrinsics"}, "camera": {"spatia": "nowhere"}}))],
        "camera.spatia: not found"),
    CommandCase("cameras-trajectory-spatia-w2c-fifo", trajectory_of_spatia(os.mkfifo), "w2c.txt: is a named pipe (FIFO)"),
    CommandCase("cameras-trajectory-spatia-w2c-directory", trajectory_of_spatia(os.mkdir), "w2c.txt: is a directory"),
    # Spatia: intrinsics.txt
    CommandCase("cameras-spatia-intrinsics-directory", validate(intrinsics=os.mkdir),
                "intrinsics.txt: is a directory, expected a regular file"),
    CommandCase("cameras-spatia-intrinsics-fifo", validate(intrinsics=os.mkfifo),
                "intrinsics.txt: is a named pipe (FIFO), expected a regular file"),
    CommandCase("cameras-spatia-intrinsics-dev-zero", validate(intrinsics=lambda p: os.symlink("/dev/zero", p)),
                "intrinsics.txt: is a device"),
    CommandCase("cameras-spatia-intrinsics-pixels", validate(intrinsics="500 500 320 176"),
                "intrinsics.txt: [500 500 320 176] look like pixels (fx 500, fy 500, cx 320, cy 176): intrinsics.txt holds "
                "[fx fy cx cy] normalized by the image size"),
    CommandCase("cameras-spatia-intrinsics-pixel-centre-only", validate(intrinsics="[0.6 1.1 112 64]"),
                "intrinsics.txt: [0.6 1.1 112 64] look like pixels (cx 112, cy 64)"),
    CommandCase("cameras-spatia-intrinsics-negative-cx", validate(intrinsics="[0.6 1.1 -0.5 0.5]"),
                "intrinsics.txt: out of range (cx -0.5): intrinsics.txt holds [fx fy cx cy] normalized"),
    CommandCase("cameras-spatia-intrinsics-zero-focal", validate(intrinsics="[0 1.1 0.5 0.5]"), "intrinsics.txt: out of range (fx 0)"),
    CommandCase("cameras-spatia-intrinsics-negative-focal", validate(intrinsics="[-0.6 -1.1 0.5 0.5]"),
                "intrinsics.txt: out of range (fx -0.6, fy -1.1)"),
    CommandCase("cameras-spatia-intrinsics-nan", validate(intrinsics="[nan 1.1 0.5 0.5]"),
                "intrinsics.txt: expected 4 finite numbers [fx fy cx cy] normalized by the image, got nan, 1.1, 0.5, 0.5"),
    CommandCase("cameras-spatia-intrinsics-inf", validate(intrinsics="[0.6 inf 0.5 0.5]"), "intrinsics.txt: expected 4 finite numbers"),
    CommandCase("cameras-spatia-intrinsics-3-values", validate(intrinsics="[0.6 1.1 0.5]"),
                "intrinsics.txt: expected 4 finite numbers [fx fy cx cy] normalized by the image, got 3 values"),
    CommandCase("cameras-spatia-intrinsics-5-values", validate(intrinsics="[0.6, 1.1, 0.5, 0.5, 0]"),
                "intrinsics.txt: expected 4 finite numbers [fx fy cx cy] normalized by the image, got 5 values"),
    CommandCase("cameras-spatia-intrinsics-words", validate(intrinsics="fx 0.6 fy 1.1"),
                "intrinsics.txt: expected 4 finite numbers [fx fy cx cy] normalized by the image, got 'fx'"),
    CommandCase("cameras-spatia-intrinsics-empty", validate(intrinsics=""), "intrinsics.txt: expected 4 finite numbers"),
    CommandCase("cameras-spatia-intrinsics-10-KB", validate(intrinsics="[0.6 1.1 0.5 0.5]" + " " * 10_000),
                "intrinsics.txt: is 10,017 bytes, more than the limit of 4,096"),
    CommandCase("cameras-spatia-intrinsics-not-utf8", validate(intrinsics=lambda p: p.write_bytes(b"[0.6 1.1 0.5 \xff]")),
                "intrinsics.txt: not UTF-8 text"),
    # COLMAP text models as pycolmap writes them
    CommandCase("cameras-colmap-bad-quaternion-after-an-image-without-points", colmap_case(image_line(2, scaled_quaternion)),
                "images.txt:7: image 2 (frame_2.png): quaternion [w, x, y, z] must have unit norm, got norm 2"),
    CommandCase("cameras-colmap-missing-points-line", colmap_case(drop_points_line(2)),
                "images.txt:8: the POINTS2D line of image 2 holds 10 values, not (X, Y, POINT3D_ID) triples"),
    CommandCase("cameras-colmap-short-image-line", colmap_case(image_line(3, lambda f: f[:6])),
                "images.txt:9: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got 6 fields"),
    CommandCase("cameras-colmap-nan-translation", colmap_case(image_line(4, lambda f: f[:5] + ["nan"] + f[6:])),
                "images.txt:11: image 4 (frame_4.png): expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME with finite numbers"),
    CommandCase("cameras-colmap-image-of-a-missing-camera", colmap_case(image_line(5, lambda f: f[:8] + ["9"] + f[9:])),
                "images.txt:13: image 5 (frame_5.png): CAMERA_ID 9 is not in cameras.txt"),
    CommandCase("cameras-colmap-huge-camera-line", colmap_case(append_text("cameras.txt", "3 PINHOLE " + "1 " * 100_000 + "\n")),
                "cameras.txt:6: line longer than 65,536 characters"),
    CommandCase("cameras-colmap-100001-cameras", colmap_case(append_text("cameras.txt", "".join(
        f"{i} PINHOLE 224 128 120 120 112 64\n" for i in range(3, 100_003)))), "cameras.txt:100004: more than 100,000 cameras"),
    CommandCase("cameras-colmap-images-fifo", colmap_case(replace_file("images.txt", os.mkfifo)),
                "images.txt: is a named pipe (FIFO), expected a regular file"),
    CommandCase("cameras-colmap-cameras-directory", colmap_case(replace_file("cameras.txt", os.mkdir)),
                "cameras.txt: is a directory, expected a regular file"),
    CommandCase("cameras-colmap-equirectangular", colmap_case(lambda m: (m / "cameras.txt").write_text(
        (m / "cameras.txt").read_text().replace("2 SIMPLE_RADIAL 224 128 118 112 64 0.01", "2 EQUIRECTANGULAR 224 128 112 64"))),
        "camera 2: camera model EQUIRECTANGULAR is not a perspective camera"),
    CommandCase("cameras-trajectory-json-fifo", lambda folder: fifo_argv(folder / "path.json", ["trajectory", str(folder / "path.json")]),
                "path.json: is a named pipe (FIFO), expected a regular file"),
]


# --- the fuzzer -----------------------------------------------------------------------------------

HOSTILE_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "0", "-1", "1e308", "1e-320", '"1"', "true",
                  "null", "[]", "[1]", "{}", "9" * 30, "-0", "1e6", "2", "0.5", ""]
"""What the fuzzer puts in place of one number of a Spatia camera file (never a line break)."""


def _replace_number(text: str, rng: random.Random) -> str:
    """``text`` with one of its numbers replaced by a hostile token."""
    import re

    spans = [m.span() for m in re.finditer(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)]
    start, end = rng.choice(spans)
    return text[:start] + rng.choice(HOSTILE_TOKENS) + text[end:]


def _flip_byte(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one bit of one byte flipped, never into a line break."""
    out = bytearray(data)
    while True:
        at, bit = rng.randrange(len(out)), 1 << rng.randrange(8)
        if out[at] ^ bit not in (0x0A, 0x0D):
            out[at] ^= bit
            return bytes(out)


def _mutate_spatia(folder: Path, how: str, rng: random.Random) -> None:
    """One change to a valid Spatia folder: a number replaced, a line dropped or doubled, a bit
    flipped, the file cut, or the intrinsics changed."""
    w2c, intrinsics = folder / "w2c.txt", folder / "intrinsics.txt"
    lines = w2c.read_text().splitlines()
    at = rng.randrange(len(lines))
    if how == "w2c-number":
        lines[at] = _replace_number(lines[at], rng)
    elif how == "w2c-drop-line":
        del lines[at]
    elif how == "w2c-double-line":
        lines.insert(at, lines[at])
    elif how == "w2c-3x4":
        lines[at] = json.dumps(json.loads(lines[at])[:3])
    if how.startswith("w2c-") and how not in ("w2c-flip", "w2c-cut"):
        w2c.write_text("".join(line + "\n" for line in lines))
    elif how == "w2c-flip":
        w2c.write_bytes(_flip_byte(w2c.read_bytes(), rng))
    elif how == "w2c-cut":
        data = w2c.read_bytes()
        w2c.write_bytes(data[: rng.randrange(len(data))])
    elif how == "intrinsics-number":
        intrinsics.write_text(_replace_number(intrinsics.read_text(), rng))
    elif how == "intrinsics-flip":
        intrinsics.write_bytes(_flip_byte(intrinsics.read_bytes(), rng))
    elif how == "intrinsics-scale":
        values = [float(v) * rng.choice([0.0, -1.0, 1e-3, 100.0, 1280.0]) for v in intrinsics.read_text().strip("[]").split()]
        intrinsics.write_text("[" + " ".join(repr(v) for v in values) + "]")


SPATIA_MUTATIONS = ("w2c-number", "w2c-drop-line", "w2c-double-line", "w2c-3x4", "w2c-flip", "w2c-cut",
                    "intrinsics-number", "intrinsics-flip", "intrinsics-scale")


def _mutate_colmap(model: Path, how: str, rng: random.Random) -> None:
    """One change to a pycolmap text model: a number of one line replaced, a line dropped, a bit flipped."""
    path = model / rng.choice(["cameras.txt", "images.txt"])
    lines = path.read_text().split("\n")
    data_lines = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    at = rng.choice(data_lines)
    if how == "colmap-number":
        tokens = lines[at].split(" ")
        numeric = [i for i, t in enumerate(tokens) if t.lstrip("-").replace(".", "", 1).isdigit()]
        tokens[rng.choice(numeric)] = rng.choice(["nan", "inf", "-1", "0", "1e308", "2", "x", "", "4294967296"])
        lines[at] = " ".join(tokens)
        path.write_text("\n".join(lines))
    elif how == "colmap-drop-line":
        del lines[at]
        path.write_text("\n".join(lines))
    else:
        path.write_bytes(_flip_byte(path.read_bytes(), rng))


COLMAP_MUTATIONS = ("colmap-number", "colmap-drop-line", "colmap-flip")


def fuzz_cases(n: int, seed: int) -> list[CommandCase]:
    """``n`` seeded cases ``fuzz-cameras-<i>``: a valid Spatia scene (``mirage validate``) or COLMAP
    text model (``mirage trajectory``) with one change; case ``i`` depends only on (seed, i)."""
    cases = []
    for i in range(n):
        rng = random.Random(f"cameras-{seed}-{i}")
        how = rng.choice(SPATIA_MUTATIONS + COLMAP_MUTATIONS)
        change_seed = rng.randrange(2**32)

        def build(folder: Path, how: str = how, change_seed: int = change_seed) -> list[str]:
            r = random.Random(change_seed)
            if how.startswith("colmap-"):
                model = write_colmap_text(folder)
                _mutate_colmap(model, how, r)
                return ["trajectory", str(model)]
            spec = write_spatia_scene(folder)
            _mutate_spatia(folder / SPATIA_FOLDER, how, r)
            return ["validate", str(spec)]

        cases.append(CommandCase(f"fuzz-cameras-{i}-{how}", build, None))
    return cases

