"""Writers: a Trajectory to every format the readers read. All writes are atomic.

- canonical JSON (docs/CONVENTIONS.md), RealEstate10K .txt, trajectory YAML (explicit keyframes with
  ``world_from_cam`` and ``K`` at every frame, so reading it back gives the same cameras),
- nerfstudio ``transforms.json`` / ``camera_path.json``, COLMAP text or binary (through pycolmap).

Floats are written with ``repr`` precision (17 significant digits) so round trips are exact.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from mirage_cli.base.atomic import atomic_write_json, atomic_write_text, fsync_dir
from mirage_cli.base.errors import InputError, Problem
from mirage_cli.camera.colmap import import_pycolmap
from mirage_cli.camera.conventions import camera_to_realestate10k_row, opencv_to_opengl, world_from_cam_to_colmap
from mirage_cli.camera.intrinsics import to_corner_origin, vertical_fov_deg
from mirage_cli.camera.trajectory import Trajectory

FORMATS = ("json", "realestate10k", "yaml", "nerfstudio-transforms", "nerfstudio-camera-path", "colmap-text",
           "colmap-binary")


def _rows(m: np.ndarray) -> list[list[float]]:
    return [[float(x) for x in row] for row in np.asarray(m)]


def canonical_dict(traj: Trajectory) -> dict:
    """The canonical trajectory JSON object of ``traj``."""
    return {"fps": float(traj.fps), "width": int(traj.width), "height": int(traj.height),
            "frames": [{"world_from_cam": _rows(traj.world_from_cam[i]), "K": _rows(traj.K[i])} for i in range(len(traj))]}


def write_canonical_json(path: str | Path, traj: Trajectory) -> None:
    """Canonical JSON: ``{"fps", "width", "height", "frames": [{"world_from_cam": 4x4, "K": 3x3}]}``."""
    atomic_write_json(path, canonical_dict(traj))


def write_realestate10k(path: str | Path, traj: Trajectory, header: str = "mirage-trajectory") -> None:
    """RealEstate10K .txt: a header line (where the dataset has the video URL), then per frame
    ``timestamp_us fx fy cx cy 0 0`` + 3x4 cam_from_world (``conventions.camera_to_realestate10k_row``),
    timestamps round(i / fps * 1e6)."""
    lines = [header]
    for i in range(len(traj)):
        row = camera_to_realestate10k_row(round(i / traj.fps * 1e6), traj.world_from_cam[i], traj.K[i],
                                          traj.width, traj.height)
        lines.append(" ".join([str(int(row[0]))] + [repr(x) for x in row[1:]]))
    atomic_write_text(path, "\n".join(lines) + "\n")


class _FlowList(list):
    """A list YAML writes on one line: [a, b, c]."""


def _flow_representer(dumper: yaml.SafeDumper, data: _FlowList):
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FlowList, _flow_representer)


def trajectory_yaml_text(traj: Trajectory) -> str:
    """Trajectory YAML with one keyframe per frame (``frame``, ``world_from_cam``, ``K``)."""
    doc = {"fps": float(traj.fps), "image_size": _FlowList([int(traj.width), int(traj.height)]), "frames": len(traj),
           "interpolation": "linear",
           "keyframes": [{"frame": i, "world_from_cam": [_FlowList(r) for r in _rows(traj.world_from_cam[i])],
                          "K": [_FlowList(r) for r in _rows(traj.K[i])]} for i in range(len(traj))]}
    head = ("# Camera path written by `mirage trajectory`: OpenCV world_from_cam (x right, y down, z forward),\n"
            "# K in pixels at image_size [W, H] (pixel centres at integer coordinates). One keyframe per frame.\n")
    return head + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)


def write_trajectory_yaml(path: str | Path, traj: Trajectory) -> None:
    """Trajectory YAML (see ``trajectory_yaml_text``)."""
    atomic_write_text(path, trajectory_yaml_text(traj))


def write_nerfstudio_transforms(path: str | Path, traj: Trajectory, extra: dict | None = None) -> None:
    """nerfstudio transforms.json: per frame ``transform_matrix`` (OpenGL c2w = world_from_cam @
    diag(1,-1,-1,1)) and ``fl_x, fl_y, cx, cy, w, h`` (principal point at the corner origin: c + 0.5);
    ``extra``: more top-level keys (a dataset's ``ply_file_path``)."""
    frames = []
    for i in range(len(traj)):
        K = to_corner_origin(traj.K[i])
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": _rows(opencv_to_opengl(traj.world_from_cam[i])),
                       "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
                       "w": int(traj.width), "h": int(traj.height)})
    atomic_write_json(path, {"camera_model": "OPENCV", "w": int(traj.width), "h": int(traj.height), **(extra or {}), "frames": frames})


def write_nerfstudio_camera_path(path: str | Path, traj: Trajectory) -> None:
    """nerfstudio camera_path.json: ``camera_to_world`` (16 floats, OpenGL) and vertical ``fov`` per
    frame. Only a centred, square-pixel K survives this format (it stores a fov, not K)."""
    cams = [{"camera_to_world": [float(x) for x in opencv_to_opengl(traj.world_from_cam[i]).reshape(-1)],
             "fov": vertical_fov_deg(traj.K[i], traj.height), "aspect": traj.width / traj.height}
            for i in range(len(traj))]
    atomic_write_json(path, {"camera_type": "perspective", "render_height": int(traj.height),
                             "render_width": int(traj.width), "fps": float(traj.fps),
                             "seconds": len(traj) / traj.fps, "camera_path": cams})


COLMAP_MODEL_FILES = {f"{stem}{suffix}" for stem in ("cameras", "images", "points3D", "rigs", "frames")
                      for suffix in (".txt", ".bin")}


def colmap_output_problem(path: str | Path) -> str | None:
    """Why ``write_colmap`` must not replace ``path``, or None: an existing folder is replaced only
    when it is empty or holds nothing but a COLMAP model (no other files are ever deleted)."""
    path = Path(path).absolute()
    if path == Path(path.anchor) or Path.cwd().is_relative_to(path):
        return f"{path} is the current folder or above it; name a new folder for the COLMAP model"
    if os.path.isdir(path):
        others = sorted(p.name for p in path.iterdir() if p.name not in COLMAP_MODEL_FILES)
        if others:
            return (f"{path} holds files that are not a COLMAP model ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); name a new folder, it would be replaced")
    return None


def colmap_reconstruction(traj: Trajectory, observations: list[np.ndarray] | None = None):
    """A pycolmap ``Reconstruction`` of the path: one PINHOLE camera per distinct K (principal point at
    COLMAP's corner origin: c + 0.5), images ``frame_00000.png``... (image id = frame + 1) with
    cam_from_world from ``conventions.world_from_cam_to_colmap``. ``observations``: per frame, the
    pixel positions float [n, 2] (ours, integer centres) of the 2D points it holds, in the order the
    points that refer to them will be added (``point2D_idx``)."""
    pycolmap = import_pycolmap()
    rec = pycolmap.Reconstruction()
    cam_ids: dict[tuple, int] = {}
    for i in range(len(traj)):
        K = to_corner_origin(traj.K[i])
        key = tuple(np.round([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], 12))
        if key not in cam_ids:
            cam_ids[key] = len(cam_ids) + 1
            cam = pycolmap.Camera(camera_id=cam_ids[key], model="PINHOLE", width=int(traj.width),
                                  height=int(traj.height), params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
            rec.add_camera_with_trivial_rig(cam)
        qvec, tvec = world_from_cam_to_colmap(traj.world_from_cam[i])
        xyzw = np.array([qvec[1], qvec[2], qvec[3], qvec[0]])
        points = [] if observations is None else [pycolmap.Point2D(np.asarray(uv, float) + 0.5) for uv in observations[i]]
        image = pycolmap.Image(name=f"frame_{i:05d}.png", camera_id=cam_ids[key], image_id=i + 1,
                               points2D=pycolmap.Point2DList(points))
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(xyzw), tvec))
    return rec


def write_colmap(path: str | Path, traj: Trajectory, binary: bool = False) -> None:
    """COLMAP sparse model (text or binary) written by pycolmap: one PINHOLE camera per distinct K
    (principal point at COLMAP's corner origin: c + 0.5), images ``frame_00000.png``... with
    cam_from_world from ``conventions.world_from_cam_to_colmap``. The folder is replaced atomically;
    one holding anything but a COLMAP model is refused (``colmap_output_problem``)."""
    why = colmap_output_problem(path)
    if why:
        raise InputError([Problem(file=None, field="--to", message=why)])
    path = Path(path).absolute()
    rec = colmap_reconstruction(traj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (rec.write_binary if binary else rec.write_text)(str(tmp))
    old = path.parent / f".{path.name}.old"
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        path.replace(old)
    tmp.replace(path)
    if old.exists():
        shutil.rmtree(old)
    fsync_dir(path.parent)


def format_for_path(path: str | Path) -> str | None:
    """The output format implied by ``path``: *transforms.json, *camera_path.json, .json, .txt,
    .yaml/.yml; a path without a suffix is a COLMAP text model folder. None if unknown."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith("transforms.json"):
        return "nerfstudio-transforms"
    if name.endswith("camera_path.json"):
        return "nerfstudio-camera-path"
    suffix = path.suffix.lower()
    return {".json": "json", ".txt": "realestate10k", ".yaml": "yaml", ".yml": "yaml", "": "colmap-text"}.get(suffix)


def write_trajectory(path: str | Path, traj: Trajectory, fmt: str | None = None) -> str:
    """Write ``traj`` to ``path`` in ``fmt`` (one of FORMATS; from the path when None). Returns the format."""
    fmt = fmt or format_for_path(path)
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
    writers = {"json": write_canonical_json, "realestate10k": write_realestate10k, "yaml": write_trajectory_yaml,
               "nerfstudio-transforms": write_nerfstudio_transforms,
               "nerfstudio-camera-path": write_nerfstudio_camera_path,
               "colmap-text": lambda p, t: write_colmap(p, t, binary=False),
               "colmap-binary": lambda p, t: write_colmap(p, t, binary=True)}
    writers[fmt](path, traj)
    return fmt


def output_format(path: str | Path | None, fmt: str | None) -> str:
    """The format ``write_trajectory`` will use for ``path``; InputError when unknown or missing."""
    if path is None:
        raise InputError([Problem(file=None, field="--to-format", message="needs --to PATH")])
    if fmt is not None and fmt not in FORMATS:
        raise InputError([Problem(file=None, field="--to-format",
                                  message=f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")])
    fmt = fmt or format_for_path(path)
    if fmt is None:
        raise InputError([Problem(file=str(path), field="--to",
                                  message="unknown output type: use .json, .txt, .yaml/.yml, *transforms.json, "
                                          "*camera_path.json, a folder name without suffix (COLMAP), or --to-format")])
    return fmt
