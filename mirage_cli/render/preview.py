"""``mirage preview``: fly the camera path through the start image lifted to a point cloud.

The start image is lifted with its depth at the path's first camera into an ``RGBPointMemory``
(the baseline's renderer) and rendered at every camera of the path; pixels nothing lands on are
painted ``hole_color``. No model, CPU, seconds: the way to check a camera path (direction,
speed, how much of each frame the start image still explains) before a real render.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mirage_cli.base.errors import InputError
from mirage_cli.base.video import write_mp4
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.depth.providers import DepthAligner, is_no_model, make_depth_provider
from mirage_cli.memory import RGBPointMemory
from mirage_cli.render.inputs import preflight
from mirage_cli.render.prepare import estimate_intrinsics
from mirage_cli.spec.plan import load_plan

HOLE_COLOR = (1.0, 0.0, 1.0)  # magenta: never a colour of the scene, easy to spot
FRAMES_PER_BATCH = 8


def preview_frames(rgb: Tensor, depth: Tensor, trajectory: Trajectory, hole_color: Sequence[float] = HOLE_COLOR) -> Iterator[np.ndarray]:
    """Yield uint8 [H, W, 3] frames of the start image's point cloud along ``trajectory``.

    Args:
        rgb: float [3, H, W] in [0, 1], the start image at the path's render size.
        depth: float [H, W] its z-depth (<= 0, nan, inf: no point).
        trajectory: the camera path; its first camera is the start image's.
        hole_color: RGB in [0, 1] for pixels no point lands on.
    """
    H, W = trajectory.height, trajectory.width
    if tuple(rgb.shape) != (3, H, W):
        raise ValueError(f"rgb: expected shape [3, {H}, {W}] (the trajectory's size), got {list(rgb.shape)}")
    if tuple(depth.shape) != (H, W):
        raise ValueError(f"depth: expected shape [{H}, {W}] (the trajectory's size), got {list(depth.shape)}")
    if len(hole_color) != 3:
        raise ValueError(f"hole_color: expected 3 values, got {len(hole_color)}")
    K = torch.as_tensor(trajectory.K, dtype=torch.float64)  # [N, 3, 3]
    world_from_cam = torch.as_tensor(trajectory.world_from_cam, dtype=torch.float64)  # [N, 4, 4]
    cloud = RGBPointMemory()
    cloud.insert(rgb.float(), depth.float(), K[0], world_from_cam[0])
    hole = torch.tensor([float(c) for c in hole_color]).clamp(0, 1)  # [3]
    for start in range(0, len(trajectory), FRAMES_PER_BATCH):
        sl = slice(start, min(len(trajectory), start + FRAMES_PER_BATCH))
        view = cloud.query(K[sl], world_from_cam[sl], (H, W), mark_seen=False)
        frames = torch.where(view.mask[:, None], view.rgb, hole[None, :, None, None])  # [B, 3, H, W]
        frames = (frames.permute(0, 2, 3, 1) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()  # [B, H, W, 3]
        yield from frames


def render_preview(
    rgb: Tensor,
    depth: Tensor,
    trajectory: Trajectory,
    out_path: str | os.PathLike,
    hole_color: Sequence[float] = HOLE_COLOR,
) -> Path:
    """Write the preview of ``trajectory`` as an MP4 at the trajectory's fps, atomically.

    Args as ``preview_frames``; ``out_path`` is the ``.mp4`` to write. Returns the path.
    """
    out = Path(out_path)
    write_mp4(out, preview_frames(rgb, depth, trajectory, hole_color), trajectory.fps)
    return out


def preview_scene(scene: str | os.PathLike, out_path: str | os.PathLike, hole_color: Sequence[float] = HOLE_COLOR, *,
                  depth_model: str | None = None, preset: str | None = None) -> dict:
    """Preview a scene spec: its start image and its depth along its camera path, at its size and fps.

    ``depth_model`` replaces the spec's; ``preset`` is the render's (``tiny``: the tiny depth model
    when neither names one), as ``load_plan`` takes them.

    The depth is the render's: the spec's ``depth:``, else the depth model's estimate in the path's
    units as the render would compute it (``DepthAligner.start_depth`` with the plan's scene scale:
    fitted to COLMAP points, a metric model as is, or a stated scale), so the preview shows what the
    memory will do.

    Returns:
        {"path", "frames", "width", "height", "fps", "scale"} of the written MP4.

    Raises:
        InputError: the spec is invalid, or gives no depth and no depth model.
    """
    plan = estimate_intrinsics(load_plan(scene, overrides={"depth_model": depth_model}, preset=preset))
    start = preflight(plan, render=False)
    depth = start.depth
    if depth is None:
        if is_no_model(plan.depth_model):
            raise InputError(
                "a preview lifts the start image with its depth: set `depth:` to a .npy (float z-depth) or 16-bit PNG, "
                "or name a depth model (depth_model)",
                file=str(scene),
                field="depth",
            )
        provider = make_depth_provider(plan.depth_model, torch.device("cpu"))
        depth = DepthAligner(provider, (plan.height, plan.width)).start_depth(start.image.float(), plan.scale)
    path = render_preview(start.image, depth, plan.trajectory, out_path, hole_color)
    traj = plan.trajectory
    return {"path": str(path), "frames": len(traj), "width": traj.width, "height": traj.height, "fps": traj.fps,
            "scale": plan.scale.describe() if plan.scale is not None else None}
