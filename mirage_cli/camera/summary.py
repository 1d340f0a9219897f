"""A short numeric summary of a camera path (what ``mirage trajectory`` prints)."""

from __future__ import annotations

import numpy as np

from mirage_cli.camera.intrinsics import vertical_fov_deg
from mirage_cli.camera.rotations import angle_between_deg
from mirage_cli.camera.trajectory import Trajectory


def path_length(world_from_cam: np.ndarray) -> float:
    """Sum of distances between consecutive camera centres. ``world_from_cam``: float [N, 4, 4]."""
    p = np.asarray(world_from_cam)[:, :3, 3]  # [N, 3]
    return float(np.sum(np.linalg.norm(np.diff(p, axis=0), axis=1)))


def total_rotation_deg(world_from_cam: np.ndarray) -> float:
    """Sum of shortest-arc rotation angles (degrees) between consecutive cameras.

    ``world_from_cam``: float [N, 4, 4]. Each step counts at most 180 degrees; q and -q are the same.
    """
    R = np.asarray(world_from_cam)[:, :3, :3]  # [N, 3, 3]
    if len(R) < 2:
        return 0.0
    return float(np.sum(angle_between_deg(R[:-1], R[1:])))


def summarize(traj: Trajectory) -> dict:
    """frames, fps, size, duration, path length, total rotation, bounding box, first/last position, fov."""
    p = traj.positions  # [N, 3]
    return {
        "frames": len(traj),
        "fps": float(traj.fps),
        "width": int(traj.width),
        "height": int(traj.height),
        "duration_s": (len(traj) - 1) / traj.fps if len(traj) > 1 else 0.0,
        "path_length": path_length(traj.world_from_cam),
        "total_rotation_deg": total_rotation_deg(traj.world_from_cam),
        "bbox_min": [float(x) for x in p.min(axis=0)],
        "bbox_max": [float(x) for x in p.max(axis=0)],
        "first_position": [float(x) for x in p[0]],
        "last_position": [float(x) for x in p[-1]],
        "vertical_fov_deg": [vertical_fov_deg(traj.K[0], traj.height), vertical_fov_deg(traj.K[-1], traj.height)],
    }


def describe(summary: dict) -> str:
    """Human-readable lines for ``summarize``'s dict."""
    def vec(v):
        return "[" + ", ".join(f"{x:.4g}" for x in v) + "]"

    fov = summary["vertical_fov_deg"]
    fov_text = f"{fov[0]:.4g}" if abs(fov[0] - fov[1]) < 1e-9 else f"{fov[0]:.4g} -> {fov[1]:.4g}"
    return "\n".join([
        f"frames:          {summary['frames']} at {summary['fps']:g} fps ({summary['duration_s']:.3g} s), "
        f"{summary['width']}x{summary['height']}",
        f"path length:     {summary['path_length']:.4g}",
        f"total rotation:  {summary['total_rotation_deg']:.4g} deg",
        f"bounding box:    min {vec(summary['bbox_min'])}  max {vec(summary['bbox_max'])}",
        f"first position:  {vec(summary['first_position'])}",
        f"last position:   {vec(summary['last_position'])}",
        f"vertical fov:    {fov_text} deg",
    ])
