"""memory/voxel.py and warp_residual against their slow twins (mirage_cli.memory.twins) on random inputs."""

from __future__ import annotations

import pytest
import torch

from mirage_cli.memory import filters, voxel
from mirage_cli.memory import twins as ref
from mirage_cli.testing import synthetic_room as S


@pytest.mark.parametrize("N, voxel_size", [(1, None), (50, None), (400, None), (300, 0.05), (64, 1.0)])
def test_voxel_keys_match_reference(N, voxel_size):
    gen = torch.Generator().manual_seed(N)
    xyz = torch.randn(N, 3, generator=gen, dtype=torch.float64) * 3.0
    radius = torch.rand(N, generator=gen, dtype=torch.float64) * 0.2 + 1e-4
    assert torch.equal(voxel.voxel_keys(xyz, radius, voxel_size), ref.voxel_keys(xyz, radius, voxel_size))


def test_voxel_keys_clamp_far_points_to_border_voxels():
    xyz = torch.tensor([[1e9, -1e9, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    radius = torch.tensor([0.01, 0.01], dtype=torch.float64)
    assert torch.equal(voxel.voxel_keys(xyz, radius), ref.voxel_keys(xyz, radius))


@pytest.mark.parametrize("N, distinct", [(0, 1), (1, 1), (30, 5), (200, 150)])
def test_first_per_key_and_novel_match_reference(N, distinct):
    gen = torch.Generator().manual_seed(N)
    keys = torch.randint(0, distinct, (N,), generator=gen)
    old = torch.randint(0, distinct, (max(1, N // 3),), generator=gen)
    assert torch.equal(voxel.first_per_key(keys), ref.first_per_key(keys))
    assert torch.equal(voxel.novel(keys, old), ref.novel(keys, old))
    assert torch.equal(voxel.novel(keys, old[:0]), ref.novel(keys, old[:0]))


@pytest.mark.parametrize("move", [(0.0, 0.0, 0.0, 0.0), (0.15, 0.0, 0.1, 8.0), (-0.2, 0.05, 0.3, -12.0)])
def test_warp_residual_matches_reference(move):
    """Two views of the synthetic room (exact depth), latent frames from the linear encoder."""
    H, W = 64, 96
    K = torch.tensor(S.intrinsics(H, W))
    wa = torch.tensor(S.world_from_cam((0.0, 0.0, 0.0), 0.0))
    wb = torch.tensor(S.world_from_cam(move[:3], move[3]))
    rgb_a, depth_a = S.render(K, wa, H, W)
    rgb_b, _ = S.render(K, wb, H, W)
    lat_a, lat_b = S.linear_encoder(rgb_a, channels=8), S.linear_encoder(rgb_b, channels=8)
    fast = filters.warp_residual(lat_a, depth_a, K, wa, lat_b, wb)
    slow = ref.warp_residual(lat_a, depth_a, K, wa, lat_b, wb)
    assert torch.equal(fast[1], slow[1]) and float(fast[1].float().mean()) > 0.5  # most of b is seen from a
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-6)
    if move[3] == 0.0 and move[0] == 0.0:
        assert float(fast[0].max()) < 1e-5  # the same view reproduces itself
