"""RGBPointMemory (the explicit baseline) on the synthetic room."""

import numpy as np
import pytest
import torch

from mirage_cli.memory import LatentSpatialMemory, RGBPointMemory
from mirage_cli.testing import synthetic_room as S

H, W = S.HEIGHT, S.WIDTH
K = torch.tensor(S.intrinsics(H, W))
SCENARIOS = {s.name: s for s in S.scenarios()}
_VIEWS: dict = {}


def view(cam):
    key = np.asarray(cam).tobytes()
    if key not in _VIEWS:
        _VIEWS[key] = S.render(K, cam, H, W)
    return _VIEWS[key]


def encoded_error(rgb_view, target):
    """(pixel coverage, relative L2 of the encoded render on fully covered cells)."""
    rgb_t, _ = view(target)
    lat_t = S.linear_encoder(rgb_t)
    enc = S.linear_encoder(rgb_view.rgb[0])
    full = torch.nn.functional.avg_pool2d(rgb_view.mask[0][None, None].float(), 16)[0, 0] == 1
    return rgb_view.coverage, float((enc - lat_t)[:, full].norm() / lat_t[:, full].norm())


def test_same_view_renders_the_image():
    cam = SCENARIOS["same view"].source
    rgb, depth = view(cam)
    mem = RGBPointMemory()
    assert mem.insert(rgb, depth, K, torch.tensor(cam)) == H * W
    v = mem.query(K, torch.tensor(cam), (H, W))
    assert v.rgb.shape == (1, 3, H, W) and v.mask.shape == (1, H, W) and v.depth.shape == (1, H, W)
    assert v.coverage == 1.0
    assert (v.rgb[0] - rgb).abs().max() <= 0.5 / 255 + 1e-6  # uint8 storage
    torch.testing.assert_close(v.depth[0], depth)
    cov, err = encoded_error(v, cam)
    assert err <= 0.01


def test_dolly_in_fills_holes_at_pixel_level():
    sc = SCENARIOS["dolly-in 1/3"]
    rgb, depth = view(sc.source)
    mem = RGBPointMemory()
    mem.insert(rgb, depth, K, torch.tensor(sc.source))
    cov, err = encoded_error(mem.query(K, torch.tensor(sc.target), (H, W)), sc.target)
    assert cov >= 0.88 and err <= 0.02
    nearest = mem.query(K, torch.tensor(sc.target), (H, W), max_half_size=0.0)
    assert nearest.coverage < 0.6


def test_same_footprint_and_zbuffer_as_the_latent_memory():
    """At stride 16 the RGB render's holes sit where the latent memory's do (same splat rule)."""
    sc = SCENARIOS["small move"]
    rgb, depth = view(sc.source)
    rmem = RGBPointMemory()
    rmem.insert(rgb, depth, K, torch.tensor(sc.source))
    lmem = LatentSpatialMemory()
    lmem.insert(S.linear_encoder(rgb), depth, K, torch.tensor(sc.source))
    rv = rmem.query(K, torch.tensor(sc.target), (H, W))
    lv = lmem.query(K, torch.tensor(sc.target), (H, W))
    cell_cov = torch.nn.functional.avg_pool2d(rv.mask.float()[:, None], 16)[0, 0]  # [h, w]
    agree = (cell_cov > 0.5) == lv.mask[0]
    assert agree.float().mean() > 0.95


def test_insert_twice_and_unexplained():
    cam = S.world_from_cam()
    rgb, depth = view(cam)
    mem = RGBPointMemory()
    mem.insert(rgb, depth, K, torch.tensor(cam))
    assert mem.insert(rgb, depth, K, torch.tensor(cam)) == 0
    moved = S.world_from_cam((0.1, 0.0, 0.1), 3.0)
    rgb2, depth2 = view(moved)
    n = mem.insert_unexplained(rgb2, depth2, K, torch.tensor(moved))
    assert 0 < n < 0.2 * H * W  # only what the first view did not explain


def test_state_dict_round_trip_and_errors(tmp_path):
    cam = S.world_from_cam()
    rgb, depth = view(cam)
    mem = RGBPointMemory(dtype=torch.float16, capacity=10**6)
    mem.insert(rgb, depth, K, torch.tensor(cam), frame_index=3)
    path = tmp_path / "rgb.safetensors"
    mem.save(path)
    back = RGBPointMemory.load(path)
    assert back.dtype == torch.float16 and back.capacity == 10**6 and back.num_points == mem.num_points
    a = mem.query(K, torch.tensor(cam), (H, W), mark_seen=False)
    b = back.query(K, torch.tensor(cam), (H, W), mark_seen=False)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert back.nbytes == mem.nbytes == mem.num_points * (12 + 6 + 4 + 4 + 8)
    state = mem.state_dict()
    state["rgb"] = state["rgb"][:, :2]
    with pytest.raises(ValueError, match=r"rgb: expected shape \['N', 3\]"):
        RGBPointMemory.from_state_dict(state)
    lat_path = tmp_path / "latent.safetensors"
    LatentSpatialMemory().save(lat_path)
    with pytest.raises(ValueError, match="expected a mirage.rgb_memory.v1 file"):
        RGBPointMemory.load(lat_path)


def test_shape_errors():
    mem = RGBPointMemory()
    with pytest.raises(ValueError, match=r"rgb: expected shape \[T, 3, H, W\]"):
        mem.insert(torch.zeros(4, 8, 8), torch.ones(8, 8), K, torch.eye(4))
    with pytest.raises(ValueError, match="depth: expected shape"):
        mem.insert(torch.zeros(3, 8, 8), torch.ones(8, 9), K, torch.eye(4))
    with pytest.raises(ValueError, match="dtype"):
        RGBPointMemory(dtype=torch.int32)


def test_export_ply_uses_the_colours(tmp_path):
    from mirage_cli.memory.ply import read_point_cloud

    cam = S.world_from_cam()
    rgb, depth = view(cam)
    mem = RGBPointMemory()
    mem.insert(rgb[:, :32, :32].contiguous(), depth[:32, :32], K, torch.tensor(cam))
    n = mem.export_ply(tmp_path / "cloud.ply")
    xyz, colour = read_point_cloud(tmp_path / "cloud.ply")
    assert n == 32 * 32 == xyz.shape[0]
    np.testing.assert_allclose(xyz, mem.cache.xyz.numpy())
    np.testing.assert_array_equal(colour, mem.cache.features.numpy())
