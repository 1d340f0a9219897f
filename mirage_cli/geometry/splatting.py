"""Footprints and z-buffer splatting of projected points onto a grid of cells (or pixels).

Batched, device-agnostic, no Python loop over points; each function is checked against a slow twin
of the same name in ``mirage_cli.geometry.twins`` (tests/test_geometry.py).

Splatting (``splat``): each projected point covers its nearest cell and every cell whose centre
lies inside its footprint square of half-size ``half_size`` cells (capped at ``max_half_size``);
``footprint_radius`` / ``footprint_half_size`` give the half-size ``0.5 * z_src / z_dst`` cells on
the optical axis, with the pinhole's off-axis stretch.
Per cell, the winner is chosen by a z-buffer that does not depend on point order:
  1. ``scatter_reduce(amin)`` of depth gives the front depth ``d*`` of the cell;
  2. candidates with ``depth <= d* * (1 + depth_tolerance)`` form the front surface;
  3. among those, the smallest squared distance from the point to the cell centre;
  4. remaining exact ties: the smallest value of each column of ``tie_keys`` in turn (the memories
     pass intrinsic per-point values such as xyz, so the winner is a property of the point set);
  5. finally the lowest point index.
With ``depth_tolerance=0`` this is the plain z-buffer (nearest depth wins).

Nearest-cell projection (``nearest_cell``) is the rule the official Mirage code trains and runs its
VACE branch with: each point in front of the camera goes to the one cell its coordinates round to
(half to even, as ``torch.round``), inside ``0 <= column < w`` and ``0 <= row < h``; per cell the nearest
depth wins (exact ties: the lowest point index); a cell no point rounds to stays empty.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mirage_cli.geometry.projection import _check_last

__all__ = ["footprint_radius", "footprint_half_size", "footprint_cells", "zbuffer_winner", "splat", "nearest_cell", "occlusion_filter"]


def footprint_radius(z: Tensor, distance: Tensor, focal: Tensor | float) -> Tensor:
    """World-space half-size of a cell (or pixel) seen at z-depth ``z`` and ray length ``distance``.

    A grid cell spans ``cos^2(theta) / f`` radians along the radial direction at angle ``theta`` off
    the optical axis, so at ``distance`` it is ``distance * cos^2(theta) / f`` wide perpendicular to
    the ray; with cos(theta) = z / distance the half-size is ``0.5 * z^2 / (distance * f)``.

    Args:
        z: float [...] z-depth; distance: float [...] |point - camera centre|; focal: grid focal
            length (cells or pixels), broadcastable.

    Returns:
        float [...] world-space radius.
    """
    return 0.5 * z * z / (distance * focal)


def footprint_half_size(radius: Tensor, z: Tensor, distance: Tensor, focal: Tensor | float) -> Tensor:
    """Half-size, in grid cells, of a sphere of world ``radius`` seen at z-depth ``z`` and ray length
    ``distance`` (the radial, larger, extent: ``f * radius * distance / z^2``).

    For a point inserted by ``footprint_radius`` this is ``0.5 * z_src / z_dst`` on the optical
    axis, stretched by the pinhole's ``cos(theta_src) / cos(theta_dst)`` off
    axis so that rotations do not leave cracks.
    """
    return focal * radius * distance / (z * z)



def footprint_cells(
    uv: Tensor, z: Tensor, half_size: Tensor, valid: Tensor, size: tuple[int, int], max_half_size: float = 2.0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Enumerate the (frame, point, cell) candidates of footprint splatting.

    Point n in frame t covers its nearest cell (floor(u + 0.5), floor(v + 0.5)) and every cell
    (i, j) with u - r <= j <= u + r and v - r <= i <= v + r, r = min(half_size, max_half_size),
    clipped to the grid.

    Args:
        uv: float [T, N, 2] grid coordinates (u = column, v = row).
        z: float [T, N] z-depth in the target camera.
        half_size: float [T, N] footprint half-size in cells.
        valid: bool [T, N]; points not valid (e.g. behind the camera) are skipped.
        size: (h, w) of the grid.
        max_half_size: cap on the half-size.

    Returns:
        frame [M] long, point [M] long, cell [M] long (flat ``t*h*w + i*w + j``),
        depth [M] float (the point's z), dist2 [M] float (squared distance to the cell centre).
    """
    _check_last(uv, 2, "uv", min_ndim=3)
    T, N = uv.shape[:2]
    for name, x in (("z", z), ("half_size", half_size), ("valid", valid)):
        if tuple(x.shape) != (T, N):
            raise ValueError(f"{name}: expected shape [{T}, {N}], got {list(x.shape)}")
    h, w = size
    u, v = uv[..., 0], uv[..., 1]  # [T, N]
    r = half_size.to(uv.dtype).clamp(max=max_half_size, min=0.0)
    lo_u, hi_u = u - r, u + r
    lo_v, hi_v = v - r, v + r
    ok = valid & torch.isfinite(u) & torch.isfinite(v) & torch.isfinite(r)
    ok &= (hi_u >= -0.5) & (lo_u <= w - 0.5) & (hi_v >= -0.5) & (lo_v <= h - 0.5)
    t_idx, n_idx = ok.nonzero(as_tuple=True)  # [P], [P]
    u, v, lo_u, hi_u, lo_v, hi_v = (x[t_idx, n_idx] for x in (u, v, lo_u, hi_u, lo_v, hi_v))  # [P] each
    ju = torch.floor(u + 0.5)
    iv = torch.floor(v + 0.5)
    j0 = torch.minimum(torch.ceil(lo_u), ju).clamp(min=0)
    j1 = torch.maximum(torch.floor(hi_u), ju).clamp(max=w - 1)
    i0 = torch.minimum(torch.ceil(lo_v), iv).clamp(min=0)
    i1 = torch.maximum(torch.floor(hi_v), iv).clamp(max=h - 1)
    nj = (j1 - j0 + 1).clamp(min=0).long()  # [P]
    ni = (i1 - i0 + 1).clamp(min=0).long()  # [P]
    count = nj * ni  # [P]
    # most points cover one cell (their nearest): no expansion needed for those
    one = (count == 1).nonzero(as_tuple=True)[0]  # [P1]
    j_one, i_one = j0[one].long(), i0[one].long()
    # the others: enumerate their footprint rectangle
    many = (count > 1).nonzero(as_tuple=True)[0]  # [P2]
    c_many = count[many]
    M = int(c_many.sum())
    owner = many[torch.repeat_interleave(torch.arange(many.numel(), device=uv.device), c_many)]  # [M]
    start = torch.cumsum(c_many, 0) - c_many  # [P2]
    k = torch.arange(M, device=uv.device) - torch.repeat_interleave(start, c_many)  # [M] local index
    nj_o = nj[owner]
    j = j0[owner].long() + k % nj_o  # [M]
    i = i0[owner].long() + torch.div(k, nj_o, rounding_mode="floor")  # [M]
    # the rectangle is built from floor/ceil of the same bounds; keep the exact predicate anyway
    jf, i_f = j.to(uv.dtype), i.to(uv.dtype)
    inside = ((jf >= lo_u[owner]) & (jf <= hi_u[owner]) & (i_f >= lo_v[owner]) & (i_f <= hi_v[owner])) | (
        (jf == ju[owner]) & (i_f == iv[owner])
    )
    owner = torch.cat([one, owner[inside]])
    j = torch.cat([j_one, j[inside]])
    i = torch.cat([i_one, i[inside]])
    frame, point = t_idx[owner], n_idx[owner]
    du = j.to(uv.dtype) - u[owner]
    dv = i.to(uv.dtype) - v[owner]
    dist2 = du * du + dv * dv
    cell = frame * (h * w) + i * w + j
    return frame, point, cell, z[frame, point], dist2


def _amin_mask(cell: Tensor, value: Tensor, num_cells: int) -> Tensor:
    """bool [M]: candidates whose ``value`` equals the minimum over the candidates of their cell."""
    fill = torch.finfo(value.dtype).max if value.is_floating_point() else torch.iinfo(value.dtype).max
    best = torch.full((num_cells,), fill, dtype=value.dtype, device=value.device)
    best = best.scatter_reduce(0, cell, value, reduce="amin", include_self=True)
    return value == best[cell]


def zbuffer_winner(
    cell: Tensor,
    depth: Tensor,
    point: Tensor,
    num_cells: int,
    dist2: Tensor | None = None,
    depth_tolerance: float = 0.0,
    tie_keys: Tensor | None = None,
) -> Tensor:
    """Pick one point per cell, independent of candidate order (rules in the module docstring).

    Args:
        cell: long [M] flat cell index of each candidate, in [0, num_cells).
        depth: float [M] candidate depth.
        point: long [M] index of the candidate's point.
        num_cells: number of cells.
        dist2: float [M] squared distance of the point to the cell centre, or None to skip rule 3.
        depth_tolerance: relative depth band that counts as the front surface (rule 2).
        tie_keys: float [P, k] per-point keys compared column by column for exact ties (rule 4).

    Returns:
        long [num_cells]: the winning point index, -1 where no candidate.
    """
    M = cell.numel()
    for name, x in (("depth", depth), ("point", point)):
        if x.shape != (M,):
            raise ValueError(f"{name}: expected shape [{M}], got {list(x.shape)}")
    if dist2 is not None and dist2.shape != (M,):
        raise ValueError(f"dist2: expected shape [{M}], got {list(dist2.shape)}")
    inf = torch.full((num_cells,), float("inf"), dtype=depth.dtype, device=depth.device)
    front = inf.scatter_reduce(0, cell, depth, reduce="amin", include_self=True)  # [num_cells]
    keep = depth <= front[cell] * (1.0 + depth_tolerance) if depth_tolerance > 0 else depth == front[cell]
    cell, point = cell[keep], point[keep]
    if dist2 is not None:
        d2 = dist2[keep]
        keep = _amin_mask(cell, d2, num_cells)
        cell, point = cell[keep], point[keep]
    if tie_keys is not None:
        # only cells still holding several candidates need the intrinsic keys
        tied = torch.bincount(cell, minlength=num_cells)[cell] > 1  # [M']
        if bool(tied.any()):
            t_cell, t_point = cell[tied], point[tied]
            for col in range(tie_keys.shape[1]):
                keep = _amin_mask(t_cell, tie_keys[t_point, col], num_cells)
                t_cell, t_point = t_cell[keep], t_point[keep]
            cell, point = torch.cat([cell[~tied], t_cell]), torch.cat([point[~tied], t_point])
    winner = torch.full((num_cells,), torch.iinfo(torch.long).max, dtype=torch.long, device=cell.device)
    winner = winner.scatter_reduce(0, cell, point, reduce="amin", include_self=True)
    return torch.where(winner == torch.iinfo(torch.long).max, torch.full_like(winner, -1), winner)


def _winner_grid(winner: Tensor, z: Tensor, shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """The flat per-cell ``winner`` [T*h*w] (-1 empty) as [T, h, w], and the winners' depth from ``z``
    [T, N] as [T, h, w] (+inf where empty)."""
    T, h, w = shape
    frame_of_cell = torch.arange(T * h * w, device=winner.device) // (h * w)
    has = winner >= 0
    depth = torch.full((T * h * w,), float("inf"), dtype=z.dtype, device=z.device)
    depth[has] = z[frame_of_cell[has], winner[has]]
    return winner.view(T, h, w), depth.view(T, h, w)


def splat(
    uv: Tensor,
    z: Tensor,
    half_size: Tensor,
    valid: Tensor,
    size: tuple[int, int],
    max_half_size: float = 2.0,
    depth_tolerance: float = 0.0,
    tie_keys: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Footprint splatting with an order-independent z-buffer (see the module docstring).

    Args:
        uv: float [T, N, 2] grid coordinates of N points in T target cameras.
        z: float [T, N] their z-depth in each camera.
        half_size: float [T, N] footprint half-size in cells (0 = nearest cell only).
        valid: bool [T, N].
        size: (h, w) grid size.
        max_half_size: cap on the footprint half-size.
        depth_tolerance: relative front-surface band of the z-buffer.
        tie_keys: float [N, k] intrinsic per-point tie-break keys, or None.

    Returns:
        winner: long [T, h, w] point index, -1 where empty.
        depth: float [T, h, w] the winner's z, +inf where empty.
    """
    T = uv.shape[0]
    h, w = size
    _, point, cell, depth, dist2 = footprint_cells(uv, z, half_size, valid, size, max_half_size)
    winner = zbuffer_winner(cell, depth, point, T * h * w, dist2, depth_tolerance, tie_keys)  # [T*h*w]
    return _winner_grid(winner, z, (T, h, w))


def nearest_cell(uv: Tensor, z: Tensor, valid: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Nearest-cell projection with a z-buffer (module docstring): no footprint, holes stay empty.

    Args:
        uv: float [T, N, 2] grid coordinates of N points in T target cameras (u = column, v = row).
        z: float [T, N] their z-depth in each camera; only z > 0 is projected.
        valid: bool [T, N].
        size: (h, w) grid size.

    Returns:
        winner: long [T, h, w] point index, -1 where empty.
        depth: float [T, h, w] the winner's z, +inf where empty.
    """
    _check_last(uv, 2, "uv", min_ndim=3)
    T, N = uv.shape[:2]
    for name, x in (("z", z), ("valid", valid)):
        if tuple(x.shape) != (T, N):
            raise ValueError(f"{name}: expected shape [{T}, {N}], got {list(x.shape)}")
    h, w = size
    ju, iv = torch.round(uv[..., 0]), torch.round(uv[..., 1])  # [T, N], half to even
    ok = valid & (z > 0) & (ju >= 0) & (ju < w) & (iv >= 0) & (iv < h)  # NaN coordinates compare False
    frame, point = ok.nonzero(as_tuple=True)  # [M] each
    cell = frame * (h * w) + iv[frame, point].long() * w + ju[frame, point].long()
    winner = zbuffer_winner(cell, z[frame, point], point, T * h * w)  # [T*h*w]
    return _winner_grid(winner, z, (T, h, w))


def occlusion_filter(depth: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """Drop cells that show background through a gap in a nearer surface (screen-space).

    A cell is dropped when, along one of the 4 lines through its 3x3 neighbourhood (horizontal,
    vertical, two diagonals), *both* neighbours are nearer: ``depth > (1 + threshold) * max(pair)``.
    Requiring both sides (rather than the plain 3x3 minimum) keeps slanted surfaces, whose depth
    falls off to one side, and background cells beside a silhouette, which have a nearer neighbour
    on one side only. Empty cells count as +inf (never nearer).

    Args:
        depth: float [T, h, w].
        mask: bool [T, h, w] cells that hold a point.
        threshold: relative depth margin (> 0).

    Returns:
        bool [T, h, w] the filtered mask.
    """
    if depth.ndim != 3 or mask.shape != depth.shape:
        raise ValueError(f"depth, mask: expected equal shapes [T, h, w], got {list(depth.shape)} and {list(mask.shape)}")
    T, h, w = depth.shape
    d = torch.where(mask, depth, torch.full_like(depth, float("inf")))  # [T, h, w]
    padded = torch.nn.functional.pad(d, (1, 1, 1, 1), value=float("inf"))  # [T, h+2, w+2]

    def shifted(di: int, dj: int) -> Tensor:
        return padded[:, 1 + di : 1 + di + h, 1 + dj : 1 + dj + w]  # [T, h, w] neighbour at (i+di, j+dj)

    behind = torch.zeros_like(mask)
    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair_far = torch.maximum(shifted(di, dj), shifted(-di, -dj))  # [T, h, w]
        behind |= d > (1.0 + threshold) * pair_far
    return mask & ~behind
