"""Dynamic-region filter and depth alignment."""

import dataclasses

import pytest
import torch

from mirage_cli.memory import align_depth, dynamic_region_mask, warp_residual
from mirage_cli.testing import synthetic_room as S

H, W = S.HEIGHT, S.WIDTH
K = torch.tensor(S.intrinsics(H, W))


@pytest.fixture(scope="module")
def frames():
    a, b = S.world_from_cam(), S.world_from_cam((0.1, 0.0, 0.2), 4.0)
    room = S.default_room()
    box = room.boxes[0]
    shifted = dataclasses.replace(box, lo=(box.lo[0] + 0.8,) + box.lo[1:], hi=(box.hi[0] + 0.8,) + box.hi[1:])
    moved_room = S.Room(room.walls, (shifted,) + room.boxes[1:])
    rgb_a, depth_a = S.render(K, a, H, W)
    rgb_b, _ = S.render(K, b, H, W)
    rgb_m, _ = S.render(K, b, H, W, moved_room)
    return dict(
        a=torch.tensor(a), b=torch.tensor(b), depth_a=depth_a,
        lat_a=S.linear_encoder(rgb_a), lat_b=S.linear_encoder(rgb_b), lat_moved=S.linear_encoder(rgb_m),
    )


def test_static_scene_has_no_dynamic_cells(frames):
    f = frames
    mask = dynamic_region_mask(f["lat_a"], f["depth_a"], K, f["a"], f["lat_b"], f["b"], threshold=0.35)
    assert mask.shape == (16, 28) and mask.dtype == torch.bool
    assert not mask.any()


def test_moved_box_is_flagged(frames):
    f = frames
    mask = dynamic_region_mask(f["lat_a"], f["depth_a"], K, f["a"], f["lat_moved"], f["b"], threshold=0.35)
    changed = (f["lat_b"] - f["lat_moved"]).norm(dim=0) > 0.05 * f["lat_b"].norm(dim=0).mean()
    assert mask.sum() >= 0.5 * changed.sum()
    assert not (mask & ~changed).any()  # only cells that really changed


def test_warp_residual_accepts_cell_depth(frames):
    from mirage_cli.geometry import projection as G

    f = frames
    r_pix, c_pix = warp_residual(f["lat_a"], f["depth_a"], K, f["a"], f["lat_b"], f["b"])
    r_cell, c_cell = warp_residual(f["lat_a"], G.cell_centre_depth(f["depth_a"], 16), K, f["a"], f["lat_b"], f["b"])
    assert torch.equal(c_pix, c_cell)
    torch.testing.assert_close(r_pix, r_cell)
    with pytest.raises(ValueError, match="latents_b: expected shape"):
        warp_residual(f["lat_a"], f["depth_a"], K, f["a"], f["lat_b"][:, :-1], f["b"])
    with pytest.raises(ValueError, match="depth_a: expected shape"):
        warp_residual(f["lat_a"], f["depth_a"][:-1], K, f["a"], f["lat_b"], f["b"])


def _depth_with_outliers(seed=0):
    gen = torch.Generator().manual_seed(seed)
    depth = 1.0 + 4.0 * torch.rand(64, 80, generator=gen)
    valid = torch.rand(64, 80, generator=gen) > 0.1
    outlier = torch.rand(64, 80, generator=gen) < 0.2
    return depth, valid, outlier, gen


def test_align_depth_scale_is_robust():
    depth, valid, outlier, gen = _depth_with_outliers()
    estimate = depth / 2.5 * (1 + 0.01 * torch.randn(depth.shape, generator=gen))
    estimate[outlier] *= 3.0  # 20% gross outliers
    aligned, fit = align_depth(estimate, depth, valid, fit="scale")
    assert fit.scale == pytest.approx(2.5, rel=0.01)
    assert fit.shift == 0.0
    assert fit.residual < 0.02
    assert 0.7 < fit.inliers < 0.85
    good = valid & ~outlier
    assert ((aligned[good] - depth[good]).abs() / depth[good]).median() < 0.01


def test_align_depth_scale_shift_inverse():
    depth, valid, outlier, gen = _depth_with_outliers(1)
    disparity = 3.0 / depth + 0.4  # what a relative model gives: affine in inverse depth
    disparity[outlier] = torch.rand(int(outlier.sum()), generator=gen) * 4
    aligned, fit = align_depth(disparity, depth, valid, fit="scale_shift_inverse")
    # 1/depth = (disparity - 0.4) / 3
    assert fit.scale == pytest.approx(1 / 3, rel=1e-3)
    assert fit.shift == pytest.approx(-0.4 / 3, rel=1e-3)
    good = valid & ~outlier
    torch.testing.assert_close(aligned[good], depth[good], rtol=1e-4, atol=1e-4)
    assert fit.residual < 1e-4


def test_align_depth_errors_and_invalid_output():
    d = torch.ones(4, 4)
    with pytest.raises(ValueError, match="fit"):
        align_depth(d, d, d > 0, fit="affine")
    with pytest.raises(ValueError, match="reference: expected shape"):
        align_depth(d, torch.ones(4, 5), d > 0)
    with pytest.raises(ValueError, match="at least 2 overlapping pixels"):
        align_depth(d, d, torch.zeros(4, 4, dtype=torch.bool))
    est = torch.full((4, 4), 2.0)
    est[0, 0] = float("nan")
    aligned, _ = align_depth(est, torch.full((4, 4), 4.0), torch.ones(4, 4, dtype=torch.bool))
    assert aligned[0, 0] == 0.0 and aligned[1, 1] == pytest.approx(4.0)
