"""The LoRA the Mirage paper trains on the Wan2.2 DiT (with its VACE branch), applied through
diffusers' own LoRA loading (``load_lora_adapter``, PEFT underneath).

The official training script exports ``pipe.dit.blocks.N.<module>.lora_A.weight`` [r, in] and
``...lora_B.weight`` [out, r] for the modules ``q, k, v, o`` of both attentions and ``ffn.0``, ``ffn.2``
(rank 32 and alpha 32 by default, so the update is B @ A times the user's scale, as the official
inference fuses it). Keys are read with the prefixes ``module.``, ``model.``, ``pipe.dit.``, ``dit.``,
``base_model.model.``, ``base_model.``, ``diffusion_model.`` and PEFT's ``.default`` removed, renamed
to diffusers' module names (``mirage_cli.backbone.diffsynth_names``), and checked: a key that is not
a LoRA matrix of a block module, an A without its B, or a shape that does not fit the transformer is
an InputError naming the file and the key; so is a pair of rank 0 or of two ranks (``check_lora_file``,
from the header alone, before any weight is read or any PEFT layer is made). The conversion that loads them is diffusers' own (its Wan
LoRA converter, which reads the original Wan names the training code writes); our renaming only
checks every key first and that diffusers converted all of them.

``apply_lora(transformer, path, scale, merge)``: ``merge=True`` fuses the update into the weights
(no cost per step, same numbers up to rounding); ``False`` keeps it as an adapter.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mirage_cli.backbone.diffsynth_names import BLOCK_KEY, key_problems, module_name, open_weights, read_weights, strip_prefixes
from mirage_cli.base.limits import MAX_WEIGHT_MAGNITUDE
from mirage_cli.base.safetensors_file import SafetensorsFile

LORA_PREFIXES = ("module.", "model.", "_fsdp_wrapped_module.", "pipe.dit.", "dit.", "base_model.model.", "base_model.",
                 "diffusion_model.")
ADAPTER = "mirage"
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")


def check_lora_file(file: SafetensorsFile, transformer: torch.nn.Module) -> dict[str, tuple[str, str]]:
    """Every check of a LoRA file's header against ``transformer`` (it may live on the meta device): each
    key a LoRA matrix of a block's linear layer, A and B in pairs, shapes fitting the layer, one rank of at
    least 1 per pair; no tensor read. Each key -> (its diffusers name, ``blocks.N.attn1.to_q.lora_A.weight``;
    its original Wan name, ``blocks.N.self_attn.q.lora_A.weight``)."""
    path, field = file.path, file.field
    modules = dict(transformer.named_modules())
    names, shapes, unknown, wrong = {}, {}, [], []
    for key, entry in file.tensors.items():
        match = _LORA_KEY.match(strip_prefixes(key, LORA_PREFIXES))
        block = BLOCK_KEY.match(match["module"]) if match else None
        renamed = module_name(block["rest"]) if block and block["group"] == "blocks" else None
        target = modules.get(f"blocks.{int(block['index'])}.{renamed}") if renamed else None
        name = f"blocks.{int(block['index'])}.{renamed}.lora_{match['part']}.weight" if target is not None else None
        if not isinstance(target, torch.nn.Linear) or name in shapes:
            unknown.append(key if name not in shapes else f"{key} (a second {name})")
            continue
        names[key] = (name, f"{match['module']}.lora_{match['part']}.weight")
        shapes[name] = entry.shape
        fits = len(entry.shape) == 2 and (entry.shape[1] == target.in_features if match["part"] == "A"
                                          else entry.shape[0] == target.out_features)
        if not fits:
            wrong.append(f"{key} ({list(entry.shape)} for a {target.in_features} -> {target.out_features} layer)")
    pairs = sorted({name.rsplit(".lora_", 1)[0] for name in shapes})
    missing = [f"{p}.lora_{part}.weight" for p in pairs for part in "AB" if f"{p}.lora_{part}.weight" not in shapes]
    ranks = []
    for p in pairs:
        a, b = shapes.get(f"{p}.lora_A.weight"), shapes.get(f"{p}.lora_B.weight")
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            continue
        if a[0] != b[1]:
            ranks.append(f"{p} (A rank {a[0]}, B rank {b[1]})")
        elif a[0] == 0:
            ranks.append(f"{p} (rank 0: a LoRA needs rank 1 or more)")
    error = key_problems(path, field, unknown, missing, wrong, ranks)
    if error:
        raise error
    if not names:
        raise key_problems(path, field, [], ["any lora_A / lora_B matrix"], [])
    return names


def check_lora(transformer: torch.nn.Module, path: str | Path, field: str = "lora") -> None:
    """Every check ``apply_lora`` makes (keys, shapes, ranks, values), without touching ``transformer``: for
    a LoRA fused later in the render (Spatia's, from the second chunk on)."""
    file = open_weights(Path(path).expanduser(), field)
    check_lora_file(file, transformer)
    problem = file.value_problem(MAX_WEIGHT_MAGNITUDE)
    if problem:
        raise file.error(problem)


def apply_lora(transformer: torch.nn.Module, path: str | Path, scale: float = 1.0, *, merge: bool = True,
               field: str = "lora", tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Add the LoRA of ``path`` to ``transformer`` (a diffusers Wan transformer, VACE or not) at
    ``scale``; ``merge`` fuses it into the weights and removes the adapter. ``tensors``: the file's
    tensors when they were already read by ``read_weights`` (``load_backbone`` reads them first)."""
    from diffusers import WanPipeline

    file = open_weights(Path(path).expanduser(), field)
    path = file.path
    names = check_lora_file(file, transformer)
    parameter = next(transformer.parameters())
    dtype = parameter.dtype if parameter.dtype.is_floating_point else torch.float32
    tensors = read_weights(file) if tensors is None else tensors
    wan_names = {f"diffusion_model.{names[k][1]}": v.to(device=parameter.device, dtype=dtype) for k, v in tensors.items()}
    converted = WanPipeline.lora_state_dict(wan_names)  # diffusers' own converter: "transformer.blocks.N.attn1.to_q..."
    expected = {f"transformer.{name}" for name, _ in names.values()}
    if set(converted) != expected:  # nothing may be dropped or renamed otherwise than checked above
        missed = sorted(expected ^ set(converted))
        raise key_problems(path, field, [], [], [f"diffusers converted the keys otherwise: {', '.join(missed[:5])}"])
    # no alphas in the file: diffusers sets alpha = rank, a scale of 1 (the official --lora-alpha 32 at rank 32)
    transformer.load_lora_adapter(converted, adapter_name=ADAPTER, prefix="transformer", network_alphas=None)
    transformer.set_adapters([ADAPTER], weights=[float(scale)])
    if merge:
        transformer.fuse_lora(lora_scale=1.0, adapter_names=[ADAPTER])
        transformer.unload_lora()
