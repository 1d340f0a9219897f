"""benchmarks/peer_parity.py without the peers' repositories: our side of every stage runs on tiny
real components (the official code is what it is compared with when ``--mirage-repo`` is given; it
is not here, so those comparisons are skipped and named), and the conventions the harness found are
asserted as facts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import peer_parity as P  # noqa: E402
from test_trained_weights import write_vace  # noqa: E402

from mirage_cli.backbone.configs import wan22_scheduler_config  # noqa: E402
from mirage_cli.backbone.vace import attach_vace  # noqa: E402
from mirage_cli.denoise.loop import DIFFUSERS_SIGMAS, WAN_SIGMAS, set_sigmas  # noqa: E402

OFFICIAL_20_STEP_TIMESTEPS = [999, 989, 978, 965, 952, 937, 920, 902, 882, 859, 833, 803, 768, 728, 681, 624, 555, 468, 356, 208]
"""What the official Mirage inference's FlowUniPCMultistepScheduler (shift 5, 20 steps) runs: the
original Wan2.2 grid linspace(1 - 1/1000, 0) shifted, truncated to integers (printed by the harness)."""


def test_the_vace_recipe_runs_the_official_timesteps_and_diffusers_grid_stays_for_pin():
    from diffusers import UniPCMultistepScheduler

    wan = UniPCMultistepScheduler.from_config(wan22_scheduler_config())
    set_sigmas(wan, 20, "cpu", WAN_SIGMAS)
    assert wan.timesteps.tolist() == OFFICIAL_20_STEP_TIMESTEPS
    ours = UniPCMultistepScheduler.from_config(wan22_scheduler_config())
    set_sigmas(ours, 20, "cpu", DIFFUSERS_SIGMAS)
    assert ours.timesteps.tolist() != OFFICIAL_20_STEP_TIMESTEPS  # diffusers' grid starts at sigma 1: 921 at step 7


def test_our_side_of_every_stage_runs_and_holds_its_own_invariants(tmp_path, capsys):
    x = P.chunk_inputs()
    transformer = P.our_transformer(tmp_path)
    # a, b: the forward over [references | target | preceding] with the context of target and preceding frames
    write_vace(tmp_path / "vace.safetensors", blocks=2, zero_after=False)
    model = attach_vace(transformer, tmp_path / "vace.safetensors")
    control = P.ours_context(x)
    assert control.shape == (1, 96, P.TARGET + P.PRECEDING, P.H_LAT, P.W_LAT)
    velocity = P.ours_forward(model, x, control)
    assert velocity.shape == (1, P.C, P.REFS + P.TARGET + P.PRECEDING, P.H_LAT, P.W_LAT) and torch.isfinite(velocity).all()
    # c: the references are history frames, best first, at most 4
    xyz, features = P.scene_points()
    poses, K = P.cameras()
    chosen = P.ours_selection(xyz, poses, K, [0, 1, 2, 3, 4, 5], [6, 7, 8])
    assert 0 < len(chosen) <= 4 and set(chosen) <= set(range(6))
    # d: nearest-cell projection leaves holes and fills each cell with one point's features
    latents, mask = P.ours_projection(xyz[:600], features[:600], poses[4], K[4] * np.array([[1 / 16], [1 / 16], [1]], np.float32))
    assert 0 < int(mask.sum()) < mask.numel() and latents.shape == (P.C, *P.PROJECTION_GRID)
    assert (latents[:, ~mask] == 0).all()
    # e: one chunk, frame 0 held on the conditioning latent
    noise = torch.randn(1, P.C, P.TARGET, P.H_LAT, P.W_LAT, generator=torch.Generator().manual_seed(0))
    out = P.ours_denoise(model, x, noise, steps=3)
    assert torch.equal(out[0, :, 0], x["target"][0, :, 0])

    # f: Spatia's control and score videos and its sequence, on the tiny VAE
    from mirage_cli.backbone.random_components import tiny_backbone
    from mirage_cli.conditioning.spatia import control_videos, encode_frames, history_target, reference_latents

    backbone = tiny_backbone(torch.device("cpu"), torch.float32)
    H, W = P.H_LAT * P.STRIDE, P.W_LAT * P.STRIDE
    rgb, coverage = torch.rand(17, 3, H, W), (torch.rand(17, H, W) < 0.5).float()
    control, score = control_videos(rgb, coverage)
    assert backbone.encode_video(control).shape == backbone.encode_video(score).shape == (1, P.C, 5, P.H_LAT, P.W_LAT)
    history = encode_frames(backbone, torch.randint(0, 256, (3, 9, H, W), dtype=torch.uint8))
    target = history_target(history, torch.randn(1, P.C, 3, P.H_LAT, P.W_LAT))
    assert target.shape == (1, P.C, 5, P.H_LAT, P.W_LAT) and torch.equal(target[0, :, :3], history)
    refs = reference_latents(backbone, [torch.zeros(3, H, W, dtype=torch.uint8), torch.full((3, H, W), 255, dtype=torch.uint8)])
    assert refs.shape == (1, P.C, 2, P.H_LAT, P.W_LAT)

    # without the repositories the harness names what it skipped
    assert P.main([]) == 0
    shown = capsys.readouterr().out
    assert "| a-e (Mirage) | skipped | no --mirage-repo given |" in shown and "| f (Spatia) | skipped | no --spatia-repo given |" in shown
