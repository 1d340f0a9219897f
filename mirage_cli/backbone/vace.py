"""The trained VACE control branch of the Mirage paper (and of Spatia) on the Wan2.2 transformer.

``attach_vace(transformer, path)`` returns diffusers' ``WanVACETransformer3DModel`` holding the base
transformer's weights (shared, not copied) plus the VACE weights of ``path``: a safetensors file as
the official training script exports it (``vace_blocks.N.*`` and ``vace_patch_embedding.*``,
DiffSynth names; the prefixes ``module.``, ``model.``, ``_fsdp_wrapped_module.``, ``pipe.vace.`` and
``vace.`` are accepted). Facts of the architecture (official ``VaceWanModel``): for a 30-layer DiT,
15 VACE blocks attached after DiT layers 0, 2, ..., 28 (Spatia's: 8 blocks after 0, 4, ..., 28; the
layers follow from the number of blocks in the file, ``vace_layers``); a 96-channel context (the 48-channel warped
memory latent and the 48-channel latent of the score video) patch-embedded like the DiT's input;
block 0 adds the DiT's embedded input through ``before_proj``; each block's ``after_proj`` output is
a hint added to the DiT's hidden states after its layer (``vace_scale``, 1.0). A zero ``after_proj``
gives zero hints: the model then computes exactly what the base transformer computes.

Every key is accounted for: an unknown key, a missing one or a wrong shape is an InputError naming
the file and the keys; nothing is loaded partially.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mirage_cli.backbone.diffsynth_names import BLOCK_KEY, block_name, key_problems, read_safetensors, strip_prefixes
from mirage_cli.backbone.lean_forward import use_lean_forward
from mirage_cli.backbone.random_components import cast_like_from_pretrained, keep_fp32_modules
from mirage_cli.base.errors import InputError, Problem

VACE_IN_CHANNELS = 96
"""Channels of the VACE context: warped memory latent (48) + score-video latent (48)."""
VACE_PREFIXES = ("module.", "model.", "_fsdp_wrapped_module.", "pipe.vace.", "vace.")


def vace_layers(num_layers: int, num_blocks: int) -> list[int]:
    """The DiT layers ``num_blocks`` VACE blocks attach to: from layer 0 with the smallest step that
    leaves exactly ``num_blocks`` layers (the known layouts: the Mirage code's 15 blocks on every 2nd of
    Wan2.2-TI2V-5B's 30 layers, Spatia's 8 on every 4th (0, 4, ..., 28), the 14B's 8 on every 5th of 40)."""
    if num_blocks < 1 or num_blocks > num_layers:
        raise ValueError(f"{num_blocks} VACE blocks do not fit a transformer of {num_layers} layers")
    step = -(-num_layers // num_blocks)
    layers = list(range(0, num_layers, step))
    if len(layers) != num_blocks:
        raise ValueError(f"{num_blocks} VACE blocks cannot be spread over {num_layers} transformer layers from layer 0")
    return layers


def vace_state_dict(raw: dict[str, torch.Tensor], path: Path, field: str = "vace") -> dict[str, torch.Tensor]:
    """``raw`` (the file's tensors, official names) in diffusers' names; unknown keys are refused."""
    out, unknown = {}, []
    for key, value in raw.items():
        name = strip_prefixes(key, VACE_PREFIXES)
        if name.startswith("vace_patch_embedding."):
            out[name] = value
            continue
        match = BLOCK_KEY.match(name)
        renamed = block_name(match["rest"]) if match and match["group"] == "vace_blocks" else None
        if renamed is None:
            unknown.append(key)
            continue
        out[f"vace_blocks.{match['index']}.{renamed}"] = value
    error = key_problems(path, field, unknown, [], [])
    if error:
        raise error
    return out


def attach_vace(transformer: torch.nn.Module, path: str | Path, field: str = "vace") -> torch.nn.Module:
    """``WanVACETransformer3DModel`` = ``transformer``'s weights (shared) + the VACE weights of ``path``,
    on ``transformer``'s device, cast as ``from_pretrained`` casts (its fp32 modules stay fp32)."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    path = Path(path).expanduser()
    state = vace_state_dict(read_safetensors(path, field), path, field)
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    blocks = {int(BLOCK_KEY.match(k)["index"]) for k in state if k.startswith("vace_blocks.")}
    try:
        layers = vace_layers(int(config["num_layers"]), max(blocks, default=-1) + 1)
    except ValueError as exc:
        raise InputError(Problem(file=str(path), field=field, message=str(exc))) from None
    config.update(vace_layers=layers, vace_in_channels=VACE_IN_CHANNELS)
    with init_empty_weights():
        model = WanVACETransformer3DModel.from_config(config)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(("vace_blocks.", "vace_patch_embedding."))}
    missing = sorted(set(expected) - set(state))
    wrong = sorted(f"{k} (file {list(state[k].shape)}, model {list(expected[k].shape)})"
                   for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    error = key_problems(path, field, sorted(set(state) - set(expected)), missing, wrong)
    if error:
        raise error
    parameter = next(transformer.parameters())
    base = transformer.state_dict()
    vace = {k: v.to(device=parameter.device) for k, v in state.items()}
    try:
        model.load_state_dict({**base, **vace}, strict=True, assign=True)
    except RuntimeError as exc:  # the base transformer is not the one the file was trained on
        raise InputError(Problem(file=str(path), field=field, message=f"does not fit the transformer: {exc}")) from None
    cast_like_from_pretrained(model, transformer.dtype, keep_fp32_modules(model, transformer.dtype))
    return use_lean_forward(model).eval()  # vace_forward hands its blocks the compact modulation
