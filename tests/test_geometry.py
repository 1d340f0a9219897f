"""mirage_cli.geometry.projection: shapes and errors, hand-computed cases, round trips, fast vs slow reference."""

import math

import pytest
import torch

from mirage_cli.geometry import projection as G
from mirage_cli.geometry import splatting as SP
from mirage_cli.geometry import twins as ref


def _K(f=100.0, cx=31.5, cy=23.5, skew=0.0, fy=None, dtype=torch.float64):
    return torch.tensor([[f, skew, cx], [0.0, f if fy is None else fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def _random_rigid(gen, n, dtype=torch.float64):
    """[n, 4, 4] random rotations (QR of a Gaussian, det +1) and translations."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q = torch.where(torch.det(q)[:, None, None] < 0, -q, q)
    m = torch.eye(4, dtype=dtype).repeat(n, 1, 1)
    m[:, :3, :3] = q
    m[:, :3, 3] = torch.randn(n, 3, generator=gen, dtype=dtype)
    return m


# --- latent intrinsics -----------------------------------------------------------------------------


def test_latent_intrinsics_hand_computed():
    K = _K(f=1000.0, cx=639.5, cy=351.5)
    L = G.latent_intrinsics(K, 16)
    assert L[0, 0] == pytest.approx(62.5)
    assert L[1, 1] == pytest.approx(62.5)
    # (639.5 + 0.5) / 16 - 0.5 = 39.5: the centre of an 80-cell-wide grid
    assert L[0, 2] == pytest.approx(39.5)
    assert L[1, 2] == pytest.approx(21.5)
    assert L[2].tolist() == [0.0, 0.0, 1.0]


def test_latent_intrinsics_cell_centre_maps_to_block_centre():
    """A 3D point that projects to pixel (16j+7.5, 16i+7.5) projects to cell (j, i)."""
    K = _K(f=321.0, cx=200.0, cy=120.0, skew=3.0)
    L = G.latent_intrinsics(K, 16)
    for i, j in [(0, 0), (3, 5), (7, 12)]:
        pixel = torch.tensor([16 * j + 7.5, 16 * i + 7.5, 1.0], dtype=torch.float64)
        ray = torch.linalg.solve(K, pixel)
        cell = L @ ray
        assert cell[0] / cell[2] == pytest.approx(j, abs=1e-9)
        assert cell[1] / cell[2] == pytest.approx(i, abs=1e-9)


@pytest.mark.parametrize("lead", [(), (1,), (4,), (2, 3)])
def test_latent_intrinsics_matches_reference(lead):
    gen = torch.Generator().manual_seed(0)
    K = _K().repeat(*lead, 1, 1) if lead else _K()
    K = K + torch.randn(K.shape, generator=gen, dtype=K.dtype) * torch.tensor([[1, 0.1, 1], [0, 1, 1], [0, 0, 0]], dtype=K.dtype)
    torch.testing.assert_close(G.latent_intrinsics(K, 16), ref.latent_intrinsics(K, 16))


def test_latent_intrinsics_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"K: expected shape \[\.\.\., 3, 3\], got \[3, 4\]"):
        G.latent_intrinsics(torch.zeros(3, 4), 16)


# --- depth per cell --------------------------------------------------------------------------------


def test_cell_centre_depth_averages_the_four_central_pixels():
    depth = torch.full((16, 32), 9.0)
    depth[7, 7], depth[7, 8], depth[8, 7], depth[8, 8] = 1.0, 2.0, 3.0, 4.0
    depth[7:9, 23:25] = torch.tensor([[2.0, float("nan")], [0.0, 4.0]])  # two invalid, mean of the rest
    out = G.cell_centre_depth(depth, 16)
    assert out.shape == (1, 2)
    assert out[0, 0] == pytest.approx(2.5)
    assert out[0, 1] == pytest.approx(3.0)


def test_cell_centre_depth_all_invalid_is_nan():
    depth = torch.ones(16, 16)
    depth[7:9, 7:9] = float("inf")
    assert torch.isnan(G.cell_centre_depth(depth, 16)).all()


@pytest.mark.parametrize("shape", [(32, 48), (2, 32, 16), (2, 1, 16, 32)])
def test_cell_centre_depth_matches_reference(shape):
    gen = torch.Generator().manual_seed(1)
    depth = torch.rand(shape, generator=gen) * 5
    depth[torch.rand(shape, generator=gen) < 0.2] = float("nan")
    depth[torch.rand(shape, generator=gen) < 0.1] = -1.0
    torch.testing.assert_close(G.cell_centre_depth(depth, 16), ref.cell_centre_depth(depth, 16), equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cell_centre_depth_every_pixel_valid_is_the_same_mean_bit_for_bit(dtype):
    """Depth valid everywhere takes a shorter way (no stacked copy): the same values, bit for bit, as
    with one invalid pixel elsewhere (the general way), and close to the reference."""
    gen = torch.Generator().manual_seed(4)
    depth = (0.5 + torch.rand(3, 64, 96, generator=gen, dtype=torch.float64) * 20).to(dtype)
    general = depth.clone()
    general[0, 0, 0] = float("nan")  # not a central pixel: only switches the way taken
    fast, slow = G.cell_centre_depth(depth, 16), G.cell_centre_depth(general, 16)
    assert torch.equal(fast, slow) and fast.dtype == dtype
    torch.testing.assert_close(fast.double(), ref.cell_centre_depth(depth.double(), 16), rtol=1e-3, atol=0)


def test_cell_centre_depth_rejects_indivisible():
    with pytest.raises(ValueError, match="divisible by stride 16"):
        G.cell_centre_depth(torch.ones(20, 32), 16)


def test_depth_edge_score_planes_are_zero_edges_are_large():
    K = _K(f=50.0, cx=15.5, cy=15.5)
    # a slanted plane n.X = 1 has inverse depth affine in pixels: 1/z = n . K^-1 [u, v, 1]
    n = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    uv = G.pixel_grid(32, 32, dtype=torch.float64)
    rays = torch.cat([uv, torch.ones(32, 32, 1, dtype=torch.float64)], -1) @ torch.linalg.inv(K).T
    plane = 1.0 / (rays @ n)
    assert G.depth_edge_score(plane, 16).max() < 1e-9
    step = torch.full((32, 32), 3.0, dtype=torch.float64)
    step[:, 20:] = 3.6  # a depth edge inside the right column of cells
    score = G.depth_edge_score(step, 16)
    assert score[:, 0].max() < 1e-9 and score[:, 1].min() > 0.05
    step[3, 3] = float("nan")
    assert math.isinf(G.depth_edge_score(step, 16)[0, 0])


@pytest.mark.parametrize("shape", [(16, 32), (2, 16, 16)])
def test_depth_edge_score_matches_reference(shape):
    gen = torch.Generator().manual_seed(2)
    depth = (1 + torch.rand(shape, generator=gen, dtype=torch.float64)) * 2
    depth.view(-1)[5] = 0.0
    torch.testing.assert_close(G.depth_edge_score(depth, 16), ref.depth_edge_score(depth, 16))


@pytest.mark.parametrize("shape", [(16, 32), (2, 16, 16), (3, 64, 48), (2, 2, 32, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_depth_edge_score_at_selected_cells_matches_the_whole_frame(shape, dtype, contiguous, monkeypatch):
    """Both gathers (whole pixel runs of a contiguous depth, or any strided view) score as the whole frame does."""
    gen = torch.Generator().manual_seed(3)
    depth = ((1 + torch.rand(shape, generator=gen, dtype=torch.float64)) * 2).to(dtype)
    if not contiguous:
        depth = depth.transpose(-1, -2).contiguous().transpose(-1, -2)
    depth[(0,) * (depth.ndim - 1) + (7,)] = float("nan")
    cells = torch.rand(G.depth_edge_score(depth, 16).shape, generator=gen) < 0.6
    monkeypatch.setattr(G, "EDGE_SCORE_CELLS_PER_BATCH", 2)  # several batches even on small frames
    index = cells.nonzero(as_tuple=True)
    torch.testing.assert_close(G.depth_edge_score_at(depth, 16, index), G.depth_edge_score(depth, 16)[cells])
    assert G.depth_edge_score_at(depth, 16, torch.zeros_like(cells).nonzero(as_tuple=True)).shape == (0,)
    with pytest.raises(ValueError, match="index: expected"):
        G.depth_edge_score_at(depth, 16, index[1:])


# --- rigid transforms, back-projection, projection -------------------------------------------------


def test_invert_rigid_and_transform_points():
    gen = torch.Generator().manual_seed(3)
    m = _random_rigid(gen, 5)
    torch.testing.assert_close(G.invert_rigid(m), torch.linalg.inv(m))
    pts = torch.randn(5, 7, 3, generator=gen, dtype=torch.float64)
    back = G.transform_points(G.invert_rigid(m), G.transform_points(m, pts))
    torch.testing.assert_close(back, pts)


def test_transform_points_hand_computed():
    m = torch.eye(4)
    m[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about z
    m[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    out = G.transform_points(m, torch.tensor([[1.0, 0.0, 0.0]]))
    assert out.tolist() == [[1.0, 3.0, 3.0]]


def test_backproject_hand_computed():
    K = _K(f=100.0, cx=1.0, cy=1.0)
    depth = torch.full((3, 3), 2.0, dtype=torch.float64)
    pts = G.backproject(depth, K, torch.eye(4, dtype=torch.float64))
    assert pts.shape == (3, 3, 3)
    torch.testing.assert_close(pts[1, 1], torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    # pixel (u=2, v=0): x = (2-1)/100*2, y = (0-1)/100*2
    torch.testing.assert_close(pts[0, 2], torch.tensor([0.02, -0.02, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("B", [1, 3])
def test_backproject_matches_reference(B):
    gen = torch.Generator().manual_seed(4)
    depth = 1 + 4 * torch.rand(B, 4, 5, generator=gen, dtype=torch.float64)
    K = _K(f=80.0, cx=2.0, cy=1.5, skew=1.5, fy=90.0).repeat(B, 1, 1)
    wfc = _random_rigid(gen, B)
    torch.testing.assert_close(G.backproject(depth, K, wfc), ref.backproject(depth, K, wfc))


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_backproject_then_project_round_trip(lead):
    gen = torch.Generator().manual_seed(5)
    n = int(torch.tensor(lead).prod()) if lead else 1
    depth = (0.5 + 5 * torch.rand(n, 6, 8, generator=gen, dtype=torch.float64)).reshape(*lead, 6, 8)
    K = _K(f=40.0, cx=3.7, cy=2.2, skew=0.7).expand(*lead, 3, 3)
    wfc = _random_rigid(gen, n).reshape(*lead, 4, 4)
    world = G.backproject(depth, K, wfc)  # [..., 6, 8, 3]
    cam = G.transform_points(G.invert_rigid(wfc), world.flatten(-3, -2))  # [..., 48, 3]
    uv, z = G.project(cam, K)
    torch.testing.assert_close(z, depth.flatten(-2))
    torch.testing.assert_close(uv, G.pixel_grid(6, 8, dtype=torch.float64).reshape(48, 2).expand(*lead, 48, 2))


@pytest.mark.parametrize(("B", "h", "w"), [(1, 4, 5), (3, 2, 7), (2, 6, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backproject_at_matches_the_whole_grid(B, h, w, dtype):
    gen = torch.Generator().manual_seed(B * 100 + h * 10 + w)
    depth = (1 + 4 * torch.rand(B, h, w, generator=gen, dtype=torch.float64)).to(dtype)
    K = _K(f=80.0, cx=2.0, cy=1.5, skew=1.5, fy=90.0).repeat(B, 1, 1)
    wfc = _random_rigid(gen, B)
    cells = torch.rand(B, h, w, generator=gen) < 0.5
    index = cells.nonzero(as_tuple=True)
    out = G.backproject_at(depth, K, wfc, index)
    assert out.dtype == dtype and out.shape == (int(cells.sum()), 3)
    assert torch.equal(out, G.backproject(depth, K, wfc)[cells])  # the same operations, element by element
    torch.testing.assert_close(out.double(), ref.backproject_at(depth.double(), K, wfc, index), **_tol(dtype))
    assert G.backproject_at(depth, K, wfc, torch.zeros_like(cells).nonzero(as_tuple=True)).shape == (0, 3)
    with pytest.raises(ValueError, match=r"index: expected 3 integer \[M\] tensors"):
        G.backproject_at(depth, K, wfc, index[:2])
    with pytest.raises(ValueError, match=r"index: expected 3 integer \[M\] tensors"):
        G.backproject_at(depth, K, wfc, (index[0], index[1], index[2].double()))
    if index[0].numel() > 1 and index[0][0] != index[0][-1]:
        with pytest.raises(ValueError, match="sorted by frame"):
            G.backproject_at(depth, K, wfc, tuple(i.flip(0) for i in index))


@pytest.mark.parametrize(("B", "h", "w"), [(1, 4, 5), (3, 2, 7), (2, 6, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reproject_matches_reference_and_the_long_way(B, h, w, dtype):
    gen = torch.Generator().manual_seed(B * 100 + h * 10 + w + 1)
    depth = (1 + 4 * torch.rand(B, h, w, generator=gen, dtype=torch.float64)).to(dtype)
    K_src = _K(f=8.0, cx=2.0, cy=1.5, skew=0.5, fy=9.0).repeat(B, 1, 1)
    K_dst = _K(f=7.0, cx=3.0, cy=1.0).repeat(B, 1, 1)
    dst_from_src = _random_rigid(gen, B)
    uv, z = G.reproject(depth, K_src, K_dst, dst_from_src)
    assert uv.dtype == z.dtype == dtype and uv.shape == (B, h, w, 2) and z.shape == (B, h, w)
    ref_uv, ref_z = ref.reproject(depth.double(), K_src, K_dst, dst_from_src)
    front = ref_z > 0.1  # behind or at the camera the coordinates are meaningless
    torch.testing.assert_close(z.double(), ref_z, **_tol(dtype))
    torch.testing.assert_close(uv.double()[front], ref_uv[front], **_tol(dtype, scale=1e2))
    # the long way: world points, then into the destination camera
    world = G.backproject(depth.double(), K_src, torch.eye(4, dtype=torch.float64).expand(B, 4, 4))
    long_uv, long_z = G.project(G.transform_points(dst_from_src, world.flatten(1, 2)), K_dst)
    torch.testing.assert_close(z.double().flatten(1), long_z, **_tol(dtype))
    torch.testing.assert_close(uv.double().flatten(1, 2)[front.flatten(1)], long_uv[front.flatten(1)], **_tol(dtype, scale=1e2))


def _tol(dtype: torch.dtype, scale: float = 1.0) -> dict:
    return {"rtol": 1e-5 * scale, "atol": 1e-5 * scale} if dtype == torch.float32 else {"rtol": 1e-9 * scale, "atol": 1e-9 * scale}


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="world_from_cam: expected shape"):
        G.backproject(torch.ones(2, 2), torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError, match="points_cam: expected shape"):
        G.project(torch.ones(4, 2), torch.eye(3))
    with pytest.raises(ValueError, match="points: expected shape"):
        G.transform_points(torch.eye(4), torch.ones(3))
    with pytest.raises(ValueError, match=r"z: expected shape \[1, 4\]"):
        SP.footprint_cells(torch.zeros(1, 4, 2), torch.zeros(1, 3), torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), (2, 2))


def test_footprint_radius_on_axis_gives_design_rule():
    """On the optical axis the half-size is 0.5 * z_src / z_dst cells."""
    f = 13.9
    r = SP.footprint_radius(torch.tensor(3.6), torch.tensor(3.6), f)
    half = SP.footprint_half_size(r, torch.tensor(2.4), torch.tensor(2.4), f)
    assert float(half) == pytest.approx(0.5 * 3.6 / 2.4)


# --- splatting -------------------------------------------------------------------------------------


def test_splat_hand_computed():
    uv = torch.tensor([[[1.0, 1.0], [1.2, 0.9], [3.0, 0.0], [0.0, 0.0]]])
    z = torch.tensor([[2.0, 1.0, 5.0, 1.0]])
    half = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    valid = torch.tensor([[True, True, True, False]])
    winner, depth = SP.splat(uv, z, half, valid, (2, 4))
    # point 1 is nearer than point 0 at cell (1, 1); point 2 covers (0..1, 2..3) (+-1 cell), clipped; point 3 invalid
    assert winner[0].tolist() == [[-1, -1, 2, 2], [-1, 1, 2, 2]]
    assert depth[0, 1, 1] == 1.0 and math.isinf(depth[0, 0, 0])


def test_splat_footprint_cap():
    uv = torch.tensor([[[4.0, 4.0]]])
    winner, _ = SP.splat(uv, torch.ones(1, 1), torch.full((1, 1), 10.0), torch.ones(1, 1, dtype=torch.bool), (9, 9))
    assert int((winner >= 0).sum()) == 25  # half-size capped at 2 cells: 5 x 5


def test_splat_depth_tolerance_prefers_the_point_nearest_the_centre():
    uv = torch.tensor([[[0.0, 0.0], [0.4, 0.0]]])
    z = torch.tensor([[2.02, 2.0]])
    half = torch.full((1, 2), 1.0)
    valid = torch.ones(1, 2, dtype=torch.bool)
    strict, _ = SP.splat(uv, z, half, valid, (1, 1), depth_tolerance=0.0)
    banded, _ = SP.splat(uv, z, half, valid, (1, 1), depth_tolerance=0.05)
    assert strict.item() == 1 and banded.item() == 0


@pytest.mark.parametrize("T,N,size,tol", [(1, 12, (4, 5), 0.0), (2, 30, (5, 6), 0.05), (3, 40, (3, 7), 0.2)])
def test_splat_matches_reference(T, N, size, tol):
    gen = torch.Generator().manual_seed(6 + T)
    h, w = size
    uv = torch.rand(T, N, 2, generator=gen) * torch.tensor([w + 2.0, h + 2.0]) - 1.0
    uv[:, ::5] = torch.round(uv[:, ::5] * 2) / 2  # exact half-cell positions: rounding ties
    z = torch.round(1 + 3 * torch.rand(T, N, generator=gen), decimals=1)  # many exact depth ties
    half = torch.rand(T, N, generator=gen) * 3.0
    valid = torch.rand(T, N, generator=gen) > 0.1
    keys = torch.round(torch.rand(N, 2, generator=gen), decimals=1)
    fast = SP.splat(uv, z, half, valid, size, depth_tolerance=tol, tie_keys=keys)
    slow = ref.splat(uv, z, half, valid, size, depth_tolerance=tol, tie_keys=keys)
    assert torch.equal(fast[0], slow[0])
    assert torch.equal(fast[1], slow[1])


@pytest.mark.parametrize("T,N,size", [(1, 12, (4, 5)), (2, 60, (5, 6)), (3, 200, (3, 7))])
def test_nearest_cell_matches_reference(T, N, size):
    gen = torch.Generator().manual_seed(60 + T)
    h, w = size
    uv = torch.rand(T, N, 2, generator=gen) * torch.tensor([w + 2.0, h + 2.0]) - 1.0
    uv[:, ::3] = torch.round(uv[:, ::3] * 2) / 2  # exact half-cell positions: ties round to even
    z = torch.round(4 * torch.rand(T, N, generator=gen) - 0.5, decimals=1)  # exact depth ties, and z <= 0
    valid = torch.rand(T, N, generator=gen) > 0.1
    fast = SP.nearest_cell(uv, z, valid, size)
    slow = ref.nearest_cell(uv, z, valid, size)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])


def test_nearest_cell_rounds_half_to_even_and_leaves_holes():
    # u = 0.5 -> column 0, 1.5 -> 2, 2.5 -> 2 (nearer one wins), 3.49 -> 3; -0.5 -> 0 (-0 is in); 4.5 -> 4 (w = 5)
    uv = torch.tensor([[[0.5, 0.0], [1.5, 0.0], [2.5, 0.0], [3.49, 0.0], [-0.5, 1.0], [4.5, 1.0]]])
    z = torch.tensor([[1.0, 2.0, 1.5, 1.0, 1.0, 1.0]])
    winner, depth = SP.nearest_cell(uv, z, torch.ones(1, 6, dtype=torch.bool), (2, 5))
    assert winner[0].tolist() == [[0, -1, 2, 3, -1], [4, -1, -1, -1, 5]]
    assert depth[0, 0, 1].item() == float("inf")


def test_splat_winner_does_not_depend_on_point_order():
    gen = torch.Generator().manual_seed(7)
    T, N, h, w = 2, 200, 6, 9
    uv = torch.rand(T, N, 2, generator=gen) * torch.tensor([w, h]) - 0.5
    z = torch.round(1 + torch.rand(T, N, generator=gen), decimals=1)
    half = torch.rand(T, N, generator=gen) * 1.5
    valid = torch.ones(T, N, dtype=torch.bool)
    keys = torch.rand(N, 3, generator=gen)  # distinct intrinsic keys break every tie
    winner, depth = SP.splat(uv, z, half, valid, (h, w), depth_tolerance=0.05, tie_keys=keys)
    perm = torch.randperm(N, generator=gen)
    w2, d2 = SP.splat(uv[:, perm], z[:, perm], half[:, perm], valid[:, perm], (h, w), depth_tolerance=0.05, tie_keys=keys[perm])
    assert torch.equal(torch.where(w2 >= 0, perm[w2.clamp(min=0)], w2), winner)
    assert torch.equal(d2, depth)


def test_zbuffer_winner_lowest_index_breaks_exact_ties():
    cell = torch.tensor([0, 0, 0, 1])
    depth = torch.tensor([1.0, 1.0, 2.0, 3.0])
    point = torch.tensor([5, 2, 0, 7])
    assert SP.zbuffer_winner(cell, depth, point, 3).tolist() == [2, 7, -1]


def test_occlusion_filter_hand_computed_and_reference():
    depth = torch.tensor(
        [
            [[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]],  # a hole in a near surface: centre dropped
            [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]],  # a slanted surface: kept
            [[1.0, 1.0, 9.0], [1.0, 1.0, 9.0], [1.0, 1.0, 9.0]],  # background beside a silhouette: kept
        ]
    )
    mask = torch.ones(3, 3, 3, dtype=torch.bool)
    out = SP.occlusion_filter(depth, mask, 0.5)
    expected = torch.ones(3, 3, 3, dtype=torch.bool)
    expected[0, 1, 1] = False
    assert torch.equal(out, expected)
    mask[0, 1, 0] = False  # an empty neighbour is never nearer...
    mask[0, 0, 0] = mask[0, 0, 2] = mask[0, 2, 0] = mask[0, 2, 2] = mask[0, 0, 1] = False
    assert SP.occlusion_filter(depth, mask, 0.5)[0, 1, 1]  # ...so no line through the centre is nearer on both sides
    gen = torch.Generator().manual_seed(8)
    d = 1 + 3 * torch.rand(2, 5, 6, generator=gen)
    m = torch.rand(2, 5, 6, generator=gen) > 0.2
    assert torch.equal(SP.occlusion_filter(d, m, 0.3), ref.occlusion_filter(d, m, 0.3))


# --- the z-buffer winner alone ----------------------------------------------------------------------


@pytest.mark.parametrize("M, cells, tol, with_dist, with_keys", [
    (1, 1, 0.0, False, False), (40, 6, 0.0, True, False), (200, 17, 0.05, True, True), (500, 50, 0.1, False, True),
])
def test_zbuffer_winner_matches_reference_in_any_candidate_order(M, cells, tol, with_dist, with_keys):
    gen = torch.Generator().manual_seed(M)
    P = max(1, M // 2)
    cell = torch.randint(0, cells, (M,), generator=gen)
    point = torch.randint(0, P, (M,), generator=gen)
    # coarse values make exact ties common, so every rule gets exercised
    depth = torch.randint(1, 5, (M,), generator=gen).float() * 0.5
    dist2 = torch.randint(0, 3, (M,), generator=gen).float() if with_dist else None
    keys = torch.randint(0, 2, (P, 3), generator=gen).float() if with_keys else None
    expected = ref.zbuffer_winner(cell, depth, point, cells, dist2, tol, keys)
    for trial in range(3):
        perm = torch.randperm(M, generator=gen) if trial else torch.arange(M)
        got = SP.zbuffer_winner(cell[perm], depth[perm], point[perm], cells, None if dist2 is None else dist2[perm], tol, keys)
        assert torch.equal(got, expected)
    assert (expected >= 0).sum() == len(set(cell.tolist()))


# --- one formula, two array libraries ----------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5])
def test_numpy_rigid_inverse_matches_torch_invert_rigid(n):
    from mirage_cli.camera.conventions import rigid_inverse

    m = _random_rigid(torch.Generator().manual_seed(n), n)  # [n, 4, 4] float64
    np_inv = rigid_inverse(m.numpy())
    torch.testing.assert_close(torch.from_numpy(np_inv), G.invert_rigid(m), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.from_numpy(np_inv) @ m, torch.eye(4, dtype=m.dtype).expand(n, 4, 4), rtol=0, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 8, 16])
def test_latent_intrinsics_is_the_resize_rule_of_rescale_K(stride):
    """The latent grid is the image resized by 1/stride (docs/CONVENTIONS.md): one formula."""
    from mirage_cli.camera.intrinsics import rescale_K

    K = _K(f=321.0, cx=200.25, cy=120.5, skew=2.0)
    W, H = 64 * stride, 48 * stride
    torch.testing.assert_close(
        G.latent_intrinsics(K, stride), torch.from_numpy(rescale_K(K.numpy(), (W, H), (W // stride, H // stride))), rtol=0, atol=1e-12
    )
