"""Slow, obviously correct twins of ``memory/voxel.py`` and ``memory/filters.warp_residual``.

Each twin carries the fast function's name and works one point or one cell at a time, straight from
the definition in the fast module's docstring. tests/test_memory_reference.py compares the two on
random inputs. Nothing in the package calls these.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mirage_cli.geometry import projection as geometry
from mirage_cli.geometry import splatting
from mirage_cli.geometry import twins as geometry_reference
from mirage_cli.memory.point_cache import FOOTPRINT_MARGIN
from mirage_cli.memory.voxel import _AXIS_BITS, _LEVEL_OFFSET, VOXEL_PER_FOOTPRINT


def voxel_keys(xyz: Tensor, radius: Tensor, voxel_size: float | None = None) -> Tensor:
    """One point at a time: the voxel level from the footprint ``2 * radius`` (or one grid for a
    given ``voxel_size``), the voxel coordinates clamped to the key's range, packed into an int64."""
    half = 1 << (_AXIS_BITS - 1)
    keys = []
    for p in range(xyz.shape[0]):
        if voxel_size is None:
            footprint = max(2.0 * float(radius[p]), 1e-30)
            level = math.frexp(footprint)[1] - 1  # floor(log2(footprint)), exactly
            size = VOXEL_PER_FOOTPRINT * 2.0**level
            tag = min(max(level + _LEVEL_OFFSET, 0), 63)
        else:
            size, tag = float(voxel_size), _LEVEL_OFFSET
        idx = [min(max(math.floor(float(xyz[p, a]) / size), -half + 1), half - 1) + half for a in range(3)]
        keys.append((tag << (3 * _AXIS_BITS)) | (idx[0] << (2 * _AXIS_BITS)) | (idx[1] << _AXIS_BITS) | idx[2])
    return torch.tensor(keys, dtype=torch.int64)


def first_per_key(keys: Tensor) -> Tensor:
    """True at the first occurrence of every key."""
    seen: set[int] = set()
    out = []
    for k in keys.tolist():
        out.append(k not in seen)
        seen.add(k)
    return torch.tensor(out, dtype=torch.bool)


def novel(new_keys: Tensor, old_keys: Tensor) -> Tensor:
    """True where a key is the first of its kind among ``new_keys`` and absent from ``old_keys``."""
    old = set(old_keys.tolist())
    first = first_per_key(new_keys).tolist()
    return torch.tensor([f and k not in old for f, k in zip(first, new_keys.tolist())], dtype=torch.bool)


def warp_residual(
    latents_a: Tensor,
    depth_a: Tensor,
    K: Tensor,
    world_from_cam_a: Tensor,
    latents_b: Tensor,
    world_from_cam_b: Tensor,
    stride: int = 16,
    depth_tolerance: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """The same warp with the slow splat, one cell of a lifted and one cell of b compared at a time.

    Arguments and results as ``memory.filters.warp_residual`` (CPU tensors).
    """
    C, h, w = latents_a.shape
    z = depth_a.float() if tuple(depth_a.shape) == (h, w) else geometry_reference.cell_centre_depth(depth_a.float(), stride)
    # Lifting and projecting use the fast functions (each checked against its own twin) with the
    # same dtypes as the fast warp; what is spelled out here is the splat and the comparison.
    K_lat = geometry.latent_intrinsics(K.double(), stride)  # [3, 3]
    wa, wb = world_from_cam_a.double(), world_from_cam_b.double()
    cells = [(i, j) for i in range(h) for j in range(w) if math.isfinite(float(z[i, j])) and float(z[i, j]) > 0]
    if not cells:
        return torch.zeros(h, w), torch.zeros(h, w, dtype=torch.bool)
    zs = torch.stack([z[i, j] for i, j in cells])  # [N]
    filled = torch.where(geometry.valid_depth(z), z, torch.ones_like(z))  # [h, w]
    xyz = torch.stack([geometry.backproject(filled, K_lat, wa)[i, j] for i, j in cells])  # [N, 3]
    focal = float(torch.sqrt(K_lat[0, 0] * K_lat[1, 1]))
    radius = splatting.footprint_radius(zs, (xyz - wa[:3, 3].to(xyz.dtype)).norm(dim=-1), focal)  # [N]
    cam = geometry.transform_points(geometry.invert_rigid(wb).to(torch.float32), xyz)[None]  # [1, N, 3]
    uv, zb = geometry.project(cam, K_lat.to(torch.float32))  # [1, N, 2], [1, N]
    half = FOOTPRINT_MARGIN * splatting.footprint_half_size(radius[None], zb.clamp(min=1e-6), cam.norm(dim=-1), focal)
    winner, _ = geometry_reference.splat(uv, zb, half, zb > 1e-6, (h, w), 2.0, depth_tolerance)
    norms = [float(latents_b[:, i, j].float().norm()) for i in range(h) for j in range(w)]
    scale = max(sum(norms) / len(norms), 1e-12)
    residual = torch.zeros(h, w)
    for i in range(h):
        for j in range(w):
            n = int(winner[0, i, j])
            if n >= 0:
                si, sj = cells[n]
                residual[i, j] = float((latents_a[:, si, sj].float() - latents_b[:, i, j].float()).norm()) / scale
    return residual, winner[0] >= 0
