"""Depth providers: a tiny Depth Anything V2 saved locally and loaded back through the real path."""

from __future__ import annotations

import pytest
import torch

from mirage_cli.base.errors import InputError
from mirage_cli.depth.providers import MemoryPropagatedDepth, TransformersDepth, fill_depth_holes, make_depth_provider


def test_tiny_depth_model_loads_and_estimates(tiny_depth_dir):
    provider = make_depth_provider(str(tiny_depth_dir), torch.device("cpu"))
    assert isinstance(provider, TransformersDepth)
    assert provider.kind == "metric" and provider.input_side == 56
    out = provider.estimate(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 64, 96) and torch.isfinite(out).all()


def test_micro_batches_give_the_one_batch_result(tiny_depth_dir, monkeypatch):
    import mirage_cli.depth.providers as D

    provider = make_depth_provider(str(tiny_depth_dir), torch.device("cpu"))
    frames = torch.rand(7, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(D, "DEPTH_FRAMES_PER_BATCH", 100)
    whole = provider.estimate(frames)
    monkeypatch.setattr(D, "DEPTH_FRAMES_PER_BATCH", 3)  # 3 + 3 + 1
    torch.testing.assert_close(provider.estimate(frames), whole, rtol=1e-5, atol=1e-6)


def test_depth_model_dir_without_config(tmp_path):
    with pytest.raises(InputError, match="config.json is missing"):
        TransformersDepth(str(tmp_path), torch.device("cpu"))


def test_depth_model_not_in_cache_is_input_error():
    # offline: conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported (it reads it once)
    with pytest.raises(InputError, match="cannot load depth model"):
        TransformersDepth("nobody/not-a-cached-model", torch.device("cpu"))


def test_estimate_checks_shape(tiny_depth_dir):
    provider = TransformersDepth(str(tiny_depth_dir), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"frames: expected \[N, 3, H, W\]"):
        provider.estimate(torch.rand(3, 64, 96))


def test_fill_depth_holes_keeps_valid_and_fills_from_neighbours():
    depth = torch.tensor([[[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    valid = depth > 0
    out = fill_depth_holes(depth, valid)
    assert torch.equal(out[valid], depth[valid])
    assert (out > 0).all()
    # The centre hole's valid neighbours are 1, 2, 1, 1, 1, 1 -> mean 7/6.
    assert out[0, 1, 1].item() == pytest.approx(7 / 6)


def test_fill_depth_holes_all_invalid_uses_fallback():
    out = fill_depth_holes(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    assert torch.equal(out, torch.ones(1, 2, 2))


def test_memory_propagated_depth_upsamples():
    rendered = torch.rand(2, 4, 6) + 1
    out = MemoryPropagatedDepth().from_memory(rendered, rendered > 0, (64, 96))
    assert out.shape == (2, 64, 96)
    assert torch.equal(out[:, ::16, ::16], rendered)
