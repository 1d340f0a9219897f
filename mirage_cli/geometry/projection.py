"""Pure camera geometry on torch tensors: intrinsics, depth per cell, back-projection, projection.

Conventions (axes, ``world_from_cam``, integer pixel centres, z-depth, latent cells): see
docs/CONVENTIONS.md; the latent grid is just another pinhole camera, ``latent_intrinsics(K, 16)``.

Every function here is batched, device-agnostic, has no Python loop over points, and is checked
against a slow, obviously-correct twin of the same name in ``mirage_cli.geometry.twins``
(tests/test_geometry.py compares them on random inputs).

Footprints and z-buffer splatting of projected points live in ``mirage_cli.geometry.splatting``.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = [
    "latent_intrinsics",
    "cell_centre_depth",
    "depth_edge_score",
    "depth_edge_score_at",
    "block_edge_score",
    "valid_depth",
    "pixel_grid",
    "backproject",
    "backproject_at",
    "reproject",
    "transform_points",
    "invert_rigid",
    "project",
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


def _check_index(index: tuple[Tensor, ...], dims: int, device: torch.device, what: str) -> None:
    """``index``: ``dims`` integer [M] tensors on ``device`` (one per grid dim, as ``nonzero`` gives)."""
    if (len(index) != dims or any(i.ndim != 1 or i.shape != index[0].shape for i in index)
            or any(i.dtype.is_floating_point or i.dtype == torch.bool for i in index) or any(i.device != device for i in index)):
        got = [f"{i.dtype} {list(i.shape)} on {i.device}" for i in index]
        raise ValueError(f"index: expected {dims} integer [M] tensors on {device} ({what}), got {got}")


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
    """bool, same shape as ``depth``: finite and > 0 (written as 0 < depth < inf: nan fails both, and
    two comparisons cost less than ``isfinite``)."""
    return (depth > 0) & (depth < float("inf"))


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
    offsets = (c - 1, c) if stride % 2 == 0 else (c,)
    parts = [depth[..., dv::stride, du::stride] for dv in offsets for du in offsets]  # the central pixels, strided views
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    every_pixel_valid = bool(valid_depth(total).all()) and all(bool((part > 0).all()) for part in parts)
    if depth.dtype in (torch.float32, torch.float64) and every_pixel_valid:  # the common case, without the copies
        return total / len(parts)  # (the sum below, in the same order: bit-equal in float32 and float64)
    centre = torch.stack(parts)  # [k, ..., h, w], k = 4 or 1
    ok = valid_depth(centre)
    total = torch.where(ok, centre, torch.zeros_like(centre)).sum(dim=0)  # [..., h, w]
    count = ok.sum(dim=0)  # [..., h, w]
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

    The per-block work of ``depth_edge_score`` (``depth_edge_score_at`` does the same on the blocks
    it gathers).
    """
    if blocks.ndim < 2 or blocks.shape[-1] != blocks.shape[-2] or blocks.shape[-1] < 2:
        raise ValueError(f"blocks: expected [..., s, s] with s >= 2, got {list(blocks.shape)}")
    dt = torch.promote_types(blocks.dtype, torch.float32)
    rows = torch.empty(blocks.shape, dtype=dt, device=blocks.device).copy_(blocks).view(-1, blocks.shape[-1] ** 2)  # ours
    return _edge_score_of_rows(rows, blocks.shape[-1]).view(blocks.shape[:-2])


def _edge_score_of_rows(rows: Tensor, stride: int) -> Tensor:
    """float [n]: the score of each row of ``rows`` [n, s*s] (one block, row-major), computed in place
    in ``rows`` (which the caller gives up: no temporary as large as it is allocated)."""
    # every pixel valid (finite, > 0) <=> the smallest is > 0 and the largest finite (both carry nan)
    ok = (rows.amin(dim=-1) > 0) & torch.isfinite(rows.amax(dim=-1))  # [n]
    inv = rows.reciprocal_()  # [n, s*s] inverse depth; rows of blocks that are not ok are scored +inf below
    A, pinv = _plane_projector(stride, rows.dtype, rows.device)  # [s*s, 3], [3, s*s]
    coeff = inv @ pinv.T  # [n, 3] the plane fit
    residual = inv.addmm_(coeff, A.T, alpha=-1)  # [n, s*s] 1/z minus the plane
    dev = torch.maximum(residual.amax(dim=-1), residual.amin(dim=-1).neg_())  # [n] max |residual|
    score = dev / coeff[:, 2].abs().clamp(min=torch.finfo(rows.dtype).tiny)
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


EDGE_SCORE_CELLS_PER_BATCH = 2048
"""Cells scored at once by ``depth_edge_score_at``: bounds its transient memory (2 MiB per
temporary at stride 16), not its results."""


def depth_edge_score_at(depth: Tensor, stride: int, index: tuple[Tensor, ...]) -> Tensor:
    """``depth_edge_score(depth, stride)[index]``, scoring only the indexed cells: float [M].

    Args:
        depth: float [..., H, W] z-depth, H and W multiples of ``stride`` (>= 2).
        index: one long [M] tensor per dim of the cell grid [..., H/stride, W/stride] (what
            ``cells.nonzero(as_tuple=True)`` gives for a bool mask of the cells).

    Reads only the indexed blocks, in batches of ``EDGE_SCORE_CELLS_PER_BATCH``: the cost follows
    the cells asked for, not the frame size.
    """
    _check_stride(depth, stride)
    if stride < 2:
        raise ValueError(f"stride: expected >= 2 for a plane fit, got {stride}")
    blocks = _blocks(depth, stride)  # [..., h, w, s, s] (a view)
    _check_index(index, blocks.ndim - 2, depth.device, f"cells of {list(blocks.shape[:-2])}")
    n = int(index[0].numel())
    dt = torch.promote_types(depth.dtype, torch.float32)
    out = torch.empty(n, dtype=dt, device=depth.device)
    if depth.is_contiguous():  # each block is s runs of s pixels: gathered as whole rows of a [L*H*w, s] view
        frame = torch.zeros_like(index[-1])
        for size, i in zip(depth.shape[:-2], index[:-2]):  # row-major over the leading dims
            frame = frame * size + i
        H, w = depth.shape[-2], blocks.shape[-3]
        runs = depth.view(-1, stride)  # [L*H*w, s]
        within = torch.arange(stride, device=depth.device)
    for start in range(0, n, EDGE_SCORE_CELLS_PER_BATCH):
        batch = slice(start, start + EDGE_SCORE_CELLS_PER_BATCH)
        if depth.is_contiguous():
            first_row = frame[batch] * H + index[-2][batch] * stride  # [m] the block's top pixel row
            run = (first_row[:, None] + within) * w + index[-1][batch][:, None]  # [m, s]
            rows = runs.index_select(0, run.flatten()).view(-1, stride * stride).to(dt)  # [m, s*s] a fresh copy
        else:
            rows = blocks[tuple(i[batch] for i in index)].to(dt).flatten(1)  # [m, s*s] a fresh copy (gathered)
        out[batch] = _edge_score_of_rows(rows, stride)  # [m]
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


def _homogeneous_grid(depth: Tensor) -> Tensor:
    """float64 [h, w, 3] of (u, v, 1) for every element of ``depth`` [..., h, w], on its device."""
    h, w = depth.shape[-2:]
    ones = torch.ones(h, w, 1, dtype=torch.float64, device=depth.device)
    return torch.cat([pixel_grid(h, w, dtype=torch.float64, device=depth.device), ones], dim=-1)


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
    uv1 = _homogeneous_grid(depth)  # [h, w, 3]
    K_inv = torch.linalg.inv(K.to(torch.float64))  # [..., 3, 3]
    rays = torch.einsum("...ij,hwj->...hwi", K_inv, uv1).to(dt)  # [..., h, w, 3], z = 1
    cam = rays * depth.to(dt)[..., None]  # [..., h, w, 3]
    pts = transform_points(world_from_cam, cam.flatten(-3, -2))  # [..., h*w, 3]
    return pts.unflatten(-2, depth.shape[-2:])


def backproject_at(depth: Tensor, K: Tensor, world_from_cam: Tensor, index: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``backproject(depth, K, world_from_cam)[index]``, lifting only the indexed grid elements.

    Args:
        depth: float [T, h, w] z-depth on the grid ``K`` describes.
        K: float [T, 3, 3]; world_from_cam: float [T, 4, 4].
        index: (t, v, u), long [M] each: frame, row and column of the elements to lift, sorted by
            frame (what ``mask.nonzero(as_tuple=True)`` gives for a bool [T, h, w] mask).

    Returns:
        float [M, 3] world points, dtype of ``depth`` (float32 at least).
    """
    if depth.ndim != 3:
        raise ValueError(f"depth: expected shape [T, h, w], got {list(depth.shape)}")
    T = depth.shape[0]
    _check_square(K, 3, "K")
    _check_square(world_from_cam, 4, "world_from_cam")
    if K.shape[:-2] != (T,) or world_from_cam.shape[:-2] != (T,):
        raise ValueError(f"K, world_from_cam: expected [{T}, 3, 3] and [{T}, 4, 4], got {list(K.shape)} and {list(world_from_cam.shape)}")
    _check_index(index, 3, depth.device, "t, v, u")
    t, v, u = index
    counts = torch.bincount(t, minlength=T)  # [T] elements per frame
    if t.numel() and bool((t[1:] < t[:-1]).any()):
        raise ValueError("index: expected the elements sorted by frame (as nonzero gives them)")
    dt = torch.promote_types(depth.dtype, torch.float32)
    K_inv_T = torch.linalg.inv(K.to(torch.float64)).transpose(-1, -2)  # [T, 3, 3]
    m = world_from_cam.to(dt)  # [T, 4, 4]
    R_T, offset = m[:, :3, :3].transpose(-1, -2), m[:, :3, 3]  # [T, 3, 3], [T, 3]
    uv1 = torch.stack([u, v, torch.ones_like(u)], dim=-1).to(torch.float64)  # [M, 3]
    z = depth[t, v, u].to(dt)[:, None]  # [M, 1]
    out = torch.empty(t.numel(), 3, dtype=dt, device=depth.device)
    start = 0
    for f, n in enumerate(counts.tolist()):  # one frame's elements at a time: the same operations as backproject
        if n:
            stop = start + n
            cam = (uv1[start:stop] @ K_inv_T[f]).to(dt) * z[start:stop]  # [n, 3]
            out[start:stop] = cam @ R_T[f] + offset[f]
            start = stop
    return out


def reproject(depth: Tensor, K_src: Tensor, K_dst: Tensor, dst_from_src: Tensor) -> tuple[Tensor, Tensor]:
    """Where each element of a depth map lands in another camera: ``project(dst_from_src @
    backproject(depth, K_src))`` with ``K_dst``, without forming the world points.

    Computed as ``z * M [u, v, 1] + K_dst t`` with ``M = K_dst R K_src^-1`` (R, t of ``dst_from_src``):
    the camera matrices are combined once per frame in float64, then applied to every element in the
    depth's precision (float32 at least).

    Args:
        depth: float [..., h, w] z-depth in the source camera.
        K_src, K_dst: float [..., 3, 3] grid intrinsics of the source and destination cameras.
        dst_from_src: float [..., 4, 4]; leading dims broadcast with depth's.

    Returns:
        uv: float [..., h, w, 2] grid coordinates in the destination, meaningless where z <= 0.
        z: float [..., h, w] z-depth in the destination camera; dtype of ``depth`` (float32 at least).
    """
    _check_square(K_src, 3, "K_src")
    _check_square(K_dst, 3, "K_dst")
    _check_square(dst_from_src, 4, "dst_from_src")
    if depth.ndim < 2:
        raise ValueError(f"depth: expected shape [..., h, w], got {list(depth.shape)}")
    dt = torch.promote_types(depth.dtype, torch.float32)
    K_dst64, pose = K_dst.to(torch.float64), dst_from_src.to(torch.float64)
    M = K_dst64 @ pose[..., :3, :3] @ torch.linalg.inv(K_src.to(torch.float64))  # [..., 3, 3]
    offset = (K_dst64 @ pose[..., :3, 3:])[..., 0]  # [..., 3]
    uv1 = _homogeneous_grid(depth).to(dt)  # [h, w, 3]
    rays = torch.einsum("...ij,hwj->...hwi", M.to(dt), uv1)  # [..., h, w, 3] in the depth's precision
    q = rays * depth.to(dt)[..., None] + offset.to(dt)[..., None, None, :]  # [..., h, w, 3]
    z = q[..., 2]
    safe = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    return q[..., :2] / safe[..., None], z


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
