"""The Mirage trained-conditioning recipe's pieces (mirage_cli.conditioning.vace) on tiny real models."""

from __future__ import annotations

import pytest
import torch
from test_trained_weights import write_vace

from mirage_cli.backbone import load_backbone
from mirage_cli.backbone.vace import attach_vace
from mirage_cli.base.options import BackboneOptions
from mirage_cli.conditioning.vace import (
    ScoreLatents,
    denoise_vace_chunk,
    select_references,
    sequence_timestep,
    vace_context,
    visible_voxels,
    voxel_iou,
)


def test_sequence_timestep_layout():
    ts = sequence_timestep(torch.tensor(700.0), refs=2, target=3, preceding=1, tokens_per_frame=4)
    per_frame = ts.view(6, 4)
    assert torch.equal(per_frame[:, 0], torch.tensor([0.0, 0.0, 0.0, 700.0, 700.0, 0.0]))
    assert (per_frame == per_frame[:, :1]).all() and ts.shape == (1, 24)


def test_voxel_iou_and_reference_choice():
    grid = torch.stack(torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij"), -1).reshape(-1, 2)
    keys = grid[:, 0] * 100 + grid[:, 1]  # 100 distinct keys
    a, half, far = keys[:50], keys[25:75], keys[90:]
    assert voxel_iou(a, a) == 1.0 and voxel_iou(a, far) == 0.0
    assert voxel_iou(a, half) == pytest.approx(25 / 75)
    history = [(0, far), (1, half), (2, a), (3, keys[48:52]), (4, a.clone())]
    assert select_references(a, history, max_refs=2) == [2, 4]  # ties: the earlier frame first
    assert select_references(a, history, max_refs=4) == [2, 4, 1]  # keys[48:52]: IoU 2/52 < 0.04


def test_visible_voxels_take_what_projects_inside():
    K = torch.tensor([[10.0, 0, 7.5], [0, 10.0, 3.5], [0, 0, 1]])  # a 16 x 8 grid
    pts = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [5.0, 0.0, 1.0], [0.05, 0.05, 2.0]])  # in, behind, outside, in
    keys = visible_voxels(pts, K, torch.eye(4), (8, 16), voxel=0.1)
    assert keys.numel() == 2 and torch.equal(keys, torch.unique(keys))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    backbone = load_backbone(options=BackboneOptions(preset="tiny", device="cpu"))
    path = tmp_path_factory.mktemp("vace") / "vace.safetensors"
    write_vace(path, blocks=1, zero_after=False)
    return backbone, attach_vace(backbone.transformer, path)


def _inputs(backbone, refs=1, pre=2, T=3, h=8, w=8):
    gen = torch.Generator().manual_seed(5)
    C = backbone.z_dim
    scene = torch.randn(C, T + pre, h, w, generator=gen)
    score = ScoreLatents(backbone).get(T + pre, h, w)
    return {
        "noise": torch.randn(1, C, T, h, w, generator=gen),
        "cond_frame0": torch.randn(C, h, w, generator=gen),
        "references": torch.randn(1, C, refs, h, w, generator=gen) if refs else None,
        "preceding": torch.randn(1, C, pre, h, w, generator=gen) if pre else None,
        "control": vace_context(scene, score),
        "prompt_embeds": torch.randn(1, 16, backbone.text_dim, generator=gen),
        "negative_prompt_embeds": torch.randn(1, 16, backbone.text_dim, generator=gen),
        "guidance": 5.0, "steps": 4, "shift": 5.0,
    }


@pytest.mark.parametrize("refs, pre", [(0, 0), (1, 2), (2, 0)], ids=["plain", "refs-and-preceding", "refs-only"])
def test_a_stopped_chunk_continues_exactly(tiny, refs, pre):
    backbone, model = tiny
    inputs = _inputs(backbone, refs, pre)
    whole = denoise_vace_chunk(backbone, model, **inputs, generator=torch.Generator().manual_seed(0))
    assert whole.completed and torch.equal(whole.latents[0, :, 0], inputs["cond_frame0"])  # frame 0 re-clamped
    stopped = denoise_vace_chunk(backbone, model, **inputs, generator=torch.Generator().manual_seed(0),
                                 on_step=lambda i, state: i == 1)
    assert not stopped.completed and stopped.state.step == 2
    state = type(stopped.state).from_tensors(stopped.state.to_tensors())  # through the checkpoint format
    resumed = denoise_vace_chunk(backbone, model, **inputs, generator=torch.Generator().manual_seed(0), resume_state=state)
    assert torch.equal(resumed.latents, whole.latents)


def test_the_context_changes_the_result_and_the_score_latent_is_cached(tiny):
    backbone, model = tiny
    inputs = _inputs(backbone)
    base = denoise_vace_chunk(backbone, model, **inputs, generator=torch.Generator().manual_seed(0)).latents
    other = dict(inputs, control=inputs["control"] * 0.5)
    assert not torch.equal(denoise_vace_chunk(backbone, model, **other, generator=torch.Generator().manual_seed(0)).latents, base)
    scores = ScoreLatents(backbone)
    assert scores.get(3, 8, 8) is scores.get(3, 8, 8)
    with pytest.raises(ValueError, match="control"):
        denoise_vace_chunk(backbone, model, **dict(inputs, control=inputs["control"][:, :, :2]), generator=torch.Generator())
