"""LatentSpatialMemory state dicts, safetensors files and PLY export."""

import os

import numpy as np
import pytest
import torch

from mirage_cli.memory import LatentSpatialMemory
from mirage_cli.memory.ply import pca_colours, read_point_cloud
from mirage_cli.testing import synthetic_room as S

H, W = S.HEIGHT, S.WIDTH
K = torch.tensor(S.intrinsics(H, W))


@pytest.fixture(scope="module")
def memory():
    cam = S.world_from_cam()
    rgb, depth = S.render(K, cam, H, W)
    mem = LatentSpatialMemory(capacity=5000, voxel_size=None)
    mem.insert(S.linear_encoder(rgb), depth, K, torch.tensor(cam), frame_index=7)
    mem.query(K, torch.tensor(S.world_from_cam((0, 0, 0), 10.0)), (H, W))
    return mem


def test_save_load_round_trip_bit_for_bit(memory, tmp_path):
    path = tmp_path / "mem.safetensors"
    memory.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["mem.safetensors"]  # no temp file left behind
    back = LatentSpatialMemory.load(path)
    assert back.capacity == 5000 and back.voxel_size is None and back.stride == 16 and back.dtype == torch.float16
    for k, v in memory.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0, equal_nan=True, msg=k)
    target = torch.tensor(S.world_from_cam((0.2, 0, 0.3), -5.0))
    a = memory.query(K, target, (H, W), mark_seen=False)
    b = back.query(K, target, (H, W), mark_seen=False)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.mask, b.mask) and torch.equal(a.confidence, b.confidence)


def test_file_is_safetensors_not_pickle(memory, tmp_path):
    path = tmp_path / "mem.safetensors"
    memory.save(path)
    head = path.read_bytes()[:16]
    assert not head.startswith(b"\x80")  # pickle protocol marker
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == "mirage.latent_memory.v1"
        assert f.get_slice("xyz").get_dtype() == "F32"


def test_user_voxel_size_survives(tmp_path):
    mem = LatentSpatialMemory(voxel_size=0.05, dtype=torch.bfloat16, channels=4, stride=8)
    mem.save(tmp_path / "m.safetensors")
    back = LatentSpatialMemory.load(tmp_path / "m.safetensors")
    assert back.voxel_size == 0.05 and back.dtype == torch.bfloat16 and back.channels == 4 and back.stride == 8
    assert back.num_points == 0


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.pop("radius"), r"missing keys \['radius'\]"),
        (lambda d: d.update(extra=torch.zeros(1)), r"unexpected keys \['extra'\]"),
        (lambda d: d.update(xyz=d["xyz"].double()), r"xyz: expected dtype torch.float32, got torch.float64"),
        (lambda d: d.update(latents=d["latents"].to(torch.int16)), r"latents: expected dtype"),
        (lambda d: d.update(xyz=d["xyz"][:, :2]), r"xyz: expected shape \['N', 3\]"),
        (lambda d: d.update(radius=d["radius"][:-1]), r"radius: expected N=\d+"),
        (lambda d: d.update(clock=torch.zeros(2, dtype=torch.int64)), r"clock: expected shape \[\]"),
    ],
)
def test_from_state_dict_rejects_bad_state(memory, mutate, message):
    state = dict(memory.state_dict())
    mutate(state)
    with pytest.raises(ValueError, match=message):
        LatentSpatialMemory.from_state_dict(state)


def test_load_errors_name_the_file(memory, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        LatentSpatialMemory.load(bad)
    with pytest.raises(FileNotFoundError):
        LatentSpatialMemory.load(tmp_path / "missing.safetensors")
    # a valid file holding a wrong array
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in memory.state_dict().items()}
    state["confidence"] = state["confidence"].float()
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong), metadata={"format": "mirage.latent_memory.v1"})
    with pytest.raises(ValueError, match=r"wrong.safetensors: invalid LatentSpatialMemory state: confidence: expected dtype torch.float16"):
        LatentSpatialMemory.load(wrong)


def test_export_ply(memory, tmp_path):
    path = tmp_path / "cache.ply"
    n = memory.export_ply(path)
    assert n == memory.num_points
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    xyz, colour = read_point_cloud(path)
    np.testing.assert_allclose(xyz, memory.cache.xyz.numpy())
    assert colour.dtype == np.uint8 and colour.shape == (n, 3)
    assert colour.std(axis=0).min() > 10  # the principal components spread the colours
    assert sorted(os.listdir(tmp_path)) == ["cache.ply"]


def test_pca_colours_follow_the_main_direction():
    gen = torch.Generator().manual_seed(0)
    t = torch.linspace(-1, 1, 200)
    feats = t[:, None] * torch.randn(1, 48, generator=gen) + 0.01 * torch.randn(200, 48, generator=gen)
    c = pca_colours(feats)
    red = c[:, 0].float()
    assert abs(float(torch.corrcoef(torch.stack([red, t]))[0, 1])) > 0.99
    assert torch.equal(pca_colours(feats), c)  # deterministic
    assert pca_colours(torch.zeros(1, 48)).tolist() == [[128, 128, 128]]
