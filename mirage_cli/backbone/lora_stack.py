"""A stack of LoRAs (speed, style, the trained memory LoRA) fused once into the Wan2.2 DiT at load.

Users stack LoRAs trained by others on Wan2.2-TI2V-5B: lightx2v's distillation LoRAs, NVIDIA's
LongLive-Plug pair (few-step and CFG-distill, weights 1 : 0.5), style LoRAs. Each file is read in the
layout it was saved in (``lora_format``):

- ``diffusers``: diffusers / PEFT names, ``transformer.blocks.N.attn1.to_q.lora_A.weight`` [r, in] and
  ``...lora_B.weight`` [out, r] (``base_model.model.`` and PEFT's ``.default`` allowed); alpha from a
  ``X.alpha`` tensor or the file's ``lora_adapter_metadata`` (``lora_alpha``, ``r``), else alpha = rank.
- ``kohya``: kohya / ComfyUI / musubi names, ``lora_unet_blocks_0_self_attn_q.lora_down.weight``,
  ``.lora_up.weight`` and ``.alpha``.
- ``wan``: the original Wan release's names, as lightx2v and the official Mirage training export write
  them, ``diffusion_model.blocks.0.self_attn.q.lora_A.weight`` (or ``lora_down``/``lora_up``, prefixes
  ``pipe.dit.``, ``model.`` ... as ``mirage_cli.backbone.lora.LORA_PREFIXES``), ``.alpha``, and full
  deltas ``X.diff`` (added to ``X.weight``) and ``X.diff_b`` (added to ``X.bias``).

Kohya names are rewritten to the original Wan names (``blocks_0_self_attn_q`` -> ``blocks.0.self_attn.q``);
the LoRA pairs and alphas of both are converted by diffusers' own Wan converter
(``WanPipeline.lora_state_dict``, which folds alpha / rank into A and B). diffusers leaves ``.diff`` keys
unconverted (and drops norm deltas), so full deltas are renamed here with the facts of the two layouts
(``mirage_cli.backbone.diffsynth_names``). Every key is accounted for: each is given its diffusers name
from the header alone (``check_stack_file``), the converter's output must hold exactly those names, and a
key with no name, an A without its B, or a shape or block index that does not fit the transformer is an
InputError naming the file and the key.

Fusing (``fuse_lora_stack``): for every parameter W the stack touches, W <- W + sum_i s_i * delta_i with
delta = B @ A * alpha / rank (or the full delta), summed in float32 in stack order and rounded to W's
dtype once: no adapter is left, so no cost per step, and the same stack gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mirage_cli.backbone.diffsynth_names import (
    BLOCK_KEY,
    key_problems,
    module_name,
    open_weights,
    read_weights,
    strip_prefixes,
    weight_file_problems,
)
from mirage_cli.backbone.lora import LORA_PREFIXES
from mirage_cli.base.errors import InputError
from mirage_cli.base.safetensors_file import SafetensorsFile

TOP_MODULES = {
    "head.head": "proj_out",
    "time_projection.1": "condition_embedder.time_proj",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
}
"""Original Wan name -> diffusers name of the modules outside the blocks that Wan LoRAs touch."""

_KOHYA_BLOCK = re.compile(r"^blocks_(?P<index>\d+)_(?P<rest>self_attn_(?:q|k|v|o|norm_q|norm_k)|cross_attn_(?:q|k|v|o|norm_q|norm_k)"
                          r"|ffn_0|ffn_2|norm3)$")
_KOHYA_KEY = re.compile(r"^lora_unet_(?P<module>[a-z0-9_]+)\.(?P<part>lora_down\.weight|lora_up\.weight|alpha|diff|diff_b)$")
_WAN_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_down\.weight|lora_up\.weight|alpha|diff|diff_b)$")
_DIFFUSERS_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A(?:\.default)?\.weight|lora_B(?:\.default)?\.weight|lora_B\.bias|alpha)$")
_DIFFUSERS_HINTS = (".attn1.", ".attn2.", ".ffn.net.", "condition_embedder.", "proj_out.")
_ROLE = {"lora_A.weight": "A", "lora_down.weight": "A", "lora_B.weight": "B", "lora_up.weight": "B", "alpha": "alpha",
         "diff": "diff", "diff_b": "diff_b", "lora_B.bias": "diff_b"}


@dataclass(frozen=True)
class LoraFile:
    """One LoRA of a stack: its safetensors file and the weight of its update."""

    path: Path
    scale: float = 1.0

    def summary(self) -> dict:
        return {"path": str(self.path), "scale": self.scale}


@dataclass(frozen=True)
class StackKey:
    """What one key of a LoRA file is: ``module`` (the diffusers module it changes, ``blocks.0.attn1.to_q``),
    ``role`` (A, B, alpha, diff: a delta of the weight, diff_b: of the bias) and its name in the layout
    the converter reads (``wan`` keys: the original Wan name; others: the file's key)."""

    module: str
    role: str
    source: str


def lora_format(keys: Sequence[str]) -> str:
    """``kohya`` | ``diffusers`` | ``wan`` (module docstring), from the file's key names."""
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if any(k.startswith("transformer.") or any(h in k for h in _DIFFUSERS_HINTS) for k in keys):
        return "diffusers"
    return "wan"


def _wan_module(module: str) -> str | None:
    """The diffusers name of an original Wan module path (``blocks.0.self_attn.q`` -> ``blocks.0.attn1.to_q``)."""
    block = BLOCK_KEY.match(module)
    if block and block["group"] == "blocks":
        renamed = module_name(block["rest"])
        return f"blocks.{int(block['index'])}.{renamed}" if renamed else None
    return TOP_MODULES.get(module)


def _kohya_module(module: str) -> str | None:
    """The original Wan path of a kohya module name (``blocks_0_self_attn_q`` -> ``blocks.0.self_attn.q``)."""
    block = _KOHYA_BLOCK.match(module)
    if block:
        rest = block["rest"]
        for head in ("self_attn", "cross_attn"):
            if rest.startswith(head + "_"):
                rest = f"{head}.{rest[len(head) + 1:]}"
        return f"blocks.{int(block['index'])}.{rest.replace('ffn_', 'ffn.')}"
    top = {name.replace(".", "_"): name for name in TOP_MODULES}
    return top.get(module)


def name_keys(keys: Sequence[str]) -> tuple[str, dict[str, StackKey], list[str]]:
    """(the format, each key's ``StackKey``, the keys that name nothing this loader knows), from names alone."""
    fmt = lora_format(keys)
    named, unknown = {}, []
    for key in keys:
        if fmt == "diffusers":
            match = _DIFFUSERS_KEY.match(strip_prefixes(key, ("base_model.model.", "transformer.")))
            module = match["module"] if match else None
            part = match["part"].replace(".default", "") if match else None
            source = key
        else:
            if fmt == "kohya":
                match = _KOHYA_KEY.match(key)
                wan = _kohya_module(match["module"]) if match else None
            else:
                match = _WAN_KEY.match(strip_prefixes(key, LORA_PREFIXES))
                wan = match["module"] if match else None
            module = _wan_module(wan) if wan else None
            part = match["part"] if match else None
            source = f"{wan}.{part}" if module else key
        if module is None:
            unknown.append(key)
            continue
        named[key] = StackKey(module, _ROLE[part], source)
    return fmt, named, unknown


def check_stack_file(file: SafetensorsFile, transformer: torch.nn.Module) -> tuple[str, dict[str, StackKey]]:
    """Every check of one stack file's header against ``transformer`` (which may live on the meta device): each
    key named (``name_keys``), its module in the transformer (block index included), A and B in pairs of one
    rank >= 1 fitting a linear layer, alphas scalar and beside a pair, deltas of the parameter's shape, no
    module given twice; no tensor read. Returns (format, keys). InputError with one line naming the file and
    the keys otherwise."""
    fmt, named, unknown = name_keys(list(file.tensors))
    modules = dict(transformer.named_modules())
    by_module: dict[tuple[str, str], str] = {}
    wrong, missing, ranks = [], [], []
    for key, what in named.items():
        shape = file.tensors[key].shape
        target = modules.get(what.module)
        if target is None:
            unknown.append(f"{key} (the model has no {what.module})")
            continue
        if (what.module, what.role) in by_module:
            unknown.append(f"{key} (a second {what.role} of {what.module}, after {by_module[what.module, what.role]})")
            continue
        by_module[what.module, what.role] = key
        problem = _shape_problem(what.role, shape, target)
        if problem:
            wrong.append(f"{key} ({problem})")
    for (module, role), key in sorted(by_module.items()):
        if role in ("A", "B", "alpha"):
            for need in {"A": "B", "B": "A", "alpha": "A"}[role]:
                if (module, need) not in by_module:
                    missing.append(f"the lora_{need} of {module} (for {key})")
        if role == "A" and (module, "B") in by_module:
            a, b = file.tensors[key].shape, file.tensors[by_module[module, "B"]].shape
            if len(a) == 2 and len(b) == 2 and a[0] != b[1]:
                ranks.append(f"{module} (A rank {a[0]}, B rank {b[1]})")
            elif len(a) == 2 and a[0] == 0:
                ranks.append(f"{module} (rank 0: a LoRA needs rank 1 or more)")
    error = key_problems(file.path, file.field, unknown, missing, wrong, ranks)
    if error:
        raise error
    if not named:
        raise key_problems(file.path, file.field, [], ["any LoRA matrix or delta"], [])
    _metadata_alpha(file)  # refuses what it cannot honour
    return fmt, named


def _shape_problem(role: str, shape: tuple[int, ...], target: torch.nn.Module) -> str | None:
    """Why a tensor of ``shape`` cannot be ``role`` of ``target``, or None."""
    weight, bias = getattr(target, "weight", None), getattr(target, "bias", None)
    if role in ("A", "B"):
        if not isinstance(target, torch.nn.Linear):
            return "LoRA matrices go on linear layers only"
        fits = len(shape) == 2 and (shape[1] == target.in_features if role == "A" else shape[0] == target.out_features)
        return None if fits else f"{list(shape)} for a {target.in_features} -> {target.out_features} layer"
    if role == "alpha":
        return None if len(shape) == 0 or shape == (1,) else f"alpha must be one number, got shape {list(shape)}"
    param = weight if role == "diff" else bias
    if not isinstance(param, torch.Tensor):
        return f"the layer has no {'weight' if role == 'diff' else 'bias'}"
    return None if tuple(shape) == tuple(param.shape) else f"{list(shape)} for a {list(param.shape)} parameter"


def _metadata_alpha(file: SafetensorsFile) -> float | None:
    """alpha / rank of a diffusers/PEFT file's ``lora_adapter_metadata`` (None: none given); an InputError for
    per-module patterns (not honoured)."""
    raw = file.metadata.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise file.error("its lora_adapter_metadata is not JSON") from None
    meta = {k.removeprefix("transformer."): v for k, v in meta.items()} if isinstance(meta, dict) else {}
    if meta.get("alpha_pattern") or meta.get("rank_pattern"):
        raise file.error("lora_adapter_metadata: per-module alpha_pattern / rank_pattern are not supported; save one "
                         "alpha and rank for the whole file")
    alpha, rank = meta.get("lora_alpha"), meta.get("r")
    if not isinstance(alpha, (int, float)) or not isinstance(rank, int) or rank < 1:
        return None
    return float(alpha) / rank


def stack_deltas(file: SafetensorsFile, tensors: dict[str, torch.Tensor], fmt: str,
                 named: dict[str, StackKey]) -> dict[str, torch.Tensor]:
    """The update of one file at scale 1, by the transformer parameter it adds to (``blocks.0.attn1.to_q.weight``),
    float32: B @ A * alpha / rank for each pair (diffusers' Wan converter folds alpha / rank into A and B for
    the ``kohya``/``wan`` formats), the full deltas as they are. ``named``: ``check_stack_file``'s keys."""
    deltas: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    if fmt == "diffusers":
        ratio = _metadata_alpha(file)
        alphas = {w.module: float(tensors[k].reshape(-1)[0]) for k, w in named.items() if w.role == "alpha"}
        for key, what in named.items():
            if what.role in ("A", "B"):
                pairs.setdefault(what.module, {})[what.role] = tensors[key].float()
        for module, pair in pairs.items():
            rank = pair["A"].shape[0]
            scale = alphas[module] / rank if module in alphas else (ratio if ratio is not None else 1.0)
            pair["A"] = pair["A"] * scale
    else:
        lora = {f"diffusion_model.{w.source}": tensors[k].float() for k, w in named.items() if w.role in ("A", "B", "alpha")}
        if lora:
            pairs = _converted_pairs(file, lora, named)
    for module, pair in sorted(pairs.items()):
        deltas[f"{module}.weight"] = pair["B"] @ pair["A"]  # [out, r] @ [r, in]
    for key, what in named.items():
        if what.role in ("diff", "diff_b"):
            name = f"{what.module}.{'weight' if what.role == 'diff' else 'bias'}"
            deltas[name] = deltas.get(name, 0) + tensors[key].float()
    return deltas


def _converted_pairs(file: SafetensorsFile, lora: dict[str, torch.Tensor],
                     named: dict[str, StackKey]) -> dict[str, dict[str, torch.Tensor]]:
    """diffusers' Wan converter on ``lora`` (original Wan names under ``diffusion_model.``); its output must
    name exactly the pairs of ``named``. module -> {"A", "B"}."""
    from diffusers import WanPipeline

    expected = {f"transformer.{w.module}.lora_{w.role}.weight" for w in named.values() if w.role in ("A", "B")}
    try:
        converted = WanPipeline.lora_state_dict(lora)
    except (KeyError, ValueError, RuntimeError) as e:
        raise file.error(f"diffusers' Wan LoRA converter refused it: {str(e)[:200]}") from None
    if set(converted) != expected:
        missed = sorted(expected ^ set(converted))
        raise key_problems(file.path, file.field, [], [], [f"diffusers converted the keys otherwise: {', '.join(missed[:5])}"])
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in converted.items():
        module, part = name.removeprefix("transformer.").rsplit(".lora_", 1)
        pairs.setdefault(module, {})[part[0]] = value.float()
    return pairs


def check_lora_stack(transformer: torch.nn.Module, loras: Sequence[LoraFile], *, values: bool, field: str = "loras") -> None:
    """Every check ``fuse_lora_stack`` makes, without touching ``transformer``; one InputError with a problem per
    bad file. ``values``: also read every value (NaN, infinities, |w| > ``MAX_WEIGHT_MAGNITUDE``)."""
    problems = []
    for i, lora in enumerate(loras):
        problems += weight_file_problems(Path(lora.path).expanduser(), f"{field}[{i}]",
                                         lambda file: check_stack_file(file, transformer), values=values)
    if problems:
        raise InputError(problems)


def fuse_lora_stack(transformer: torch.nn.Module, loras: Sequence[LoraFile], *, field: str = "loras") -> dict[str, int]:
    """Fuse ``loras`` into ``transformer``'s weights (module docstring), in their order; every file is checked
    and read (values too) before any weight changes. Returns parameter name -> how many files changed it."""
    updates: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for i, lora in enumerate(loras):
        file = open_weights(Path(lora.path).expanduser(), f"{field}[{i}]")
        fmt, named = check_stack_file(file, transformer)
        for name, delta in stack_deltas(file, read_weights(file), fmt, named).items():
            update = delta * float(lora.scale)
            updates[name] = updates[name] + update if name in updates else update
            counts[name] = counts.get(name, 0) + 1
    parameters = dict(transformer.named_parameters())
    with torch.no_grad():
        for name in sorted(updates):
            param = parameters[name]
            param.copy_((param.float() + updates[name].to(param.device)).to(param.dtype))
    return counts
