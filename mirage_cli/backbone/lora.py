"""The LoRA the Mirage paper trains on the Wan2.2 DiT (with its VACE branch), applied through
diffusers' own LoRA loading (``load_lora_adapter``, PEFT underneath).

The official training script exports ``pipe.dit.blocks.N.<module>.lora_A.weight`` [r, in] and
``...lora_B.weight`` [out, r] for the modules ``q, k, v, o`` of both attentions and ``ffn.0``, ``ffn.2``
(rank 32 and alpha 32 by default, so the update is B @ A times the user's scale, as the official
inference fuses it). Keys are read with the prefixes ``module.``, ``model.``, ``pipe.dit.``, ``dit.``,
``base_model.model.``, ``base_model.``, ``diffusion_model.`` and PEFT's ``.default`` removed, renamed
to diffusers' module names (``mirage_cli.backbone.diffsynth_names``), and checked: a key that is not
a LoRA matrix of a block module, an A without its B, or a shape that does not fit the transformer is
an InputError naming the file and the key. The conversion that loads them is diffusers' own (its Wan
LoRA converter, which reads the original Wan names the training code writes); our renaming only
checks every key first and that diffusers converted all of them.

``apply_lora(transformer, path, scale, merge)``: ``merge=True`` fuses the update into the weights
(no cost per step, same numbers up to rounding); ``False`` keeps it as an adapter.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mirage_cli.backbone.diffsynth_names import BLOCK_KEY, key_problems, module_name, read_safetensors, strip_prefixes

LORA_PREFIXES = ("module.", "model.", "_fsdp_wrapped_module.", "pipe.dit.", "dit.", "base_model.model.", "base_model.",
                 "diffusion_model.")
ADAPTER = "mirage"
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")


def lora_state_dict(raw: dict[str, torch.Tensor], transformer: torch.nn.Module, path: Path, field: str = "lora") -> tuple[dict, dict]:
    """``raw`` checked against ``transformer``: (tensors by diffusers name, ``blocks.N.attn1.to_q.lora_A.weight``;
    the original Wan name of each, ``blocks.N.self_attn.q.lora_A.weight``)."""
    modules = dict(transformer.named_modules())
    out, unknown, wrong, original = {}, [], [], {}
    for key, value in raw.items():
        match = _LORA_KEY.match(strip_prefixes(key, LORA_PREFIXES))
        block = BLOCK_KEY.match(match["module"]) if match else None
        renamed = module_name(block["rest"]) if block and block["group"] == "blocks" else None
        target = modules.get(f"blocks.{block['index']}.{renamed}") if renamed else None
        if target is None or not isinstance(target, torch.nn.Linear):
            unknown.append(key)
            continue
        name = f"blocks.{block['index']}.{renamed}.lora_{match['part']}.weight"
        original[name] = f"{match['module']}.lora_{match['part']}.weight"
        fits = value.ndim == 2 and (value.shape[1] == target.in_features if match["part"] == "A" else value.shape[0] == target.out_features)
        if not fits:
            wrong.append(f"{key} ({list(value.shape)} for a {target.in_features} -> {target.out_features} layer)")
        out[name] = value
    pairs = {name.rsplit(".lora_", 1)[0] for name in out}
    missing = sorted(f"{p}.lora_{part}.weight" for p in pairs for part in "AB" if f"{p}.lora_{part}.weight" not in out)
    ranks = [f"{p} (A rank {out[p + '.lora_A.weight'].shape[0]}, B rank {out[p + '.lora_B.weight'].shape[1]})" for p in pairs
             if f"{p}.lora_A.weight" in out and f"{p}.lora_B.weight" in out
             and out[p + ".lora_A.weight"].shape[0] != out[p + ".lora_B.weight"].shape[1]]
    error = key_problems(path, field, unknown, missing, wrong + ranks)
    if error:
        raise error
    if not out:
        raise key_problems(path, field, [], ["any lora_A / lora_B matrix"], [])
    return out, original


def check_lora(transformer: torch.nn.Module, path: str | Path, field: str = "lora") -> None:
    """Every check ``apply_lora`` makes (keys, shapes, values), without touching ``transformer``: for a
    LoRA fused later in the render (Spatia's, from the second chunk on)."""
    path = Path(path).expanduser()
    lora_state_dict(read_safetensors(path, field), transformer, path, field)


def apply_lora(transformer: torch.nn.Module, path: str | Path, scale: float = 1.0, *, merge: bool = True,
               field: str = "lora") -> None:
    """Add the LoRA of ``path`` to ``transformer`` (a diffusers Wan transformer, VACE or not) at
    ``scale``; ``merge`` fuses it into the weights and removes the adapter."""
    from diffusers import WanPipeline

    path = Path(path).expanduser()
    state, original = lora_state_dict(read_safetensors(path, field), transformer, path, field)
    parameter = next(transformer.parameters())
    dtype = parameter.dtype if parameter.dtype.is_floating_point else torch.float32
    wan_names = {f"diffusion_model.{original[k]}": v.to(device=parameter.device, dtype=dtype) for k, v in state.items()}
    converted = WanPipeline.lora_state_dict(wan_names)  # diffusers' own converter: "transformer.blocks.N.attn1.to_q..."
    expected = {f"transformer.{k}" for k in state}
    if set(converted) != expected:  # nothing may be dropped or renamed otherwise than checked above
        missed = sorted(expected ^ set(converted))
        raise key_problems(path, field, [], [], [f"diffusers converted the keys otherwise: {', '.join(missed[:5])}"])
    # no alphas in the file: diffusers sets alpha = rank, a scale of 1 (the official --lora-alpha 32 at rank 32)
    transformer.load_lora_adapter(converted, adapter_name=ADAPTER, prefix="transformer", network_alphas=None)
    transformer.set_adapters([ADAPTER], weights=[float(scale)])
    if merge:
        transformer.fuse_lora(lora_scale=1.0, adapter_names=[ADAPTER])
        transformer.unload_lora()
