"""The lean Wan transformer forward (mirage_cli.backbone.lean_forward) against diffusers' own forward:
the same output bit for bit on the tiny real transformer, in float32 and bfloat16, over several batch
shapes, token counts and timestep patterns; and a fraction of its activation memory."""

from __future__ import annotations

import copy

import pytest
import torch

from mirage_cli.backbone.lean_forward import TokenModulation, distinct_rows, use_lean_forward
from mirage_cli.backbone.random_components import build_tiny_components, cast_like_from_pretrained, keep_fp32_modules


def _pair(dtype: torch.dtype):
    """(diffusers' tiny transformer, a lean deep copy), cast as loading casts them."""
    plain = build_tiny_components().transformer
    cast_like_from_pretrained(plain, dtype, keep_fp32_modules(plain, dtype))
    return plain, use_lean_forward(copy.deepcopy(plain))


def _inputs(model, batch: int, frames: int, height: int, width: int, dtype: torch.dtype, seed: int, pattern: str):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.config.in_channels, frames, height, width, generator=g).to(dtype)
    tokens = frames * (height // 2) * (width // 2)
    if pattern == "pinned":  # what a chunk sends: 0 for the first frame and pinned cells, t elsewhere
        timestep = torch.where(torch.rand(batch, tokens, generator=g) < 0.3, 0.0, 733.25)
        timestep[:, : tokens // frames] = 0.0
    elif pattern == "one value":
        timestep = torch.full((batch, tokens), 500.0)
    else:  # every token its own value
        timestep = torch.rand(batch, tokens, generator=g) * 1000
    text = torch.randn(batch, 7, model.config.text_dim, generator=g).to(dtype)
    return {"hidden_states": x, "timestep": timestep, "encoder_hidden_states": text, "return_dict": False}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("batch", "frames", "height", "width", "pattern"), [
    (1, 3, 8, 12, "pinned"), (2, 2, 6, 10, "pinned"), (1, 1, 4, 4, "one value"), (2, 3, 4, 8, "every token"),
])
def test_lean_forward_equals_diffusers(dtype, batch, frames, height, width, pattern):
    plain, lean = _pair(dtype)
    assert type(lean).__name__ == "LeanWanTransformer3DModel" and type(plain).__name__ == "WanTransformer3DModel"
    for seed in range(2):
        kwargs = _inputs(plain, batch, frames, height, width, dtype, seed, pattern)
        with torch.no_grad():
            expected = plain(**kwargs)[0]
            got = lean(**kwargs)[0]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got, expected)


def test_per_sample_timesteps_take_diffusers_path():
    plain, lean = _pair(torch.float32)
    kwargs = _inputs(plain, 2, 2, 4, 4, torch.float32, 0, "pinned")
    kwargs["timestep"] = torch.tensor([10.0, 900.0])
    with torch.no_grad():
        assert torch.equal(lean(**kwargs)[0], plain(**kwargs)[0])


def test_lean_switch_keeps_weights_and_compile_names():
    plain, lean = _pair(torch.float32)
    assert lean.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(lean.state_dict().values(), plain.state_dict().values()))
    assert {type(b).__name__ for b in lean.blocks} == {"LeanWanTransformerBlock"}
    assert "LeanWanTransformerBlock" in lean._repeated_blocks  # compile_repeated_blocks matches class names
    assert use_lean_forward(lean) is lean and type(lean).__name__ == "LeanWanTransformer3DModel"  # twice is harmless


@pytest.mark.parametrize("shape", [(1, 5), (2, 7), (3, 1)])
def test_distinct_rows_stand_for_every_token(shape):
    g = torch.Generator().manual_seed(sum(shape))
    timestep = torch.randint(0, 3, shape, generator=g).float() * 250
    per_token = torch.stack([torch.full((2, 4), float(t)) for t in timestep.flatten()]).view(*shape, 2, 4)
    compact = distinct_rows(per_token, timestep)
    assert compact.rows.shape[0] == timestep.unique().numel() and compact.shape == tuple(per_token.shape)
    assert torch.equal(compact.rows[compact.index], per_token)
    later = compact.tokens_from(1)
    assert torch.equal(later.rows[later.index], per_token[:, 1:])
    with pytest.raises(ValueError, match="TokenModulation"):
        TokenModulation(compact.rows, compact.index.float())


@pytest.mark.parametrize(("height", "width"), [(32, 56), (44, 80)])
def test_lean_forward_holds_a_fraction_of_the_memory(height, width):
    """The peak live bytes of one forward of the real 5B architecture (meta device, fused attention, as
    the VRAM predictor traces it) on 9 latent frames of h x w: the lean forward holds well under half."""
    from diffusers import WanTransformer3DModel

    from mirage_cli.backbone.configs import wan22_transformer_config
    from mirage_cli.vram.meta_trace import META, meta_module, traced_peak

    plain = meta_module(WanTransformer3DModel, wan22_transformer_config(), torch.bfloat16)
    lean = use_lean_forward(meta_module(WanTransformer3DModel, wan22_transformer_config(), torch.bfloat16))
    kwargs = {"hidden_states": torch.empty(1, 48, 9, height, width, device=META, dtype=torch.bfloat16),
              "timestep": torch.empty(1, 9 * height * width // 4, device=META),
              "encoder_hidden_states": torch.empty(1, 512, 4096, device=META, dtype=torch.bfloat16), "return_dict": False}
    peaks = [traced_peak(lambda m=m: m(**kwargs)) for m in (plain, lean)]
    assert peaks[1] < 0.45 * peaks[0], peaks
