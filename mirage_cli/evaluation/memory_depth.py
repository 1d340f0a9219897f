"""The depth of every frame as the run's memory saw it: the memory's 3D points (the newest good
checkpoint of a run directory) projected into each frame's camera with a z-buffer.

The memory holds one point per latent cell, each covering a square of its ``radius`` (world half-size)
around it, so the depth is resolved on a grid of cells as large as the points' median projected
footprint (16 pixels for Wan2.2's VAE), splatted by the memory's own renderer; cells no point covers
stay NaN (not compared). The points are in the camera path's world frame and units, so this is the
depth the render's warps used, with no depth model involved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_cli.geometry import projection as geometry
from mirage_cli.memory.point_cache import PointCache
from mirage_cli.memory.points import DEPTH_TOLERANCE, MAX_HALF_SIZE
from mirage_cli.rundir.layout import RunDir

SMALLEST_CELL_PX, LARGEST_CELL_PX = 2, 32


def memory_points(run: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(xyz float64 [P, 3], radius float64 [P], checkpoint name) of the run's newest good checkpoint's
    memory; None when the run has no checkpoint with a memory (``--memory none``) or no points."""
    run_dir = RunDir(run)
    if not run_dir.state_dir.is_dir():
        return None
    ckpt = run_dir.checkpoints().load_latest()
    if ckpt is None or "memory" not in ckpt.tensors or "xyz" not in ckpt.tensors["memory"]:
        return None
    state = ckpt.tensors["memory"]
    xyz, radius = state["xyz"].double().numpy(), state["radius"].double().numpy()
    if len(xyz) == 0:
        return None
    return xyz, radius, ckpt.name


def depth_from_points(xyz: np.ndarray, radius: np.ndarray, world_from_cam: np.ndarray, K: np.ndarray,
                      size: tuple[int, int]) -> np.ndarray:
    """z-depth float64 [N, H, W] of points ``xyz`` [P, 3] (world half-size ``radius`` [P]) seen by the
    cameras ``world_from_cam`` [N, 4, 4] (OpenCV) with pixel intrinsics ``K`` [N, 3, 3]; NaN where no
    point is seen. The points are splatted by the memory's own renderer (``PointCache.render``, with the
    latent memory's depth tolerance and footprint cap) on a grid of cells as large as their median
    projected footprint, then each cell's depth fills its pixels."""
    import torch

    if xyz.ndim != 2 or xyz.shape[1] != 3 or radius.shape != (len(xyz),):
        raise ValueError(f"depth_from_points: expected xyz [P, 3] and radius [P], got {xyz.shape} and {radius.shape}")
    if world_from_cam.shape[1:] != (4, 4) or K.shape != (len(world_from_cam), 3, 3):
        raise ValueError(f"depth_from_points: expected world_from_cam [N, 4, 4] and K [N, 3, 3], got {world_from_cam.shape} and {K.shape}")
    H, W = size
    cache = PointCache(channels=1, feature_dtype=torch.float32, device="cpu")
    points = torch.from_numpy(xyz).float()
    cache.add(points, torch.zeros(len(xyz), 1), torch.from_numpy(radius).float(), torch.zeros(len(xyz), dtype=torch.int32))
    z0 = (np.concatenate([xyz, np.ones((len(xyz), 1))], 1) @ np.linalg.inv(world_from_cam[0]).T)[:, 2]
    front = z0 > 1e-9
    footprint = 2.0 * K[0, 0, 0] * radius[front] / z0[front] if front.any() else np.array([16.0])
    cell = int(np.clip(np.rint(np.median(footprint)), SMALLEST_CELL_PX, LARGEST_CELL_PX))
    rows, cols = -(-H // cell), -(-W // cell)
    K_grid = geometry.latent_intrinsics(torch.from_numpy(K), cell)
    _, depth = cache.render(K_grid, torch.from_numpy(world_from_cam), (rows, cols), DEPTH_TOLERANCE, MAX_HALF_SIZE)  # [N, rows, cols]
    grid = depth.double().numpy().repeat(cell, axis=1).repeat(cell, axis=2)[:, :H, :W]
    return np.where(np.isfinite(grid), grid, np.nan)
