"""A run as a dataset a reconstruction tool trains on (``RunContent``, ``export.run_content``):

- COLMAP: ``DIR/images/frame_00000.png ...`` and the sparse model ``DIR/sparse/0`` (text, or binary):
  one PINHOLE camera at the render size, every frame's pose, and the memory's points with their colour
  and a track of one observation, the frame that saw them (COLMAP's layout, which gsplat's and
  nerfstudio's COLMAP loaders read).
- nerfstudio: ``DIR/images/...``, ``DIR/transforms.json`` (OpenGL camera-to-world, OPENCV intrinsics)
  with ``ply_file_path`` naming ``DIR/sparse_pc.ply``, the coloured points (splatfacto starts from them).

Conventions change only here, at the boundary (docs/CONVENTIONS.md): COLMAP's pixel centres are at
+0.5 and its poses cam_from_world; nerfstudio's cameras look down -z with y up. A folder is written
beside its target and renamed into place, so an interrupted export leaves no half dataset; an
existing target must be empty.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mirage_cli.base.atomic import fsync_dir
from mirage_cli.base.errors import InputError, Problem
from mirage_cli.camera.colmap import import_pycolmap
from mirage_cli.camera.writers import colmap_reconstruction, write_nerfstudio_transforms
from mirage_cli.export.run_content import RunContent, project
from mirage_cli.memory.ply import write_point_cloud

IMAGES = "images"
POINT_CLOUD = "sparse_pc.ply"


def target_problem(path: Path) -> str | None:
    """Why a dataset cannot be written to ``path``, or None (a new or empty folder, in a writable one)."""
    path = path.absolute()
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    if path.is_dir() and any(path.iterdir()):
        return f"{path} is not empty; name a new folder"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not _writable(parent):
        return f"{parent} cannot be written"
    return None


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _write_into(target: Path, fill) -> None:
    """``fill(tmp)`` writes the dataset into a temporary folder beside ``target``, renamed into place."""
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        if target.is_dir():
            target.rmdir()  # empty (target_problem)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(target.parent)


def _write_images(content: RunContent, folder: Path) -> None:
    (folder / IMAGES).mkdir()
    for i, frame in enumerate(content.frames):
        Image.fromarray(frame).save(folder / IMAGES / f"frame_{i:05d}.png")


def _observations(content: RunContent) -> tuple[list[np.ndarray], np.ndarray]:
    """Per frame, the pixel positions [n, 2] of the points seen in it, and each point's index among its
    frame's (its ``point2D_idx``)."""
    traj = content.trajectory
    uv, _ = project(content.xyz, traj.world_from_cam[content.seen_in], traj.K[content.seen_in])
    per_frame: list[list[np.ndarray]] = [[] for _ in range(len(traj))]
    index = np.zeros(len(content.xyz), dtype=np.int64)
    for p, (frame, pixel) in enumerate(zip(content.seen_in, uv)):
        index[p] = len(per_frame[frame])
        per_frame[frame].append(pixel)
    return [np.array(rows).reshape(-1, 2) for rows in per_frame], index


def write_colmap_dataset(content: RunContent, target: Path, binary: bool = False) -> None:
    """The COLMAP dataset of ``content`` in ``target`` (module docstring)."""
    pycolmap = import_pycolmap()
    why = target_problem(target)
    if why:
        raise InputError(Problem(file=None, field="--colmap", message=why))
    observations, index = _observations(content)
    rec = colmap_reconstruction(content.trajectory, observations)
    for p in range(len(content.xyz)):
        track = pycolmap.Track()
        track.add_element(int(content.seen_in[p]) + 1, int(index[p]))
        rec.add_point3D(content.xyz[p], track, content.rgb[p])

    def fill(folder: Path) -> None:
        _write_images(content, folder)
        model = folder / "sparse" / "0"
        model.mkdir(parents=True)
        (rec.write_binary if binary else rec.write_text)(str(model))

    _write_into(target, fill)


def write_nerfstudio_dataset(content: RunContent, target: Path) -> None:
    """The nerfstudio dataset of ``content`` in ``target`` (module docstring)."""
    why = target_problem(target)
    if why:
        raise InputError(Problem(file=None, field="--nerfstudio", message=why))

    def fill(folder: Path) -> None:
        _write_images(content, folder)
        extra = {}
        if len(content.xyz):
            write_point_cloud(folder / POINT_CLOUD, torch.from_numpy(content.xyz).float(), torch.from_numpy(content.rgb))
            extra["ply_file_path"] = POINT_CLOUD
        write_nerfstudio_transforms(folder / "transforms.json", content.trajectory, extra)

    _write_into(target, fill)
