"""The rollout in-process: one chunk per conditioner on the tiny backbone, and its state round trip.

Tiny random Wan2.2 components built from the real diffusers classes (real weights cannot be
downloaded here); the example room at a small size (tests/render_helpers.py).
"""

from __future__ import annotations

import pytest
import torch

from mirage_cli.base.options import MemoryMode
from mirage_cli.conditioning.conditioners import (
    CONDITIONERS,
    CameraTensors,
    ConditionView,
    LatentConditioner,
    NoConditioner,
    RGBConditioner,
    make_conditioner,
)
from mirage_cli.depth.providers import MemoryPropagatedDepth
from mirage_cli.profiling.profiler import Profiler
from mirage_cli.render.inputs import load_start_depth, load_start_image
from mirage_cli.render.rollout import Rollout
from mirage_cli.spec.plan import load_plan


@pytest.fixture(scope="module")
def backbone_and_scene(backbone, small_scene):
    return backbone, small_scene


def make_rollout(setup, mode: str) -> Rollout:
    backbone, scene = setup
    plan = load_plan(scene, overrides={"steps": 2, "memory.mode": mode})
    rollout = Rollout.for_plan(plan, backbone, depth_provider=MemoryPropagatedDepth(), profiler=Profiler("cpu"))
    return rollout


def started(setup, mode: str) -> Rollout:
    rollout = make_rollout(setup, mode)
    rollout.start(load_start_image(rollout.plan), load_start_depth(rollout.plan), None)
    return rollout


def test_every_memory_mode_has_a_conditioner():
    assert set(CONDITIONERS) == set(MemoryMode)


@pytest.mark.parametrize(
    "mode, cls", [("latent", LatentConditioner), ("rgb", RGBConditioner), ("none", NoConditioner)]
)
def test_one_chunk_per_conditioner(backbone_and_scene, mode, cls):
    rollout = started(backbone_and_scene, mode)
    assert type(rollout.conditioner) is cls
    chunk = rollout.plan.chunks[0]
    result = rollout.run_chunk(chunk)
    T, F = chunk.num_latent_frames, chunk.num_frames
    h, w = rollout.plan.height // 16, rollout.plan.width // 16
    assert result.completed and result.denoise_state is None
    assert result.latents.shape == (1, rollout.backbone.z_dim, T, h, w)
    assert result.pixels.shape == (3, F, rollout.plan.height, rollout.plan.width)
    assert float(result.pixels.min()) >= -1.0 and float(result.pixels.max()) <= 1.0
    stats = result.stats
    if mode == "none":
        assert stats["cache_points"] == 0 and stats["points_added"] == 0 and stats["pinned_cells"] == 0
    else:
        # The start image's memory covers part of chunk 0's views and the chunk adds new surface.
        assert stats["memory_coverage"] > 0.1 and stats["pinned_cells"] > 0
        assert stats["points_added"] > 0 and stats["cache_points"] > stats["points_added"]
    assert torch.equal(rollout.last_latent, result.latents[0, :, -1])


@pytest.mark.parametrize("mode", ["latent", "rgb", "none"])
def test_state_round_trip_continues_identically(backbone_and_scene, mode):
    """Chunk 1 after restoring the state saved after chunk 0 equals chunk 1 of the same rollout."""
    first = started(backbone_and_scene, mode)
    first.run_chunk(first.plan.chunks[0])
    state = {group: {k: v.clone() for k, v in tensors.items()} for group, tensors in first.state_tensors().items()}
    expected = {"rollout"} | ({"memory"} if mode != "none" else set()) | ({"rgb_render"} if mode == "rgb" else set())
    assert set(state) == expected
    reference = first.run_chunk(first.plan.chunks[1])

    second = make_rollout(backbone_and_scene, mode)  # no start(): everything comes from the state
    second.load_state_tensors(state)
    resumed = second.run_chunk(second.plan.chunks[1])
    assert torch.equal(resumed.latents, reference.latents)
    assert torch.equal(resumed.pixels, reference.pixels)
    assert resumed.stats == reference.stats


def test_rgb_state_from_before_the_conditioners_still_loads(backbone_and_scene):
    """Checkpoints written before the conditioners kept the RGB baseline's last frame in the rollout group."""
    first = started(backbone_and_scene, "rgb")
    first.run_chunk(first.plan.chunks[0])
    state = first.state_tensors()
    old = {"rollout": {**state["rollout"], **state.pop("rgb_render")}, "memory": state["memory"]}
    second = make_rollout(backbone_and_scene, "rgb")
    second.load_state_tensors(old)
    assert torch.equal(second.conditioner.last_frame, first.conditioner.last_frame)


def test_stopping_mid_chunk_returns_a_resumable_state(backbone_and_scene):
    rollout = started(backbone_and_scene, "latent")
    result = rollout.run_chunk(rollout.plan.chunks[0], on_step=lambda i, state: True)
    assert not result.completed and result.latents is None and result.pixels is None
    assert result.denoise_state.step == 1


def test_condition_view_stats_count_whole_tokens_in_clean_mode():
    view = ConditionView.empty(3, 4, 4, 4, torch.device("cpu"))
    view.mask[1, :2, :2] = True  # one whole token
    view.mask[2, 0, 0] = True  # one cell of another token
    view.covered[1:] = view.mask[1:]
    clean = view.stats("clean")
    assert clean["pinned_cells"] == 5 and clean["pinned_tokens"] == 1 and clean["cells_covered"] == 5
    assert view.stats("noised")["pinned_tokens"] == 5 // 4
    assert ConditionView.empty(1, 4, 4, 4, torch.device("cpu")).stats("clean")["memory_coverage"] == 0.0


def test_rgb_view_memory_depth_is_the_render_at_each_latent_frames_camera(backbone_and_scene):
    """The RGB conditioner's pixel-level depth of latent frame k is its render at pixel frame 4k."""
    rollout = started(backbone_and_scene, "rgb")
    chunk = rollout.plan.chunks[0]
    view = rollout.conditioner.condition(chunk)
    cams = chunk.latent_camera_frames()
    mem = rollout.conditioner.memory
    K, wfc = rollout.cameras.K[cams[2]], rollout.cameras.world_from_cam[cams[2]]
    size = (rollout.plan.height, rollout.plan.width)
    direct = mem.query(K, wfc, size, occlusion_threshold=rollout.conditioner.occlusion_threshold, mark_seen=False)
    assert torch.equal(view.memory_depth[2], direct.depth[0].float())
    assert torch.equal(view.memory_depth_valid[2], direct.mask[0] & (direct.depth[0] > 0))
    assert not view.memory_depth_valid[0].any()


def test_make_conditioner_rejects_an_unknown_mode(backbone, small_scene):
    plan = load_plan(small_scene)
    cameras = CameraTensors.from_trajectory(plan.trajectory, backbone.device)
    with pytest.raises(ValueError):
        make_conditioner("voxels", backbone=backbone, cameras=cameras, settings=plan.memory, profiler=Profiler("cpu"))
