"""The COLMAP sparse model reader (text or binary, through pycolmap).

Before pycolmap sees a model, every file of it must be a regular file within
``limits.MAX_MODEL_BYTES``, and a text model's ``cameras.txt`` / ``images.txt`` are checked line by
line, so a malformed line is reported with its file and line. What pycolmap still refuses is
restated in one line without its C++ internals, and a problem shared by many cameras or images is
reported once, with how many it concerns.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem, ProblemList
from mirage_cli.base.files import file_problem
from mirage_cli.base.limits import MAX_KEYFRAMES, MAX_MODEL_BYTES
from mirage_cli.camera.colmap_binary import binary_model_problems
from mirage_cli.camera.conventions import colmap_to_world_from_cam
from mirage_cli.camera.intrinsics import K_problem, from_corner_origin, rescale_K
from mirage_cli.camera.keyframes import Keyframes, pose_problem
from mirage_cli.camera.rotations import quaternion_problem

log = logging.getLogger(__name__)

_COLMAP_FILES = ("cameras", "images")
MAX_CAMERA_SIDE = 100_000
MODEL_FILES = ("rigs", "cameras", "frames", "images")
"""The files of a model that are read (points3D never is: the camera path needs no points)."""


def import_pycolmap():
    """The pycolmap module, imported only after the libraries that link zlib.

    pycolmap's wheel (4.x) exports the zlib it carries; a zlib user loaded after it (Python's zlib
    module, Pillow, so matplotlib's PNG writer) then mixes the two and the process aborts with heap
    corruption at its next compression. Loading those first keeps each on its own zlib.
    """
    import zlib  # noqa: F401

    import PIL._imaging  # noqa: F401
    import pycolmap

    return pycolmap


@functools.lru_cache(maxsize=1)
def camera_models() -> dict[str, tuple[int, int]]:
    """COLMAP's camera models as pycolmap knows them: name -> (model id, number of parameters)."""
    pycolmap = import_pycolmap()
    out = {}
    for name, model in pycolmap.CameraModelId.__members__.items():
        if int(model.value) >= 0:
            out[name] = (int(model.value), len(pycolmap.Camera.create_from_model_id(1, model, 1.0, 1, 1).params))
    return out


def _is_colmap_model(d: Path) -> bool:
    return all(os.path.exists(d / f"{n}.txt") or os.path.exists(d / f"{n}.bin") for n in _COLMAP_FILES)


def find_colmap_model(path: Path) -> Path | None:
    """The model folder for ``path``: itself, or ``path/sparse/0``, ``path/0``, ``path/sparse``."""
    for d in (path, path / "sparse" / "0", path / "0", path / "sparse"):
        if os.path.isdir(d) and _is_colmap_model(d):
            return d
    return None


def natural_key(name: str) -> list:
    """Sort key ordering the digit runs of ``name`` by value (frame_2 before frame_10): each run is
    compared by its length without leading zeros, then its digits, so a run of any length is fine."""
    return [(len(s.lstrip("0")), s.lstrip("0")) if i % 2 else s for i, s in enumerate(re.split(r"([0-9]+)", name))]


MAX_LINE_CHARS = 1 << 16
"""Longest camera or image line of a text model read (an image name is at most 4,096 bytes); the
POINTS2D line after an image line is only counted, whatever its length."""


def _fields(f):
    """(line number, fields, count) of every line of the open text file ``f``: ``fields`` the
    whitespace-separated fields, and ``count`` their number. A line longer than ``MAX_LINE_CHARS`` is
    read in pieces, never held whole: its fields are None, or only its first when it is a comment."""
    lineno = 0
    while True:
        text = f.readline(MAX_LINE_CHARS + 1)
        if not text:
            return
        lineno += 1
        if len(text) <= MAX_LINE_CHARS or text.endswith("\n"):
            fields = text.split()
            yield lineno, fields, len(fields)
            continue
        first = text.split(None, 1)[:1]
        count, after_space = 0, True
        while text:
            count += len(text.split()) - (0 if after_space or text[0].isspace() else 1)  # a field cut in two counts once
            after_space = text[-1].isspace()
            text = "" if text.endswith("\n") else f.readline(MAX_LINE_CHARS)
        yield lineno, first if first and first[0].startswith("#") else None, count


def _data_lines(path: Path):
    """(line number, fields) of every data line of a COLMAP text file, as COLMAP reads it: a line
    that is neither empty nor a comment (``#``); fields None for a line longer than ``MAX_LINE_CHARS``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, fields, count in _fields(f):
            if count and not (fields is not None and fields[0].startswith("#")):
                yield lineno, fields


def _image_lines(path: Path):
    """(line number, fields, POINTS2D line number, its number of values) of every image of
    images.txt, paired as COLMAP pairs them: an image line is a data line (``_data_lines``), and
    the line right after it, whatever it holds, is its POINTS2D line (empty for an image without
    2D points, as COLMAP writes it; None at the end of the file)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = _fields(f)
        for lineno, fields, count in lines:
            if not count or (fields is not None and fields[0].startswith("#")):
                continue
            points_lineno, _, points = next(lines, (None, None, 0))
            yield lineno, fields, points_lineno, points


def _numbers(fields: list[str]) -> list[float] | None:
    try:
        values = [float(x) for x in fields]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None



ID_PATTERN = re.compile(r"[0-9]{1,18}")
"""A COLMAP id or size: ASCII digits only, short enough for int64 (``str.isdigit`` also accepts
superscripts, and Python's ``int`` refuses more than 4,300 digits)."""


def _is_id(text: str) -> bool:
    return ID_PATTERN.fullmatch(text) is not None


def _check_cameras_txt(path: Path, problems: list[Problem]) -> set[int]:
    """Every camera line; returns the ids of the cameras."""
    models = camera_models()
    cameras = 0
    ids: set[int] = set()
    for lineno, fields in _data_lines(path):
        def bad(message: str, lineno: int = lineno) -> None:
            problems.append(Problem(file=str(path), field=None, line=lineno, message=message))

        cameras += 1
        if cameras > MAX_KEYFRAMES:
            bad(f"more than {MAX_KEYFRAMES:,} cameras")
            return ids
        if fields is not None and _is_id(fields[0]):
            ids.add(int(fields[0]))
        if fields is None:
            bad(f"line longer than {MAX_LINE_CHARS:,} characters: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...")
        elif len(fields) < 4 or not _is_id(fields[0]):
            bad("expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...")
        elif fields[1] not in models:
            bad(f"unknown camera model {fields[1][:40]!r}")
        elif len(fields) != 4 + models[fields[1]][1]:
            bad(f"camera model {fields[1]} takes {models[fields[1]][1]} parameters, got {len(fields) - 4}")
        elif not (_is_id(fields[2]) and _is_id(fields[3]) and 0 < int(fields[2]) <= MAX_CAMERA_SIDE
                  and 0 < int(fields[3]) <= MAX_CAMERA_SIDE):
            bad(f"width and height must be whole numbers of pixels between 1 and {MAX_CAMERA_SIDE:,}, got {fields[2]} {fields[3]}")
        elif _numbers(fields[4:]) is None:
            bad("camera parameters must be finite numbers")
    return ids


IMAGE_LINE = "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"


def _image_line_problem(fields: list[str] | None) -> str | None:
    """Why one image line of images.txt (``IMAGE_LINE``) cannot be read, or None."""
    if fields is None:
        return f"line longer than {MAX_LINE_CHARS:,} characters: expected {IMAGE_LINE}"
    if len(fields) < 10 or not _is_id(fields[0]):
        return (f"expected {IMAGE_LINE}, got {len(fields)} fields starting {' '.join(fields[:3])[:60]!r} "
                "(each image takes two lines: this one, then its POINTS2D line, empty when it has none)")
    numbers = _numbers(fields[1:8])
    if numbers is None or not _is_id(fields[8]):
        why = f"expected {IMAGE_LINE} with finite numbers and a whole CAMERA_ID"
    else:
        why = quaternion_problem(np.array(numbers[:4]))
    return None if why is None else f"image {fields[0]} ({fields[9][:80]}): {why}"


def _check_images_txt(path: Path, problems: list[Problem], camera_ids: set[int]) -> None:
    """Every image line (``IMAGE_LINE``), and that the POINTS2D line after each holds triples (its
    values are not read: the camera path needs no points)."""
    images = 0
    missing: dict[int, list[tuple[int, str]]] = {}  # camera id -> (line, image) of the images that use it
    for lineno, fields, points_lineno, points in _image_lines(path):
        images += 1
        if images > MAX_KEYFRAMES:
            problems.append(Problem(file=str(path), field=None, line=lineno, message=f"more than {MAX_KEYFRAMES:,} images"))
            return
        why = _image_line_problem(fields)
        if why:
            problems.append(Problem(file=str(path), field=None, line=lineno, message=why))
        elif int(fields[8]) not in camera_ids:
            missing.setdefault(int(fields[8]), []).append((lineno, f"image {fields[0]} ({fields[9][:80]})"))
        elif points % 3:
            problems.append(Problem(file=str(path), field=None, line=points_lineno, message=(
                f"the POINTS2D line of image {fields[0]} holds {points:,} values, not (X, Y, POINT3D_ID) triples: each "
                "image takes two lines, its image line and then its POINTS2D line (empty when it has no points); "
                "is a line missing?")))
    for camera_id, users in missing.items():  # one problem per missing camera, however many images use it
        more = f" and {len(users) - 1:,} more image{'s' if len(users) > 2 else ''}" if len(users) > 1 else ""
        problems.append(Problem(file=str(path), field=None, line=users[0][0], message=(
            f"{users[0][1]}{more}: CAMERA_ID {camera_id} is not in cameras.txt")))


def _is_binary(model: Path) -> bool:
    """Whether pycolmap would read the binary files of ``model`` (they win over text ones)."""
    return os.path.exists(model / "cameras.bin") and os.path.exists(model / "images.bin")


def check_model_files(model: Path) -> None:
    """The files that are read are regular files within the size limit; text files are checked
    line by line, binary files by their structure (``colmap_binary``)."""
    problems: list[Problem] = []
    suffix = ".bin" if _is_binary(model) else ".txt"
    for stem in MODEL_FILES:
        path = model / f"{stem}{suffix}"
        why = file_problem(path, MAX_MODEL_BYTES) if os.path.lexists(path) else None
        if why is not None:
            problems.append(Problem(file=str(path), field=None, message=why))
    if not problems and suffix == ".txt":
        camera_ids = _check_cameras_txt(model / "cameras.txt", problems)
        if not problems:
            _check_images_txt(model / "images.txt", problems, camera_ids)
    elif not problems:
        problems = binary_model_problems(model, {model_id: n for model_id, n in camera_models().values()})
    if problems:
        raise InputError(problems)


def _restate(error: Exception) -> str:
    """pycolmap's message in one line, without C++ internals."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if any(marker in text for marker in ("Check failed", "::", "basic_string", ".cc:", ".h:")):
        return "its files are damaged or not COLMAP files (cameras, images)"
    return text[:200]


def _load(model: Path):
    """The model's cameras and images through pycolmap, after ``check_model_files``.

    pycolmap reads a folder of links to the model's files beside an empty points3D: the points are
    not needed, so neither their size nor their content can slow or break the read.
    """
    pycolmap = import_pycolmap()
    check_model_files(model)
    suffix = ".bin" if _is_binary(model) else ".txt"
    with tempfile.TemporaryDirectory(prefix="mirage-colmap-") as tmp:
        for stem in MODEL_FILES:
            if os.path.exists(model / f"{stem}{suffix}"):
                os.symlink(os.path.abspath(model / f"{stem}{suffix}"), Path(tmp) / f"{stem}{suffix}")
        (Path(tmp) / f"points3D{suffix}").write_bytes(bytes(8) if suffix == ".bin" else b"")  # no points
        try:
            return pycolmap.Reconstruction(tmp)
        except Exception as e:  # pycolmap raises ValueError/RuntimeError with its own check message
            raise InputError([Problem(file=str(model), field=None, message=f"COLMAP model does not load: {_restate(e)}")]) from None


def _grouped(problems: ProblemList, grouped: dict[tuple[str, str], list[str]]) -> None:
    """One problem per (kind, message), naming how many cameras or images it concerns."""
    for (kind, message), where in grouped.items():
        shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
        problems.add(kind, f"{message} ({shown})" if len(where) > 1 else f"{where[0]}: {message}")


def read_colmap(path: str | Path, order: str = "name") -> Keyframes:
    """Read a COLMAP sparse model (text or binary) with pycolmap.

    Poses: COLMAP's cam_from_world (qvec w,x,y,z; tvec) -> world_from_cam via
    ``conventions.colmap_to_world_from_cam``. Intrinsics: the camera's calibration matrix, principal
    point moved from COLMAP's corner origin to pixel centres (c - 0.5), rescaled to the first
    image's camera size when cameras differ. Lens distortion is ignored (logged as a warning).

    Args:
        path: the model folder, or a folder holding ``sparse/0``.
        order: "name" (natural order of image names) or "id".
    """
    path = Path(path)
    problems = ProblemList(str(path))
    if not os.path.exists(path):
        problems.add("", "COLMAP model folder not found")
        problems.raise_if_any()
    model = find_colmap_model(path) if os.path.isdir(path) else None
    if model is None:
        problems.add("", "not a COLMAP sparse model: expected cameras.txt/images.txt or cameras.bin/images.bin "
                         "(here, in sparse/0, or in 0/)")
        problems.raise_if_any()
    if order not in ("name", "id"):
        problems.add("order", f"expected 'name' or 'id', got {order!r}")
        problems.raise_if_any()
    rec = _load(model)
    problems = ProblemList(str(model))
    images = [im for im in rec.images.values() if im.has_pose]
    if not images:
        problems.add("images", "the model has no registered images (no camera poses)")
    elif len(images) > MAX_KEYFRAMES:
        problems.add("images", f"{len(images):,} registered images: more than the limit of {MAX_KEYFRAMES:,}")
    problems.raise_if_any()
    try:
        images.sort(key=(lambda im: natural_key(im.name)) if order == "name" else (lambda im: im.image_id))
        return _keyframes(rec, images, model, problems)
    except UnicodeDecodeError:  # pycolmap decodes an image's name when it is read
        raise InputError([Problem(file=str(model), field="images", message="an image name is not UTF-8 text: "
                                  "the model's images file is damaged")]) from None


def _keyframes(rec, images: list, model: Path, problems: ProblemList) -> Keyframes:
    """Poses and intrinsics of ``images`` (sorted); problems grouped by message."""
    first_cam = rec.cameras[images[0].camera_id]
    size = (int(first_cam.width), int(first_cam.height))
    poses, Ks, names = [], [], []
    warned: set[str] = set()
    grouped: dict[tuple[str, str], list[str]] = {}
    for im in images:
        rigid = im.cam_from_world()
        xyzw = np.asarray(rigid.rotation.quat, dtype=np.float64)
        qvec = np.array([xyzw[3], xyzw[0], xyzw[1], xyzw[2]])  # pycolmap stores x, y, z, w
        tvec = np.asarray(rigid.translation, dtype=np.float64)
        why = quaternion_problem(qvec) or (None if np.all(np.isfinite(tvec)) else "translation contains NaN or inf")
        world_from_cam = colmap_to_world_from_cam(qvec, tvec) if why is None else None
        why = why or pose_problem(world_from_cam)
        if why:
            grouped.setdefault(("images", why), []).append(f"image {im.image_id} ({im.name})")
            continue
        cam = rec.cameras[im.camera_id]
        model_name = str(cam.model).split(".")[-1]
        try:
            K = from_corner_origin(np.asarray(cam.calibration_matrix(), dtype=np.float64))
        except (ValueError, RuntimeError):  # pycolmap defines K for perspective models only
            grouped.setdefault(("cameras", f"camera model {model_name} is not a perspective camera (it has no focal "
                                           "length and principal point): give a pinhole or lens-distortion model"),
                               []).append(f"camera {im.camera_id}")
            continue
        if model_name not in ("SIMPLE_PINHOLE", "PINHOLE") and model_name not in warned:
            warned.add(model_name)
            log.warning("%s: camera model %s: lens distortion is ignored (pinhole part only)", model, model_name)
        why = K_problem(K)
        if not (0 < int(cam.width) <= MAX_CAMERA_SIDE and 0 < int(cam.height) <= MAX_CAMERA_SIDE):
            why = f"width and height must be between 1 and {MAX_CAMERA_SIDE:,} pixels, got {int(cam.width)}x{int(cam.height)}"
        if why:
            grouped.setdefault(("cameras", why), []).append(f"camera {im.camera_id}")
            continue
        poses.append(world_from_cam)
        Ks.append(rescale_K(K, (int(cam.width), int(cam.height)), size))
        names.append(im.name)
    _grouped(problems, {k: list(dict.fromkeys(v)) for k, v in grouped.items()})
    problems.raise_if_any()
    return Keyframes(world_from_cam=np.stack(poses), K=np.stack(Ks), size=size, frames=len(poses),
                     native_size=size, kind="colmap", file=str(model), names=names)
