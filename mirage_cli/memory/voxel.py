"""Voxel keys for fusing points: a voxel that already holds a point is not filled twice.

By default the voxel size follows each point's footprint (the world-space width of the cell or
pixel it came from, ``2 * radius``): with ``level = floor(log2(2 * radius))`` the point is keyed on
a grid of size ``0.5 * 2**level``, i.e. between 1/4 and 1/2 of its footprint. Neighbouring cells of
one frame are at least one footprint apart, so they never share a voxel (the voxel diagonal is
< 0.87 footprint), while the same surface seen again from the same distance band lands in the
same voxels. A user-set ``voxel_size`` replaces this with one grid for every point.

Keys pack (level, ix, iy, iz) into one int64: 6 bits of level and 19 bits per axis, so voxel
coordinates are clamped to +-262143 voxels (with the default sizing that is ~65000 footprints
from the world origin; farther points share border voxels).
"""

from __future__ import annotations

import torch
from torch import Tensor

VOXEL_PER_FOOTPRINT = 0.5
_AXIS_BITS = 19
_AXIS_HALF = 1 << (_AXIS_BITS - 1)
_LEVEL_OFFSET = 32


def footprint_level(radius: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """[...] in ``dtype``: ``floor(log2(2 * radius))``, the voxel level of points of world half-size
    ``radius`` [...] (one level per factor 2 of footprint; smaller is finer). Voxel keys take it in
    float64; a comparison of levels can take float32, which may differ only at exact powers of 2."""
    return torch.floor(torch.log2((2.0 * radius.to(dtype)).clamp(min=1e-30)))


def voxel_keys(xyz: Tensor, radius: Tensor, voxel_size: float | None = None) -> Tensor:
    """int64 [N] voxel key of each point.

    Args:
        xyz: float [N, 3] world points.
        radius: float [N] world-space footprint half-size of each point.
        voxel_size: one voxel size for all points, or None for footprint-based sizing.
    """
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz: expected shape [N, 3], got {list(xyz.shape)}")
    if radius.shape != xyz.shape[:1]:
        raise ValueError(f"radius: expected shape [{xyz.shape[0]}], got {list(radius.shape)}")
    if voxel_size is None:
        level = footprint_level(radius)  # [N]
        size = VOXEL_PER_FOOTPRINT * torch.exp2(level)  # [N]
        level = (level.long() + _LEVEL_OFFSET).clamp(0, 63)
    else:
        size = torch.full_like(radius, float(voxel_size), dtype=torch.float64)
        level = torch.full_like(radius, _LEVEL_OFFSET, dtype=torch.long)
    idx = torch.floor(xyz.double() / size[:, None]).clamp(-_AXIS_HALF + 1, _AXIS_HALF - 1).long() + _AXIS_HALF  # [N, 3]
    return (level << (3 * _AXIS_BITS)) | (idx[:, 0] << (2 * _AXIS_BITS)) | (idx[:, 1] << _AXIS_BITS) | idx[:, 2]


def first_per_key(keys: Tensor) -> Tensor:
    """bool [N]: True for the lowest-index point of every distinct key in ``keys`` [N]."""
    n = keys.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=keys.device)
    uniq, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((uniq.numel(),), n, dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=keys.device), reduce="amin", include_self=True)
    out = torch.zeros(n, dtype=torch.bool, device=keys.device)
    out[first] = True
    return out


def novel(new_keys: Tensor, old_keys: Tensor) -> Tensor:
    """bool [M]: the entries of ``new_keys`` [M] that are not in ``old_keys`` [N] and come first among equals."""
    keep = first_per_key(new_keys)
    if old_keys.numel():
        keep &= ~torch.isin(new_keys, old_keys)
    return keep
