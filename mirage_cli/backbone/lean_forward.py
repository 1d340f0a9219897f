"""The Wan transformer's forward with per-token timesteps, in a third of diffusers' activation memory
(one forward of a 121-frame chunk at 1280x704, traced: 5.1 GiB -> 1.7 GiB; on an H200, 4 real-size
layers in bfloat16: 5.08 -> 1.59 GiB), with the same output bit for bit.

Wan2.2-TI2V gives every token its own timestep ([B, L]), yet a chunk has only a few distinct values
(0 for the first frame and the pinned memory cells, the step's t elsewhere). diffusers' forward keeps
the per-token timestep projection ``tproj`` [B, L, 6, D] for the whole forward (0.94 GiB in bfloat16
for a 121-frame chunk at 1280x704), and each ``WanTransformerBlock`` adds its ``scale_shift_table`` to
all of it in float32 at once: two [B, L, 6, D] float32 tensors (1.9 GiB each) at the top of every
block, the sum alive through the block. Here:

- ``embed_condition``: diffusers' own condition embedder runs on every token, as in diffusers, then
  only one row per distinct timestep is kept (``TokenModulation``: rows [U, K, D] and the token ->
  row index [B, L]). Equal timesteps give equal rows, so nothing changes but the memory.
- ``lean_block_forward``: each of the six modulation parameters is formed ([B, L, D] float32, by
  gathering its rows) only for the step that uses it, and the block updates its own fresh tensors in
  place: the same float32 operations on the same values in the same order (``a + b`` and ``a * b``
  commute exactly). Its feed-forward applies the GELU in place (``feed_forward``).
- ``output_head``: the final modulation, the same way.

``tests/test_lean_forward.py`` checks ``torch.equal`` with diffusers' forward (float32 and bfloat16); so
did one run on an H200 (bfloat16, real-size layers, 7,920 and 27,280 tokens).

``use_lean_forward(transformer)`` switches a loaded ``WanTransformer3DModel`` and its blocks to these
forwards by changing their classes to subclasses, so hooks that wrap a module's ``forward`` (model
and group offloading, step caches, context parallelism, layerwise casting) keep working, and
``compile_repeated_blocks`` still finds the blocks. Calls this does not cover (one timestep per
sample, image embeddings, ``attention_kwargs``, gradient checkpointing) go to diffusers' forward.
The VACE transformer runs ``vace_forward``, which is built from the same pieces (``attach_vace``
makes its blocks lean).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

SHIFT_MSA, SCALE_MSA, GATE_MSA, C_SHIFT_MSA, C_SCALE_MSA, C_GATE_MSA = range(6)
"""The order of a block's six modulation parameters in ``tproj`` [..., 6, D] and ``scale_shift_table`` [1, 6, D]."""
OUT_SHIFT, OUT_SCALE = range(2)
"""The order of the output head's two parameters in its ``scale_shift_table`` [1, 2, D]."""


@dataclass(frozen=True)
class TokenModulation:
    """A per-token tensor [B, L, K, D] stored as one row per distinct timestep.

    ``rows``: [U, K, D] the distinct rows (U distinct timesteps); ``index``: int64 [B, L], the row of each token.
    """

    rows: torch.Tensor
    index: torch.Tensor

    def __post_init__(self):
        if self.rows.ndim != 3 or self.index.ndim != 2 or self.index.dtype != torch.int64:
            raise ValueError(f"TokenModulation: expected rows [U, K, D] and int64 index [B, L], got "
                             f"{list(self.rows.shape)} and {self.index.dtype} {list(self.index.shape)}")

    @property
    def shape(self) -> tuple[int, ...]:
        """[B, L, K, D], the shape of the per-token tensor this stands for."""
        return (*self.index.shape, *self.rows.shape[1:])

    def tokens_from(self, start: int) -> TokenModulation:
        """Tokens ``start:`` of every sample (the rows are shared)."""
        return TokenModulation(self.rows, self.index[:, start:])

    def plus(self, k: int, bias: torch.Tensor) -> torch.Tensor:
        """``bias + per_token[:, :, k]`` in float32 (``bias``: [D], a row of a ``scale_shift_table``): a
        fresh [B, L, D] tensor, which the caller may change in place."""
        distinct = self.rows[:, k].to(torch.float32, copy=True).add_(bias.to(torch.float32))  # [U, D]
        return distinct[self.index]


def distinct_rows(per_token: torch.Tensor, timestep: torch.Tensor) -> TokenModulation:
    """``per_token`` [B, L, K, D] (a function of each token's timestep) as a ``TokenModulation``: the
    row of the first token of each distinct value of ``timestep`` [B, L]."""
    if per_token.ndim != 4 or per_token.shape[:2] != timestep.shape:
        raise ValueError(f"per_token: expected [B, L, K, D] with [B, L] = {list(timestep.shape)}, got {list(per_token.shape)}")
    if timestep.device.type == "meta":  # the VRAM predictor: no values; a chunk has two (0 and the step's t)
        return TokenModulation(per_token.flatten(0, 1)[:2].clone(), torch.empty(timestep.shape, dtype=torch.int64, device="meta"))
    _, index = torch.unique(timestep, return_inverse=True)  # sorted distinct values; index [B, L]
    flat = index.flatten()
    count = int(flat.max()) + 1
    order = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((count,), flat.numel(), dtype=torch.int64, device=flat.device).scatter_reduce_(0, flat, order, "amin")
    return TokenModulation(per_token.flatten(0, 1)[first], index)


def embed_condition(model, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
    """diffusers' condition embedder of a Wan transformer on per-token timesteps, kept compact.

    Args:
        timestep: [B, L] per-token timesteps.
        encoder_hidden_states: [B, S, text_dim] prompt embeddings.

    Returns:
        (temb, tproj, text): ``TokenModulation`` of the time embedding (K = 1) and of the timestep
        projection (K = 6), and the projected prompt [B, S, D].
    """
    B, L = timestep.shape
    temb, tproj, text, _ = model.condition_embedder(timestep.flatten(), encoder_hidden_states, None, timestep_seq_len=L)
    tproj = distinct_rows(tproj.unflatten(2, (6, -1)), timestep)  # the [B, L, 6 * D] projection is freed here
    return distinct_rows(temb.unsqueeze(2), timestep), tproj, text


def output_head(model, hidden_states: torch.Tensor, temb: TokenModulation, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """The output norm, modulation, projection and unpatchify of a Wan transformer.

    ``hidden_states``: [B, L, D]; ``temb``: its time embedding (K = 1); ``shape``: (B, T, H, W) of the
    latents. Returns [B, C, T, H, W].
    """
    B, T, H, W = shape
    p_t, p_h, p_w = model.config.patch_size
    table = model.scale_shift_table  # [1, 2, D]: parameter k of a token is table[0, k] + its time embedding
    shift = temb.plus(0, table[0, OUT_SHIFT]).to(hidden_states.device)
    scale = temb.plus(0, table[0, OUT_SCALE]).to(hidden_states.device)
    x = _modulated_norm(model.norm_out, hidden_states, scale, shift)
    x = model.proj_out(x)
    x = x.reshape(B, T // p_t, H // p_h, W // p_w, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def modulation(block, temb, k: int) -> torch.Tensor:
    """Parameter ``k`` of a block's modulation, ``scale_shift_table[:, k] + temb[:, :, k]`` in float32: a
    fresh [B, L, D] tensor. ``temb``: a ``TokenModulation`` (K = 6) or a [B, L, 6, D] tensor."""
    if isinstance(temb, TokenModulation):
        return temb.plus(k, block.scale_shift_table[0, k])
    if temb.ndim != 4 or temb.shape[2] != 6:
        raise ValueError(f"temb: expected [B, L, 6, D], got {list(temb.shape)}")
    return temb[:, :, k].to(torch.float32, copy=True).add_(block.scale_shift_table[0, k].to(torch.float32))


def _modulated_norm(norm, hidden_states: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``(norm(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)``; consumes ``scale``."""
    out = norm(hidden_states.float())
    out.mul_(scale.add_(1.0))
    return out.add_(shift).type_as(hidden_states)


def _gated_residual(hidden_states: torch.Tensor, update: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``(hidden_states.float() + update * gate).type_as(hidden_states)``; consumes ``gate``."""
    return gate.mul_(update).add_(hidden_states).type_as(hidden_states)


def feed_forward(ffn, hidden_states: torch.Tensor) -> torch.Tensor:
    """``ffn(hidden_states)`` for diffusers' ``FeedForward`` of Wan's blocks (``net``: ``GELU`` (its
    ``proj`` then the GELU), ``Dropout``, ``Linear``, [``Dropout``]) with the GELU applied in place: one
    [B, L, ffn_dim] tensor alive instead of two, the same elementwise kernel. Any other structure runs
    ``ffn`` itself. Dropout is the identity in eval."""
    from diffusers.models.activations import GELU

    net = list(ffn.net)
    plain = (len(net) in (3, 4) and type(net[0]) is GELU and isinstance(net[2], torch.nn.Linear) and not ffn.training
             and all(isinstance(m, torch.nn.Dropout) for m in net[1:2] + net[3:]))
    if not plain:
        return ffn(hidden_states)
    inner = net[0].proj(hidden_states)
    torch.ops.aten.gelu_(inner, approximate=net[0].approximate)
    return net[2](inner)


def lean_block_forward(block, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb, rotary_emb) -> torch.Tensor:
    """``WanTransformerBlock.forward`` with the modulation formed per parameter (see the module docstring).

    Args:
        block: a diffusers ``WanTransformerBlock`` (or a VACE block of the same structure).
        hidden_states: [B, L, D] tokens.
        encoder_hidden_states: [B, S, D] text tokens.
        temb: ``TokenModulation`` (K = 6) or [B, L, 6, D] per-token timestep projection; a per-sample
            [B, 6, D] goes to diffusers' forward.
        rotary_emb: (cos, sin), each [1, L, 1, head_dim].

    Returns:
        [B, L, D] in the dtype of ``hidden_states``.
    """
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    if not isinstance(temb, TokenModulation) and temb.ndim != 4:
        return WanTransformerBlock.forward(block, hidden_states, encoder_hidden_states, temb, rotary_emb)
    if tuple(temb.shape[:2]) != tuple(hidden_states.shape[:2]):
        raise ValueError(f"temb: expected [B, L] = {list(hidden_states.shape[:2])} leading, got {list(temb.shape)}")

    # 1. self-attention
    normed = _modulated_norm(block.norm1, hidden_states, modulation(block, temb, SCALE_MSA), modulation(block, temb, SHIFT_MSA))
    update = block.attn1(normed, None, None, rotary_emb)
    del normed
    hidden_states = _gated_residual(hidden_states, update, modulation(block, temb, GATE_MSA))
    del update

    # 2. cross-attention (no modulation)
    normed = block.norm2(hidden_states.float()).type_as(hidden_states)
    hidden_states = hidden_states + block.attn2(normed, encoder_hidden_states, None, None)
    del normed

    # 3. feed-forward
    normed = _modulated_norm(block.norm3, hidden_states, modulation(block, temb, C_SCALE_MSA), modulation(block, temb, C_SHIFT_MSA))
    update = feed_forward(block.ffn, normed)
    del normed
    return _gated_residual(hidden_states, update, modulation(block, temb, C_GATE_MSA))


def lean_transformer_forward(model, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                             encoder_hidden_states_image: torch.Tensor | None = None, return_dict: bool = True,
                             attention_kwargs: dict | None = None):
    """``WanTransformer3DModel.forward`` (same arguments, same result) for per-token timesteps.

    ``hidden_states``: [B, C, T, H, W] latents; ``timestep``: [B, L] per token (L = T * H/2 * W/2);
    ``encoder_hidden_states``: [B, S, text_dim]. Returns what diffusers returns ([B, C, T, H, W]).
    """
    from diffusers import WanTransformer3DModel
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    if (timestep.ndim != 2 or encoder_hidden_states_image is not None or attention_kwargs is not None
            or (torch.is_grad_enabled() and model.gradient_checkpointing)):
        return WanTransformer3DModel.forward(model, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
                                             return_dict, attention_kwargs)
    B, _, T, H, W = hidden_states.shape
    rotary = model.rope(hidden_states)
    x = model.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()  # [B, L, D]
    temb, tproj, text = embed_condition(model, timestep, encoder_hidden_states)
    for block in model.blocks:
        x = block(x, text, tproj, rotary)
    output = output_head(model, x, temb, (B, T, H, W))
    return Transformer2DModelOutput(sample=output) if return_dict else (output,)


@functools.cache
def _lean_class(base: type, forward) -> type:
    """A subclass of ``base`` whose ``forward`` is ``forward``, known to diffusers' step-cache hooks as
    ``base`` is (their ``TransformerBlockRegistry`` looks a block's class up exactly)."""
    from diffusers.hooks._helpers import TransformerBlockRegistry

    lean = type(f"Lean{base.__name__}", (base,), {"forward": forward, "__module__": __name__})
    try:
        metadata = TransformerBlockRegistry.get(base)
    except ValueError:  # not a block diffusers' caches know
        return lean
    TransformerBlockRegistry.register(lean, dataclasses.replace(metadata, _cached_parameter_indices=None))
    return lean


def use_lean_forward(transformer: torch.nn.Module) -> torch.nn.Module:
    """Switch a diffusers ``WanTransformer3DModel`` (and, for any Wan transformer, its ``blocks``) to the
    lean forwards, in place; weights, names and hooks are untouched. Returns ``transformer``."""
    from diffusers import WanTransformer3DModel

    if type(transformer) is WanTransformer3DModel:
        transformer.__class__ = _lean_class(WanTransformer3DModel, lean_transformer_forward)
    names = set()
    for block in transformer.blocks:
        if type(block).forward is not lean_block_forward:
            block.__class__ = _lean_class(type(block), lean_block_forward)
        names.add(type(block).__name__)
    repeated = list(getattr(transformer, "_repeated_blocks", None) or [])
    transformer._repeated_blocks = repeated + sorted(names - set(repeated))  # compile_repeated_blocks matches class names
    return transformer
