"""The synthetic rig: exact depth for OpenCV cameras, a room with boxes, the linear encoder."""

import math

import numpy as np
import pytest
import torch

from mirage_cli.geometry import projection as G
from mirage_cli.testing import synthetic_room as S


def test_intrinsics_from_vertical_fov():
    K = S.intrinsics(256, 448, 60.0)
    assert K[1, 1] == pytest.approx(128 / math.tan(math.radians(30)))
    assert K[0, 2] == 223.5 and K[1, 2] == 127.5


def test_camera_helpers_are_opencv():
    m = S.world_from_cam((1, 2, 3), yaw_deg=90.0)
    np.testing.assert_allclose(m[:3, 2], [1, 0, 0], atol=1e-12)  # yaw right: looks down +x
    np.testing.assert_allclose(S.world_from_cam(pitch_deg=90.0)[:3, 2], [0, -1, 0], atol=1e-12)  # looks up (y is down)
    la = S.look_at((0, 0, 0), (0, 0, 5))
    np.testing.assert_allclose(la, np.eye(4), atol=1e-12)
    R = S.look_at((1, -1, 0), (3, 0, 4))[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_depth_is_exact_z_depth_of_the_room():
    K = S.intrinsics(64, 96)
    rgb, depth = S.render(K, np.eye(4), 64, 96)
    assert rgb.shape == (3, 64, 96) and depth.shape == (64, 96)
    assert rgb.dtype == torch.float32 and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    room = S.default_room()
    # every back-projected pixel lies on a wall or on a box face
    pts = G.backproject(depth.double(), torch.tensor(K), torch.eye(4, dtype=torch.float64))
    on_surface = torch.zeros(64, 96, dtype=torch.bool)
    for box in (room.walls,) + room.boxes:
        lo, hi = torch.tensor(box.lo, dtype=torch.float64), torch.tensor(box.hi, dtype=torch.float64)
        inside = ((pts >= lo - 1e-5) & (pts <= hi + 1e-5)).all(-1)
        on_face = ((pts - lo).abs() < 1e-5).any(-1) | ((pts - hi).abs() < 1e-5).any(-1)
        on_surface |= inside & on_face
    assert on_surface.all()
    # the back wall is 5 m ahead; the centre ray (odd size: a pixel on the axis) hits the panel at 3.6 m
    assert float(depth.max()) == pytest.approx(5.0, abs=1e-5)
    _, odd = S.render(S.intrinsics(65, 97), np.eye(4), 65, 97)
    assert float(odd[32, 48]) == pytest.approx(3.6, abs=1e-6)


def test_room_contains_the_origin_camera_and_boxes_in_view():
    room = S.default_room()
    assert all(lo < 0 < hi for lo, hi in zip(room.walls.lo, room.walls.hi))
    K = S.intrinsics()
    _, depth = S.render(K, np.eye(4), S.HEIGHT, S.WIDTH)
    pts = G.backproject(depth.double(), torch.tensor(K), torch.eye(4, dtype=torch.float64))
    visible = 0
    for box in room.boxes:
        lo, hi = torch.tensor(box.lo, dtype=torch.float64), torch.tensor(box.hi, dtype=torch.float64)
        visible += int((((pts >= lo - 1e-5) & (pts <= hi + 1e-5)).all(-1)).sum() > 500)
    assert visible >= 4


def test_render_views_batches_and_checks_shapes():
    K = S.intrinsics(32, 48)
    cams = np.stack([np.eye(4), S.world_from_cam((0, 0, 0.5), 10.0)])
    rgb, depth = S.render_views(K, cams, 32, 48)
    assert rgb.shape == (2, 3, 32, 48) and depth.shape == (2, 32, 48)
    torch.testing.assert_close(depth[1], S.render(K, cams[1], 32, 48)[1])
    with pytest.raises(ValueError, match="world_from_cam: expected shape"):
        S.render(K, np.eye(3), 32, 48)


def test_linear_encoder():
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 32, 48, generator=gen)
    lat = S.linear_encoder(rgb)
    assert lat.shape == (2, 48, 2, 3)
    pooled = rgb[0, :, :16, :16].mean(dim=(1, 2))
    torch.testing.assert_close(lat[0, :, 0, 0], S.encoder_matrix() @ pooled)
    torch.testing.assert_close(S.linear_encoder(rgb[1]), lat[1])
    assert torch.equal(S.encoder_matrix(), S.encoder_matrix())
    with pytest.raises(ValueError, match="rgb: expected"):
        S.linear_encoder(torch.zeros(3, 20, 32))


def test_scenarios_are_inside_the_room():
    room = S.default_room()
    names = [s.name for s in S.scenarios()]
    assert names == ["same view", "small move", "rotate 10deg", "dolly-in 1/3", "orbit 25deg"]
    for s in S.scenarios():
        for m in (s.source, s.target):
            assert all(lo < p < hi for p, lo, hi in zip(m[:3, 3], room.walls.lo, room.walls.hi))
