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
the file and the keys; nothing is loaded partially. ``check_vace_file`` makes these checks from the
file's header alone (``mirage validate`` and a render's first stage run it without loading any model).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mirage_cli.backbone.diffsynth_names import BLOCK_KEY, block_name, key_problems, open_weights, read_weights, strip_prefixes
from mirage_cli.backbone.lean_forward import use_lean_forward
from mirage_cli.backbone.random_components import cast_like_from_pretrained, keep_fp32_modules
from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.safetensors_file import SafetensorsFile

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


def transformer_config(transformer: torch.nn.Module) -> dict:
    """The constructor arguments of a diffusers Wan transformer (its config without ``_`` entries)."""
    return {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}


def vace_names(keys, path: Path, field: str = "vace") -> dict[str, str]:
    """Each key of a VACE file (official names) -> its diffusers name; an unknown key, or two keys that
    name the same parameter, is an InputError."""
    out, unknown = {}, []
    for key in keys:
        name = strip_prefixes(key, VACE_PREFIXES)
        match = BLOCK_KEY.match(name)
        if not name.startswith("vace_patch_embedding."):
            renamed = block_name(match["rest"]) if match and match["group"] == "vace_blocks" else None
            name = None if renamed is None else f"vace_blocks.{int(match['index'])}.{renamed}"
        if name is None or name in out.values():
            unknown.append(key if name is None else f"{key} (a second {name})")
            continue
        out[key] = name
    error = key_problems(path, field, unknown, [], [])
    if error:
        raise error
    return out


def meta_vace_model(config: dict, blocks: int, path: Path, field: str = "vace") -> torch.nn.Module:
    """``WanVACETransformer3DModel`` of the transformer ``config`` with ``blocks`` VACE blocks, on the meta
    device (no memory); InputError when that many blocks do not fit the transformer."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    try:
        layers = vace_layers(int(config["num_layers"]), blocks)
    except ValueError as exc:
        raise InputError(Problem(file=str(path), field=field, message=str(exc))) from None
    with init_empty_weights():
        return WanVACETransformer3DModel.from_config({**config, "vace_layers": layers, "vace_in_channels": VACE_IN_CHANNELS})


def check_vace_file(file: SafetensorsFile, config: dict) -> tuple[dict[str, str], torch.nn.Module]:
    """Every check of a VACE file's header against the transformer ``config`` (names, number of blocks,
    missing keys, shapes), no tensor read: (file key -> diffusers name, the VACE model on meta)."""
    path, field = file.path, file.field
    names = vace_names(file.tensors, path, field)
    blocks = {int(BLOCK_KEY.match(n)["index"]) for n in names.values() if n.startswith("vace_blocks.")}
    model = meta_vace_model(config, max(blocks, default=-1) + 1, path, field)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(("vace_blocks.", "vace_patch_embedding."))}
    shapes = {name: file.tensors[key].shape for key, name in names.items()}
    missing = sorted(set(expected) - set(shapes))
    wrong = sorted(f"{k} (file {list(shapes[k])}, model {list(expected[k])})"
                   for k in set(expected) & set(shapes) if shapes[k] != expected[k])
    error = key_problems(path, field, sorted(set(shapes) - set(expected)), missing, wrong)
    if error:
        raise error
    return names, model


def attach_vace(transformer: torch.nn.Module, path: str | Path, field: str = "vace",
                tensors: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """``WanVACETransformer3DModel`` = ``transformer``'s weights (shared) + the VACE weights of ``path``,
    on ``transformer``'s device, cast as ``from_pretrained`` casts (its fp32 modules stay fp32). The header
    is checked first (``check_vace_file``), the values as they are read (``read_weights``). ``tensors``:
    the file's tensors when they were already read that way (``load_backbone`` reads them first)."""
    file = open_weights(Path(path).expanduser(), field)
    names, model = check_vace_file(file, transformer_config(transformer))
    parameter = next(transformer.parameters())
    base = transformer.state_dict()
    tensors = read_weights(file) if tensors is None else tensors
    vace = {names[k]: v.to(device=parameter.device) for k, v in tensors.items()}
    try:
        model.load_state_dict({**base, **vace}, strict=True, assign=True)
    except RuntimeError as exc:  # the base transformer is not the one the file was trained on
        why = " ".join(str(exc).split())[:300]
        raise InputError(Problem(file=str(file.path), field=field, message=f"does not fit the transformer: {why}")) from None
    cast_like_from_pretrained(model, transformer.dtype, keep_fp32_modules(model, transformer.dtype))
    return use_lean_forward(model).eval()  # vace_forward hands its blocks the compact modulation
