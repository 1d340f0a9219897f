"""Helpers that decide what goes into memory: the dynamic-region filter and depth alignment."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mirage_cli.geometry import projection as geometry
from mirage_cli.geometry import splatting
from mirage_cli.memory import checks
from mirage_cli.memory.point_cache import FOOTPRINT_MARGIN, gather_rows

__all__ = ["dynamic_region_mask", "warp_residual", "align_depth", "DepthFit"]


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
    """Warp latent frame a into camera b and measure how much b differs where a lands.

    The relative residual of cell (i, j) of b is
    ``||warp(a)[:, i, j] - b[:, i, j]||_2 / mean_cells(||b[:, i, j]||_2)``: the per-cell error
    divided by the mean latent norm of frame b (a frame-level scale, so a cell whose latent happens
    to be small is not flagged for that alone).

    Args:
        latents_a: float [C, h, w] latent frame a.
        depth_a: float [H, W] (pixels, H = stride*h) or [h, w] (per cell) z-depth of frame a.
        K: float [3, 3] pixel intrinsics of both frames at H x W.
        world_from_cam_a, world_from_cam_b: float [4, 4].
        latents_b: float [C, h, w] latent frame b.
        stride: pixels per latent cell side.
        depth_tolerance: z-buffer front band (``splatting.splat``).

    Returns:
        residual: float32 [h, w] relative residual (0 where a does not land).
        covered: bool [h, w] cells of b that a lands on.
    """
    if latents_a.ndim != 3:
        raise ValueError(f"latents_a: expected shape [C, h, w], got {list(latents_a.shape)}")
    if latents_b.shape != latents_a.shape:
        raise ValueError(f"latents_b: expected shape {list(latents_a.shape)}, got {list(latents_b.shape)}")
    C, h, w = latents_a.shape
    dev = latents_a.device
    depth_a = checks.tensor(depth_a, "depth_a", dev, torch.float32)
    if tuple(depth_a.shape) == (h, w):
        z = depth_a  # [h, w] already per cell
    elif tuple(depth_a.shape) == (stride * h, stride * w):
        z = geometry.cell_centre_depth(depth_a, stride)  # [h, w]
    else:
        raise ValueError(f"depth_a: expected shape [{stride * h}, {stride * w}] or [{h}, {w}], got {list(depth_a.shape)}")
    K = checks.tensor(K, "K", dev, torch.float64)
    wa = checks.tensor(world_from_cam_a, "world_from_cam_a", dev, torch.float64)
    wb = checks.tensor(world_from_cam_b, "world_from_cam_b", dev, torch.float64)
    for name, x, n in (("K", K, 3), ("world_from_cam_a", wa, 4), ("world_from_cam_b", wb, 4)):
        if x.shape != (n, n):
            raise ValueError(f"{name}: expected shape [{n}, {n}], got {list(x.shape)}")
    K_lat = geometry.latent_intrinsics(K, stride)  # [3, 3]
    ok = geometry.valid_depth(z)
    xyz = geometry.backproject(torch.where(ok, z, torch.ones_like(z)), K_lat, wa)[ok]  # [N, 3]
    focal = float(torch.sqrt(K_lat[0, 0] * K_lat[1, 1]))
    radius = splatting.footprint_radius(z[ok], (xyz - wa[:3, 3].to(xyz.dtype)).norm(dim=-1), focal)  # [N]
    cam = geometry.transform_points(geometry.invert_rigid(wb).to(torch.float32), xyz)[None]  # [1, N, 3]
    uv, zb = geometry.project(cam, K_lat.to(torch.float32))  # [1, N, 2], [1, N]
    half = FOOTPRINT_MARGIN * splatting.footprint_half_size(radius[None], zb.clamp(min=1e-6), cam.norm(dim=-1), focal)  # [1, N]
    winner, _ = splatting.splat(uv, zb, half, zb > 1e-6, (h, w), 2.0, depth_tolerance)
    winner = winner[0]  # [h, w]
    covered = winner >= 0
    feats_a = latents_a.permute(1, 2, 0)[ok].to(torch.float32)  # [N, C]
    warped = gather_rows(feats_a, winner[None])[0]  # [h, w, C]
    b = latents_b.permute(1, 2, 0).to(torch.float32)  # [h, w, C]
    scale = b.norm(dim=-1).mean().clamp(min=1e-12)
    residual = (warped - b).norm(dim=-1) / scale  # [h, w]
    return torch.where(covered, residual, torch.zeros_like(residual)), covered


def dynamic_region_mask(
    latents_a: Tensor,
    depth_a: Tensor,
    K: Tensor,
    world_from_cam_a: Tensor,
    latents_b: Tensor,
    world_from_cam_b: Tensor,
    threshold: float,
    stride: int = 16,
) -> Tensor:
    """bool [h, w]: cells of frame b whose warped residual from frame a exceeds ``threshold``.

    The residual is the relative one of ``warp_residual`` (per-cell L2 error over the mean latent
    norm of frame b). Cells a does not land on are False (nothing to compare). The rollout keeps
    cells flagged here out of memory (they moved, or the model changed its mind about them).
    Arguments as ``warp_residual``.
    """
    residual, covered = warp_residual(latents_a, depth_a, K, world_from_cam_a, latents_b, world_from_cam_b, stride)
    return covered & (residual > threshold)


@dataclass(frozen=True)
class DepthFit:
    """Result of ``align_depth``.

    Attributes:
        scale, shift: the fit (shift is 0 for the "scale" fit; for "scale_shift_inverse" they map
            the estimate to inverse depth).
        residual: median relative depth error |aligned - reference| / reference over the valid
            overlap (robust to the outliers the fit rejected).
        inliers: fraction of the valid overlap used by the final fit.
    """

    scale: float
    shift: float
    residual: float
    inliers: float


def _weighted_fit(x: Tensor, y: Tensor, with_shift: bool) -> tuple[Tensor, Tensor]:
    """Least squares y ~ s*x (+ t) in float64; returns (s, t)."""
    if not with_shift:
        return (x * y).sum() / (x * x).sum().clamp(min=1e-300), torch.zeros((), dtype=x.dtype, device=x.device)
    A = torch.stack([x, torch.ones_like(x)], dim=1)  # [P, 2]
    sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    return sol[0], sol[1]


def align_depth(
    estimated: Tensor,
    reference: Tensor,
    valid: Tensor,
    fit: str = "scale",
    iterations: int = 5,
    inlier_k: float = 3.0,
) -> tuple[Tensor, DepthFit]:
    """Fit an estimated depth map to a reference (the memory's rendered depth) on their overlap.

    Fits (``fit``):
      - ``"scale"``: ``estimated`` is depth up to scale (metric models); ``aligned = s * estimated``.
      - ``"scale_shift_inverse"``: ``estimated`` is an affine-invariant *inverse* depth (what
        relative models such as Depth Anything output); ``1/aligned = s * estimated + t``.
    Robust: the fit starts from medians (median ratio; median and median absolute deviation
    matching), then ``iterations`` rounds of least squares on the inliers, those whose residual
    is within ``inlier_k`` robust standard deviations (1.4826 * MAD) of zero. Pixels where the
    aligned depth would be <= 0 or not finite come back as 0 (invalid depth).

    Args:
        estimated: float [H, W].
        reference: float [H, W] z-depth.
        valid: bool [H, W] overlap where the reference is trusted.

    Returns:
        aligned: float32 [H, W] depth; fit: ``DepthFit``.

    Raises:
        ValueError: bad shapes or fit, or fewer than 2 usable pixels in the overlap.
    """
    if fit not in ("scale", "scale_shift_inverse"):
        raise ValueError(f"fit: expected 'scale' or 'scale_shift_inverse', got {fit!r}")
    if estimated.ndim != 2:
        raise ValueError(f"estimated: expected shape [H, W], got {list(estimated.shape)}")
    for name, x in (("reference", reference), ("valid", valid)):
        if x.shape != estimated.shape:
            raise ValueError(f"{name}: expected shape {list(estimated.shape)}, got {list(x.shape)}")
    est = estimated.to(torch.float64)
    ref = reference.to(torch.float64)
    use = valid.to(torch.bool) & geometry.valid_depth(ref) & torch.isfinite(est)
    if fit == "scale":
        use &= est > 0
    x = est[use]  # [P]
    if x.numel() < 2:
        raise ValueError(f"valid: need at least 2 overlapping pixels with usable depth to align, got {x.numel()}")
    with_shift = fit == "scale_shift_inverse"
    y = 1.0 / ref[use] if with_shift else ref[use]  # [P] target
    if with_shift:
        mad_x = (x - x.median()).abs().median()
        mad_y = (y - y.median()).abs().median()
        s = mad_y / mad_x.clamp(min=1e-300)
        t = y.median() - s * x.median()
    else:
        s = (y / x).median()
        t = torch.zeros((), dtype=torch.float64, device=x.device)
    inl = torch.ones_like(x, dtype=torch.bool)
    for _ in range(iterations):
        r = (s * x + t - y) / y.abs().clamp(min=1e-300)  # [P] relative residual
        sigma = 1.4826 * r.abs().median()
        inl = r.abs() <= max(float(inlier_k * sigma), 1e-9)
        if int(inl.sum()) < 2:
            break
        s, t = _weighted_fit(x[inl], y[inl], with_shift)
    pred = s * est + t  # [H, W]
    aligned = 1.0 / pred if with_shift else pred
    aligned = torch.where(geometry.valid_depth(aligned) & torch.isfinite(est), aligned, torch.zeros_like(aligned))
    rel = (aligned[use] - ref[use]).abs() / ref[use]
    fit = DepthFit(scale=float(s), shift=float(t), residual=float(rel.median()), inliers=float(inl.float().mean()))
    return aligned.to(torch.float32), fit
