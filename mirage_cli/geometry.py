"""Pure camera geometry on torch tensors: intrinsics, back-projection, projection, z-buffer splatting.

Conventions (axes, ``world_from_cam``, integer pixel centres, z-depth, latent cells): see
docs/CONVENTIONS.md; the latent grid is just another pinhole camera, ``latent_intrinsics(K, 16)``.

Every function here is batched, device-agnostic, has no Python loop over points, and is checked
against a slow, obviously-correct twin of the same name in ``mirage_cli.geometry_reference``
(tests/test_geometry.py compares them on random inputs).

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
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = [
    "latent_intrinsics",
    "cell_centre_depth",
    "depth_edge_score",
    "valid_depth",
    "pixel_grid",
    "backproject",
    "transform_points",
    "invert_rigid",
    "project",
    "footprint_radius",
    "footprint_half_size",
    "footprint_cells",
    "zbuffer_winner",
    "splat",
    "occlusion_filter",
]


# --- checks ----------------------------------------------------------------------------------------


def _check_square(x: Tensor, n: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape [..., {n}, {n}], got {type(x).__name__}")
    if x.ndim < 2 or tuple(x.shape[-2:]) != (n, n):
        raise ValueError(f"{name}: expected shape [..., {n}, {n}], got {list(x.shape)}")


def _check_last(x: Tensor, n: int, name: str, min_ndim: int = 1) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim or x.shape[-1] != n:
        raise ValueError(f"{name}: expected shape [..., {n}] with at least {min_ndim} dims, got {list(x.shape)}")


def _check_stride(depth: Tensor, stride: int) -> tuple[int, int]:
    if stride < 1:
        raise ValueError(f"stride: expected >= 1, got {stride}")
    if depth.ndim < 2:
        raise ValueError(f"depth: expected shape [..., H, W], got {list(depth.shape)}")
    H, W = depth.shape[-2:]
    if H % stride or W % stride:
        raise ValueError(f"depth: expected H and W divisible by stride {stride}, got {list(depth.shape)}")
    return H // stride, W // stride


# --- intrinsics and depth per cell -----------------------------------------------------------------


def latent_intrinsics(K: Tensor, stride: int) -> Tensor:
    """Intrinsics of the grid whose cell (i, j) covers pixels [s*j, s*j+s) x [s*i, s*i+s).

    The cell centre is pixel s*j + (s-1)/2, so fx' = fx/s, fy' = fy/s, skew' = skew/s and
    cx' = (cx + 0.5)/s - 0.5, cy' = (cy + 0.5)/s - 0.5 (dividing cx by s would misplace every point
    by about half a cell).

    Args:
        K: float [..., 3, 3] pixel intrinsics.
        stride: pixels per cell side (16 for the Wan2.2 VAE).

    Returns:
        float [..., 3, 3] intrinsics of the cell grid (same dtype and device as ``K``).
    """
    _check_square(K, 3, "K")
    if stride < 1:
        raise ValueError(f"stride: expected >= 1, got {stride}")
    out = K.clone()
    out[..., :2, :] = K[..., :2, :] / stride
    out[..., :2, 2] += 0.5 / stride - 0.5
    return out


def valid_depth(depth: Tensor) -> Tensor:
    """bool, same shape as ``depth``: finite and > 0."""
    return torch.isfinite(depth) & (depth > 0)


def _blocks(x: Tensor, stride: int) -> Tensor:
    """[..., H, W] -> [..., h, w, s, s] (view when possible)."""
    h, w = x.shape[-2] // stride, x.shape[-1] // stride
    x = x.unflatten(-1, (w, stride)).unflatten(-3, (h, stride))  # [..., h, s, w, s]
    return x.transpose(-3, -2)  # [..., h, w, s, s]


def cell_centre_depth(depth: Tensor, stride: int) -> Tensor:
    """Z-depth at each cell centre: bilinear between the central pixels of its block.

    For an even stride the centre (s-1)/2 lies between pixels s/2-1 and s/2 in each axis, so the
    value is the mean of those 4 pixels; invalid ones (<= 0, nan, inf) are left out of the mean.
    For an odd stride it is the single central pixel. Cells with no valid central pixel get nan.

    Args:
        depth: float [..., H, W] z-depth, H and W multiples of ``stride``.
        stride: pixels per cell side.

    Returns:
        float [..., H/stride, W/stride].
    """
    _check_stride(depth, stride)
    c = stride // 2
    idx = [c - 1, c] if stride % 2 == 0 else [c]
    blocks = _blocks(depth, stride)  # [..., h, w, s, s]
    centre = blocks[..., idx, :][..., idx]  # [..., h, w, 2, 2] or [..., h, w, 1, 1]
    ok = valid_depth(centre)
    total = torch.where(ok, centre, torch.zeros_like(centre)).sum(dim=(-2, -1))  # [..., h, w]
    count = ok.sum(dim=(-2, -1))  # [..., h, w]
    out = total / count.clamp(min=1).to(total.dtype)
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


@functools.lru_cache(maxsize=16)
def _plane_projector(stride: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Design matrix A [s*s, 3] of (u, v, 1) about the block centre, and its pseudo-inverse [3, s*s]
    (cached: the same few strides and devices are asked for on every insert)."""
    r = torch.arange(stride, dtype=torch.float64) - (stride - 1) / 2
    v, u = torch.meshgrid(r, r, indexing="ij")
    A = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(stride * stride, dtype=torch.float64)], dim=1)
    pinv = torch.linalg.pinv(A)
    return A.to(device=device, dtype=dtype), pinv.to(device=device, dtype=dtype)


def block_edge_score(blocks: Tensor) -> Tensor:
    """``depth_edge_score`` of depth blocks given directly: float [..., s, s] (s >= 2) -> [...].

    The per-block work of ``depth_edge_score``; callers that need the score of a few cells gather
    their blocks first (``depth_edge_score_at``) instead of scoring the whole frame.
    """
    if blocks.ndim < 2 or blocks.shape[-1] != blocks.shape[-2] or blocks.shape[-1] < 2:
        raise ValueError(f"blocks: expected [..., s, s] with s >= 2, got {list(blocks.shape)}")
    dt = torch.promote_types(blocks.dtype, torch.float32)
    flat = blocks.to(dt).flatten(-2)  # [..., s*s]
    valid = valid_depth(flat)
    ok = valid.all(dim=-1)  # [...]
    inv = torch.where(valid, 1.0 / flat, torch.zeros_like(flat))  # [..., s*s]
    A, pinv = _plane_projector(blocks.shape[-1], dt, blocks.device)  # [s*s, 3], [3, s*s]
    coeff = inv @ pinv.T  # [..., 3]
    fit = coeff @ A.T  # [..., s*s]
    dev = (inv - fit).abs().amax(dim=-1)  # [...]
    score = dev / coeff[..., 2].abs().clamp(min=torch.finfo(dt).tiny)
    return torch.where(ok, score, torch.full_like(score, float("inf")))


def depth_edge_score(depth: Tensor, stride: int) -> Tensor:
    """How far each block's depth is from a single plane: large at depth edges.

    A plane in the scene has inverse depth affine in pixel coordinates, so we fit
    ``1/z = a*u + b*v + c`` by least squares over the block's s*s pixels and return
    ``max |1/z - fit| / |c|`` (c is the fitted inverse depth at the block centre): roughly the
    largest relative depth deviation from the best plane. Flat or slanted surfaces score ~0
    whatever their angle; a depth edge or a crease scores high. Blocks holding any invalid pixel
    score +inf.

    Args:
        depth: float [..., H, W] z-depth, H and W multiples of ``stride``.
        stride: pixels per cell side (>= 2).

    Returns:
        float [..., H/stride, W/stride] (float32 at least).
    """
    _check_stride(depth, stride)
    if stride < 2:
        raise ValueError(f"stride: expected >= 2 for a plane fit, got {stride}")
    return block_edge_score(_blocks(depth, stride))


EDGE_SCORE_CELLS_PER_BATCH = 4096
"""Cells scored at once by ``depth_edge_score_at``: bounds its transient memory (a few MiB per
temporary at stride 16), not its results."""


def depth_edge_score_at(depth: Tensor, stride: int, cells: Tensor) -> Tensor:
    """``depth_edge_score`` of the selected cells only: float [M], M = ``cells.sum()``.

    Args:
        depth: float [..., H, W] z-depth, H and W multiples of ``stride`` (>= 2).
        cells: bool [..., H/stride, W/stride], the cells to score.

    Reads only the selected blocks, in batches of ``EDGE_SCORE_CELLS_PER_BATCH``: the cost follows
    the cells asked for, not the frame size.
    """
    _check_stride(depth, stride)
    if stride < 2:
        raise ValueError(f"stride: expected >= 2 for a plane fit, got {stride}")
    blocks = _blocks(depth, stride)  # [..., h, w, s, s] (a view)
    if cells.shape != blocks.shape[:-2] or cells.dtype != torch.bool:
        raise ValueError(f"cells: expected bool {list(blocks.shape[:-2])}, got {cells.dtype} {list(cells.shape)}")
    index = cells.nonzero(as_tuple=True)
    n = int(index[0].numel())
    dt = torch.promote_types(depth.dtype, torch.float32)
    out = torch.empty(n, dtype=dt, device=depth.device)
    for start in range(0, n, EDGE_SCORE_CELLS_PER_BATCH):
        part = tuple(i[start:start + EDGE_SCORE_CELLS_PER_BATCH] for i in index)
        out[start:start + EDGE_SCORE_CELLS_PER_BATCH] = block_edge_score(blocks[part])  # [m, s, s] -> [m]
    return out


# --- rigid transforms, back-projection, projection -------------------------------------------------


def invert_rigid(matrix: Tensor) -> Tensor:
    """Inverse of rigid 4x4 transforms [..., 4, 4]: [R t; 0 1]^-1 = [R^T -R^T t; 0 1]."""
    _check_square(matrix, 4, "matrix")
    R = matrix[..., :3, :3]
    t = matrix[..., :3, 3:]
    out = torch.zeros_like(matrix)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1
    return out


def transform_points(matrix: Tensor, points: Tensor) -> Tensor:
    """Apply 4x4 transforms to 3D points.

    Args:
        matrix: float [..., 4, 4] (e.g. ``world_from_cam``); leading dims broadcast with ``points``'.
        points: float [..., N, 3].

    Returns:
        float [..., N, 3] = R @ p + t for every point.
    """
    _check_square(matrix, 4, "matrix")
    _check_last(points, 3, "points", min_ndim=2)
    m = matrix.to(points.dtype)
    return points @ m[..., :3, :3].transpose(-1, -2) + m[..., None, :3, 3]


def pixel_grid(h: int, w: int, dtype=torch.float32, device=None) -> Tensor:
    """float [h, w, 2] of (u, v) = (column, row): pixel centres at integer coordinates."""
    v, u = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device), indexing="ij"
    )
    return torch.stack([u, v], dim=-1)


def backproject(depth: Tensor, K: Tensor, world_from_cam: Tensor) -> Tensor:
    """Lift every pixel (u, v) of a depth map to a world point: X = world_from_cam @ (z K^-1 [u, v, 1]).

    Args:
        depth: float [..., h, w] z-depth on the grid that ``K`` describes (pixels, or latent cells
            with ``latent_intrinsics``). Invalid values give invalid points; mask them yourself.
        K: float [..., 3, 3] intrinsics of that grid; leading dims broadcast with depth's.
        world_from_cam: float [..., 4, 4].

    Returns:
        float [..., h, w, 3] world points, dtype of ``depth`` (float32 at least).
    """
    _check_square(K, 3, "K")
    _check_square(world_from_cam, 4, "world_from_cam")
    if depth.ndim < 2:
        raise ValueError(f"depth: expected shape [..., h, w], got {list(depth.shape)}")
    dt = torch.promote_types(depth.dtype, torch.float32)
    h, w = depth.shape[-2:]
    uv1 = torch.cat(
        [pixel_grid(h, w, dtype=torch.float64, device=depth.device), torch.ones(h, w, 1, dtype=torch.float64, device=depth.device)],
        dim=-1,
    )  # [h, w, 3]
    K_inv = torch.linalg.inv(K.to(torch.float64))  # [..., 3, 3]
    rays = torch.einsum("...ij,hwj->...hwi", K_inv, uv1).to(dt)  # [..., h, w, 3], z = 1
    cam = rays * depth.to(dt)[..., None]  # [..., h, w, 3]
    pts = transform_points(world_from_cam, cam.flatten(-3, -2))  # [..., h*w, 3]
    return pts.unflatten(-2, (h, w))


def project(points_cam: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Pinhole projection of camera-frame points.

    Args:
        points_cam: float [..., N, 3] in the camera frame (z forward).
        K: float [..., 3, 3]; leading dims broadcast with the points'.

    Returns:
        uv: float [..., N, 2] pixel (or cell) coordinates, meaningless where z <= 0 (callers mask).
        z: float [..., N] z-depth.
    """
    _check_last(points_cam, 3, "points_cam", min_ndim=2)
    _check_square(K, 3, "K")
    p = points_cam @ K.to(points_cam.dtype).transpose(-1, -2)  # [..., N, 3]
    z = points_cam[..., 2]
    safe = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    return p[..., :2] / safe[..., None], z


# --- splatting --------------------------------------------------------------------------------------


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
    frame_of_cell = torch.arange(T * h * w, device=uv.device) // (h * w)
    has = winner >= 0
    out_depth = torch.full((T * h * w,), float("inf"), dtype=z.dtype, device=z.device)
    out_depth[has] = z[frame_of_cell[has], winner[has]]
    return winner.view(T, h, w), out_depth.view(T, h, w)


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
