"""``vace_forward``: one forward of diffusers' ``WanVACETransformer3DModel`` the way the Mirage recipe
needs it, which diffusers' own ``forward`` (0.36) does not do:

- per-token timesteps ([B, L], Wan2.2-TI2V's ``expand_timesteps``) in the DiT *and* in the VACE
  branch: the VACE blocks run the DiT block's forward (``lean_block_forward``: they share its
  structure and names; diffusers' VACE block only takes one timestep per sample);
- reference tokens: the first ``ref_frames`` latent frames of the sequence take part in the DiT's
  attention but not in the VACE branch, whose context covers only the frames after them, and the
  hints are added to those frames only (the official ``VaceWanModel`` is run on ``x[:, ref:]``). As
  in the official DiT, the references sit at temporal rotary positions -n..-1 before the frames
  after them, which count from 0, and at height positions hh..2hh-1 (``reference_rotary``).

Everything else is the base transformer's forward step by step (rotary embedding, patch embedding,
condition embedding, blocks, output head), from the pieces of ``mirage_cli.backbone.lean_forward``
(per-token modulation kept compact), so with zero hints the output equals
``WanTransformer3DModel.forward`` exactly (``tests/test_trained_weights.py``).
"""

from __future__ import annotations

import torch

from mirage_cli.backbone.lean_forward import TokenModulation, embed_condition, lean_block_forward, output_head

VACE_SCALE = 1.0
"""The official inference's ``vace_scale``."""


def _tokens(value, start: int):
    """Tokens ``start:`` of a [B, L, ...] tensor, a ``TokenModulation``, or each tensor of a tuple (the rotary cos/sin)."""
    if isinstance(value, tuple):
        return tuple(_tokens(v, start) for v in value)
    if isinstance(value, TokenModulation):
        return value.tokens_from(start)
    return value[:, start:]


def reference_rotary(rope, hidden_states: torch.Tensor, ref_frames: int):
    """``rope(hidden_states)`` ((cos, sin), each [1, L, 1, head_dim]) with the first ``ref_frames``
    latent frames placed as the official DiT places references: temporal positions -n..-1, height
    positions hh..2hh-1 (below the frames' rows 0..hh-1), width positions 0..ww-1; the others at
    temporal 0, 1, ... as usual. cos(-a) = cos(a) and sin(-a) = -sin(a), so a reference at -k takes
    the table's row k with its temporal sine negated."""
    if ref_frames == 0:
        return rope(hidden_states)
    B, C, T, H, W = hidden_states.shape
    p_t, p_h, p_w = rope.patch_size
    main_cos, main_sin = rope(hidden_states[:, :, ref_frames:])
    hh, ww = H // p_h, W // p_w
    cos_t, cos_h, cos_w = rope.freqs_cos.split([rope.t_dim, rope.h_dim, rope.w_dim], dim=1)
    sin_t, sin_h, sin_w = rope.freqs_sin.split([rope.t_dim, rope.h_dim, rope.w_dim], dim=1)
    rows = torch.arange(ref_frames, 0, -1, device=rope.freqs_cos.device)  # reference j sits at -(n - j)
    shape = (ref_frames, hh, ww)

    def grid(t, h, w):
        return torch.cat([t.view(ref_frames, 1, 1, -1).expand(*shape, -1), h[hh : 2 * hh].view(1, hh, 1, -1).expand(*shape, -1),
                          w[:ww].view(1, 1, ww, -1).expand(*shape, -1)], dim=-1).reshape(1, ref_frames * hh * ww, 1, -1)

    ref_cos = grid(cos_t[rows], cos_h, cos_w)
    ref_sin = grid(-sin_t[rows], sin_h, sin_w)
    return torch.cat([ref_cos, main_cos], dim=1), torch.cat([ref_sin, main_sin], dim=1)


def _hints(model, x: torch.Tensor, control: torch.Tensor, text: torch.Tensor, tproj: torch.Tensor, rotary, ref_tokens: int):
    """The VACE hints, one [B, L - ref_tokens, D] per VACE layer, in layer order."""
    c = model.vace_patch_embedding(control).flatten(2).transpose(1, 2)  # [B, L', D]
    x_main = x[:, ref_tokens:]
    if c.shape[1] != x_main.shape[1]:
        raise ValueError(f"control: {c.shape[1]} tokens for {x_main.shape[1]} non-reference tokens")
    t_main = tproj if isinstance(tproj, torch.Tensor) and tproj.ndim == 3 else _tokens(tproj, ref_tokens)  # per sample: all
    r_main = _tokens(rotary, ref_tokens)
    hints = []
    for block in model.vace_blocks:
        if block.proj_in is not None:
            c = block.proj_in(c) + x_main
        c = lean_block_forward(block, c, text, t_main, r_main)
        hints.append(block.proj_out(c))
    return hints


def vace_forward(model, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 control: torch.Tensor | None = None, *, ref_frames: int = 0, vace_scale: float = VACE_SCALE) -> torch.Tensor:
    """The velocity of a ``WanVACETransformer3DModel`` (or, with ``control=None``, of any diffusers Wan
    transformer).

    Args:
        hidden_states: [B, C, T, h, w] latents; its first ``ref_frames`` latent frames are references.
        timestep: [B] or [B, L] (per token, L = T * h/2 * w/2).
        encoder_hidden_states: [B, S, text_dim] prompt embeddings.
        control: [B, 96, T - ref_frames, h, w] VACE context of the frames after the references, or None.
        vace_scale: weight of the hints.

    Returns:
        [B, C, T, h, w] the model's output.

    ``model``'s blocks must be lean (``mirage_cli.backbone.lean_forward.use_lean_forward``), as loading
    and ``attach_vace`` leave them.
    """
    if any(type(block).forward is not lean_block_forward for block in model.blocks):
        raise ValueError("vace_forward: the model's blocks must take the compact modulation; call use_lean_forward(model) "
                         "first (loading and attach_vace do)")
    B, _, T, H, W = hidden_states.shape
    p_t, p_h, p_w = model.config.patch_size
    rotary = reference_rotary(model.rope, hidden_states, ref_frames)
    x = model.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()  # [B, L, D]
    if timestep.ndim == 2:  # per token: kept compact (mirage_cli.backbone.lean_forward)
        temb, tproj, text = embed_condition(model, timestep, encoder_hidden_states)
    else:
        temb, tproj, text, _ = model.condition_embedder(timestep, encoder_hidden_states, None)
        tproj = tproj.unflatten(1, (6, -1))
    ref_tokens = ref_frames * (H // p_h) * (W // p_w) // p_t
    hints = {}
    if control is not None:
        hints = dict(zip(model.config.vace_layers, _hints(model, x, control, text, tproj, rotary, ref_tokens), strict=True))
    for i, block in enumerate(model.blocks):
        x = block(x, text, tproj, rotary)
        if i in hints:
            x = torch.cat([x[:, :ref_tokens], x[:, ref_tokens:] + hints[i] * vace_scale], dim=1)
    if isinstance(temb, TokenModulation):
        return output_head(model, x, temb, (B, T, H, W))
    shift, scale = (model.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
    x = (model.norm_out(x.float()) * (1 + scale.to(x.device)) + shift.to(x.device)).type_as(x)
    x = model.proj_out(x)
    x = x.reshape(B, T // p_t, H // p_h, W // p_w, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
