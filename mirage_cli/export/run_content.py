"""What a run holds for a dataset: the frames rendered so far, their cameras, and the memory's points
coloured from the frames that saw them. Works on a finished run and on a stopped one.

The frames come from the chunks' segments (the lossless MKVs when every chunk has one, else the
MP4s), joined as ``video.mp4`` joins them: chunk 0's segment whole, every later one without the
frame it shares with the chunk before. The chunks done are the newest good checkpoint's. The cameras
are ``camera.json``'s first frames; the points are the checkpoint's memory, each coloured from the
pixel it projects to in the frame whose index it carries (OpenCV cameras, integer pixel centres:
docs/CONVENTIONS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.video import read_video
from mirage_cli.camera.source import load_trajectory
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.rundir.layout import RunDir


@dataclass(frozen=True)
class RunContent:
    """``frames`` uint8 [N, H, W, 3]; ``trajectory`` with N cameras; ``xyz`` float64 [P, 3], ``rgb``
    uint8 [P, 3] and ``seen_in`` int [P] (the frame each point was seen in) of the memory's points
    (P = 0 without a memory); ``chunks_done`` of ``chunks``; ``checkpoint``: the one read."""

    frames: np.ndarray
    trajectory: Trajectory
    xyz: np.ndarray
    rgb: np.ndarray
    seen_in: np.ndarray
    chunks_done: int
    chunks: int
    checkpoint: str


def _refuse(path: Path, message: str) -> InputError:
    return InputError(Problem(file=str(path), field=None, message=message))


def read_run(run_dir: str | Path) -> RunContent:
    """The ``RunContent`` of a run directory. Raises InputError naming the file for a run with nothing
    rendered, a damaged segment or camera file."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise _refuse(run.path, "run directory does not exist")
    store = run.checkpoints()
    ckpt = store.load_latest()
    if ckpt is None:
        why = "; ".join(store.warnings) or "no checkpoint in state/"
        raise _refuse(run.path, f"nothing to export: no chunk is rendered yet ({why})")
    done, chunks = int(ckpt.meta["chunk"]), int(ckpt.meta["num_chunks"])
    if done == 0:
        raise _refuse(run.path, f"nothing to export: no chunk is rendered yet (chunk 1 of {chunks} was stopped mid-way)")
    frames = _segment_frames(run, done)
    try:
        trajectory = load_trajectory(run.camera_json)
    except InputError as e:
        raise _refuse(run.camera_json, f"the run's cameras cannot be read: {e}") from None
    if len(trajectory) < len(frames):
        raise _refuse(run.camera_json, f"holds {len(trajectory)} cameras for {len(frames)} rendered frames")
    trajectory = trajectory.subset(range(len(frames)))
    if (trajectory.width, trajectory.height) != (frames.shape[2], frames.shape[1]):
        raise _refuse(run.camera_json, f"is for {trajectory.width}x{trajectory.height} but the frames are "
                                       f"{frames.shape[2]}x{frames.shape[1]}")
    xyz, seen_in = _memory_points(ckpt.tensors.get("memory"), len(frames))
    return RunContent(frames, trajectory, xyz, point_colours(xyz, seen_in, frames, trajectory), seen_in, done, chunks, ckpt.name)


def _segment_frames(run: RunDir, done: int) -> np.ndarray:
    """The frames of chunks 0 .. done-1 from their segments (module docstring)."""
    lossless = all(run.segment(i, lossless=True).is_file() for i in range(done))
    parts = []
    for i in range(done):
        path = run.segment(i, lossless=lossless)
        try:
            frames, _ = read_video(path)
        except (OSError, ValueError) as e:  # missing, truncated, not a video: PyAV's errors are ValueErrors
            raise _refuse(path, f"chunk {i + 1}'s segment cannot be read ({' '.join(str(e).split())[:160]}); "
                                "`mirage render` with the same spec rebuilds it from the chunk's latents") from None
        parts.append(frames)  # a later chunk's segment starts after the frame it shares with the chunk before
    return np.concatenate(parts)


def _memory_points(state: dict | None, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float64 [P, 3], frame index int [P]) of the memory's points seen in the first ``frames``
    frames; empty without a memory."""
    if not state or "xyz" not in state:
        return np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    xyz = state["xyz"].double().numpy()
    seen_in = state["frame_index"].long().numpy()
    keep = (seen_in >= 0) & (seen_in < frames) & np.isfinite(xyz).all(axis=1)
    return xyz[keep], seen_in[keep]


def project(xyz: np.ndarray, world_from_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates float64 [P, 2] and z-depth [P] of world points ``xyz`` [P, 3] in the cameras
    ``world_from_cam`` [P, 4, 4] (OpenCV) with intrinsics ``K`` [P, 3, 3], one camera per point."""
    cam_from_world = np.linalg.inv(world_from_cam)  # [P, 4, 4]
    cam = np.einsum("pij,pj->pi", cam_from_world[:, :3, :3], xyz) + cam_from_world[:, :3, 3]  # [P, 3]
    z = cam[:, 2]
    uv = np.einsum("pij,pj->pi", K, cam)[:, :2] / np.where(z > 0, z, np.nan)[:, None]
    return uv, z


def point_colours(xyz: np.ndarray, seen_in: np.ndarray, frames: np.ndarray, trajectory: Trajectory) -> np.ndarray:
    """uint8 [P, 3]: each point's colour at the pixel it projects to in the frame it was seen in (grey
    where it falls outside, which a point the memory saw there does not)."""
    rgb = np.full((len(xyz), 3), 128, dtype=np.uint8)
    if not len(xyz):
        return rgb
    uv, z = project(xyz, trajectory.world_from_cam[seen_in], trajectory.K[seen_in])
    H, W = frames.shape[1:3]
    u, v = np.round(uv[:, 0]), np.round(uv[:, 1])
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    rgb[inside] = frames[seen_in[inside], v[inside].astype(int), u[inside].astype(int)]
    return rgb
