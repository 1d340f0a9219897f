"""Spatia's recipe (``conditioning.method: spatia``): its pieces against slow, obviously correct twins,
its plan, and tiny renders end to end. The VACE and LoRA files are written with the official names and
random values (no trained weights exist here); everything else is the real pipeline. Spatia's own code
is run beside these pieces by ``benchmarks/peer_parity.py --spatia-repo`` (stage f)."""

from __future__ import annotations

import itertools
import json
import signal

import numpy as np
import pytest
import torch
import yaml
from render_helpers import SMALL, Child, cli, file_hash, final_checkpoint_tensors, same_tensors, step_of, write_small_scene

from mirage_cli.conditioning.spatia import (
    control_videos,
    frame_stride,
    from_uint8,
    frontmost_visible,
    history_length,
    match_references,
    reference_candidates,
    to_uint8,
    window_frames,
)
from mirage_cli.spec.plan import load_plan

# --- the pieces ------------------------------------------------------------------------------------


def frontmost_twin(xyz, cam_from_world, K, size):
    """One point at a time, in float32 like Spatia: a dict per camera holds each pixel's nearest depth."""
    H, W = size
    out = torch.zeros(cam_from_world.shape[0], xyz.shape[0], dtype=torch.bool)
    for t in range(cam_from_world.shape[0]):
        nearest, where = {}, {}
        for n in range(xyz.shape[0]):
            p = cam_from_world[t].float() @ torch.cat([xyz[n].float(), torch.ones(1)])
            x, y, z = p[0], p[1], p[2]
            if not z > 0:
                continue
            cx = torch.tensor(float(K[t, 0, 2]) + 0.5, dtype=torch.float32)
            cy = torch.tensor(float(K[t, 1, 2]) + 0.5, dtype=torch.float32)
            u = int(K[t, 0, 0].float() * (x / z) + cx)  # int() truncates toward zero, as long()
            v = int(K[t, 1, 1].float() * (y / z) + cy)
            if 0 <= u < W and 0 <= v < H:
                where[n] = (v, u, float(z))
                nearest[(v, u)] = min(nearest.get((v, u), float("inf")), float(z))
        for n, (v, u, z) in where.items():
            out[t, n] = bool(z <= np.float32(nearest[(v, u)]) + np.float32(1e-6))
    return out


def random_cameras(gen, count):
    cam_from_world = torch.eye(4).repeat(count, 1, 1)
    for i in range(count):
        angle = float(torch.rand(1, generator=gen)) - 0.5
        cam_from_world[i, :3, :3] = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
        cam_from_world[i, :3, 3] = torch.rand(3, generator=gen) * 0.4 - 0.2
    K = torch.tensor([[20.0, 0, 15.5], [0, 20.0, 9.5], [0, 0, 1]]).repeat(count, 1, 1)
    return cam_from_world, K


def test_frontmost_visibility_equals_its_twin_on_random_points():
    gen = torch.Generator().manual_seed(0)
    xyz = torch.rand(300, 3, generator=gen) * torch.tensor([3.0, 2.0, 3.0]) + torch.tensor([-1.5, -1.0, -0.5])
    xyz[::7] = xyz[1::7][: len(xyz[::7])] * 1.0  # some points stacked on the same pixel at the same depth
    cam_from_world, K = random_cameras(gen, 4)
    fast = frontmost_visible(xyz, cam_from_world, K, (20, 32))
    assert torch.equal(fast, frontmost_twin(xyz, cam_from_world, K, (20, 32)))
    assert 0 < int(fast.sum()) < fast.numel()


def test_reference_matching_is_an_optimal_one_to_one_assignment():
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        m, k = int(torch.randint(1, 6, (1,), generator=gen)), int(torch.randint(1, 5, (1,), generator=gen))
        candidates = torch.rand(m, 40, generator=gen) < 0.4
        targets = torch.rand(k, 40, generator=gen) < 0.4
        chosen = match_references(candidates, targets, max_refs=99)
        assert len(chosen) == min(m, k) and len(set(chosen)) == len(chosen)
        shared = (targets.double() @ candidates.double().T).numpy()
        best = max(sum(shared[r, c] for r, c in zip(rows, cols, strict=True))
                   for rows in itertools.permutations(range(k), min(m, k)) for cols in itertools.permutations(range(m), min(m, k)))
        assigned = [r for r in range(k)][: len(chosen)] if k <= m else None
        if assigned is not None:  # every target matched, in target order
            assert sum(shared[r, c] for r, c in zip(assigned, chosen, strict=True)) == best
    assert match_references(torch.zeros(0, 5, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)) == []
    many = torch.eye(10, dtype=torch.bool)
    assert match_references(many, many) == list(range(7))  # at most 7, in target order


def test_shared_counts_are_rounded_as_bfloat16_before_matching():
    """257 and 256 shared points are one bfloat16 value: the tie goes to scipy's order, as in Spatia."""
    candidates = torch.zeros(2, 600, dtype=torch.bool)
    candidates[0, :256] = True
    candidates[1, 300:557] = True
    targets = torch.zeros(1, 600, dtype=torch.bool)
    targets[0, :256] = True
    targets[0, 300:557] = True
    assert match_references(candidates, targets) == [0]  # exact counts would pick 1 (257 > 256)


def test_control_and_score_videos():
    rgb = torch.full((2, 3, 4, 4), 0.5)
    coverage = torch.zeros(2, 4, 4)
    coverage[:, :2] = 1.0
    control, score = control_videos(rgb, coverage)
    assert control.shape == score.shape == (1, 3, 2, 4, 4)
    assert torch.all(control[0, :, :, 2:] == -1.0)  # black where nothing is rendered
    assert torch.allclose(control[0, :, :, :2], torch.tensor(127 * 2 / 255 - 1), atol=1e-6)  # 0.5 * 255 truncated to 127
    assert torch.all(score[0, :, :, 2:] == 1.0) and torch.all(score[0, :, :, :2] == 0.0)  # 1 = hole


def test_eight_bit_frames_window_and_strides():
    pixels = torch.tensor([-1.0, -0.999, 0.0, 1.0, 2.0])
    assert to_uint8(pixels).tolist() == [0, 0, 127, 255, 255]
    assert torch.allclose(from_uint8(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))
    assert [history_length(s) for s in (0, 4, 8, 120)] == [1, 5, 9, 9]
    assert window_frames(10, 5, 12) == [10, 11, 12, 12, 12]
    assert frame_stride(24, 6.0) == 4 and frame_stride(24, 2.0) == 12 and frame_stride(8, 6.0) == 1
    assert reference_candidates(13, 4) == [0, 4, 8, 12] and reference_candidates(0, 4) == []


# --- the plan ----------------------------------------------------------------------------------------


def spatia_scene(folder, weights, **changes):
    """The small scene at 25 frames in chunks of 9 (three chunks: the third has references), rgb memory."""
    base = yaml.safe_load(write_small_scene(folder / "base").read_text())
    camera = base["camera"]
    camera["keyframes"].append({"frame": 24, "position": [-0.3, 0.0, 0.3], "yaw": -20})
    conditioning = {"method": "spatia", "vace": str(weights / "vace.safetensors"), "lora": str(weights / "lora.safetensors")}
    fields = {"conditioning": conditioning, "memory": {"mode": "rgb"}, "frames": 25, "chunk_frames": 9, "camera": camera, "fps": 24}
    return write_small_scene(folder, **{**fields, **changes})


def test_spatia_defaults_are_its_inference_settings(tmp_path, weights):
    keyframes = [{"frame": 0, "position": [0, 0, 0], "yaw": 0}, {"frame": 240, "position": [1, 0, 1], "yaw": 40}]
    scene = spatia_scene(tmp_path, weights, frames=241, chunk_frames=None, camera={"keyframes": keyframes})
    plan = load_plan(scene)
    # 121 frames, then 81 whose first 9 are the last generated: 72 new frames a chunk (73 with the shared one)
    assert [(c.start, c.end) for c in plan.chunks] == [(0, 120), (120, 192), (192, 240)]
    assert (plan.steps, plan.guidance, plan.shift) == (40, 3.5, 5.0)
    assert plan.negative_prompt.startswith("画面切换")
    shown = cli("validate", scene, "--preset", "tiny")  # the tiny weights fit the tiny transformer (validate checks them)
    assert shown.exit_code == 0, shown.stderr
    assert "defaults    method spatia (Spatia's inference" in shown.stdout and "chunk_frames 73 (the first 121)" in shown.stdout
    summary = json.loads(cli("validate", scene, "--json", "--preset", "tiny").stdout)
    assert summary["first_chunk_frames"] == 121 and summary["chunk_frames"] == 73


def test_spatia_needs_the_rgb_memory_and_its_weights(tmp_path, weights):
    latent = cli("validate", spatia_scene(tmp_path / "a", weights, memory={"mode": "latent"}))
    assert latent.exit_code == 2 and "conditioning.method: spatia renders an RGB point memory" in latent.stderr
    assert len(latent.stderr.strip().splitlines()) == 1
    missing = cli("validate", spatia_scene(tmp_path / "b", weights, conditioning={"method": "spatia"}))
    assert missing.exit_code == 2 and "method spatia needs the VACE weights" in missing.stderr


# --- renders -----------------------------------------------------------------------------------------


def test_a_spatia_render_follows_spatias_schedule(tmp_path, weights, monkeypatch):
    """Chunk 0: the start latent held, no references, the DiT without its LoRA; chunk 1: 3 history latent
    frames held, no earlier frame to refer to; chunk 2: references; the LoRA fused once, before chunk 1."""
    import mirage_cli.conditioning.recipes as recipes

    seen, fused = [], []
    real_denoise, real_lora = recipes.denoise_vace_chunk, recipes.apply_lora

    def recording(backbone, model, *, noise, cond_frame0, references, control, **kwargs):
        seen.append((noise.shape[2], tuple(cond_frame0.shape), None if references is None else references.shape[2], control.shape[2],
                     len(fused)))
        return real_denoise(backbone, model, noise=noise, cond_frame0=cond_frame0, references=references, control=control, **kwargs)

    def lora(*args, **kwargs):
        fused.append(len(seen))
        return real_lora(*args, **kwargs)

    monkeypatch.setattr(recipes, "denoise_vace_chunk", recording)
    monkeypatch.setattr(recipes, "apply_lora", lora)
    scene = spatia_scene(tmp_path / "scene", weights)
    result = cli("render", scene, "--out", tmp_path / "run", *SMALL, "--memory", "rgb")
    assert result.exit_code == 0, result.stderr
    C, h, w = 48, 8, 14
    assert seen[0] == (3, (C, h, w), None, 3, 0)  # 9 frames: 3 latent frames, frame 0 held, LoRA off
    assert seen[1][:4] == (5, (C, 3, h, w), None, 5) and seen[1][4] == 1  # history 0-8 (3 latents) + 2 new; LoRA on
    assert seen[2][0] == 5 and 1 <= seen[2][2] <= 7  # window 8-24: candidates 0 and 4 before it
    assert fused == [1]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["config"]["conditioning"]["method"] == "spatia" and report["config"]["conditioning"]["sigmas"] == "wan"


def test_a_short_last_chunk_is_padded_to_the_trained_window(tmp_path, weights, monkeypatch):
    import mirage_cli.conditioning.recipes as recipes

    lengths = []
    real = recipes.denoise_vace_chunk

    def recording(*args, noise, **kwargs):
        lengths.append(noise.shape[2])
        return real(*args, noise=noise, **kwargs)

    monkeypatch.setattr(recipes, "denoise_vace_chunk", recording)
    scene = spatia_scene(tmp_path / "scene", weights, frames=21)  # chunks 0-8, 8-16, 16-20 (5 frames)
    assert cli("render", scene, "--out", tmp_path / "run", *SMALL, "--memory", "rgb").exit_code == 0
    assert lengths == [3, 5, 5]  # the last window padded with its last camera to 3 history + 2 new latent frames
    import av

    with av.open(str(tmp_path / "run" / "video.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 21


@pytest.mark.parametrize("chunk", [1, 2])
def test_a_stopped_spatia_render_resumes_to_the_same_bytes(tmp_path, weights, chunk):
    """Stopped mid-chunk 1 (the LoRA fused again on resume) or mid-chunk 2 (references), resumed: the
    same video and the same final checkpoint as a render never stopped."""
    scene = spatia_scene(tmp_path / "scene", weights)
    whole = tmp_path / "whole"
    assert cli("render", scene, "--out", whole, "--memory", "rgb", *SMALL).exit_code == 0
    run = tmp_path / "stopped"
    child = Child(scene, run, "denoise_step=0.5", "rgb")
    child.wait_for(step_of(chunk))
    child.proc.send_signal(signal.SIGTERM)
    assert child.finish() == 75
    assert cli("render", scene, "--out", run, "--memory", "rgb", *SMALL).exit_code == 0
    assert file_hash(run / "video.mp4") == file_hash(whole / "video.mp4")
    assert same_tensors(final_checkpoint_tensors(run), final_checkpoint_tensors(whole))


def test_spatias_late_lora_refuses_storage_that_cannot_take_it(weights):
    """The LoRA is fused after the first chunk: fp8 storage and split offloading are refused up front."""
    from mirage_cli.backbone.loading import load_backbone
    from mirage_cli.base.errors import InputError
    from mirage_cli.base.options import BackboneOptions
    from mirage_cli.spec.conditioning import ConditioningSettings

    trained = ConditioningSettings("spatia", weights / "vace.safetensors", weights / "lora.safetensors")
    with pytest.raises(InputError, match="leave --fp8 off"):
        load_backbone("unused", BackboneOptions(preset="tiny", fp8=True), trained=trained)
    # --offload group / sequential are refused the same way, but only exist on CUDA (refused earlier here)
