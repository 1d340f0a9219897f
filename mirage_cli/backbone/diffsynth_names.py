"""Reading trained weights written by the official Mirage code (and Spatia's), and their names.

Both train Wan2.2-TI2V-5B with DiffSynth-Studio, which names the DiT's parameters after the original
Wan release (``blocks.3.self_attn.q``, ``ffn.0``, ``modulation``); diffusers names the same tensors
otherwise (``blocks.3.attn1.to_q``, ``ffn.net.0.proj``, ``scale_shift_table``). The renames below are
facts of the two layouts (diffusers' own ``scripts/convert_wan_to_diffusers.py`` uses the same): the
cross-attention's LayerNorm is DiffSynth's ``norm3`` and diffusers' ``norm2``; DiffSynth's ``norm1``
and ``norm2`` carry no parameters. A VACE block's input and output projections are ``before_proj``
and ``after_proj`` in DiffSynth, ``proj_in`` and ``proj_out`` in diffusers.

Only safetensors files are read: a pickled torch file can run code when it is loaded. Every
tensor read is checked (``weight_problems``): a value that is not finite, or a magnitude no trained
layer holds, refuses the file before anything renders.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mirage_cli.base.errors import InputError, Problem

# (DiffSynth name, diffusers name) of the modules inside one DiT or VACE block.
BLOCK_MODULES = (
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("before_proj", "proj_in"),
    ("after_proj", "proj_out"),
)
BLOCK_PARAMETERS = (("modulation", "scale_shift_table"),)
"""Parameters held by a block itself (not by a module inside it)."""

_MODULE_NAMES = dict(BLOCK_MODULES)


def block_name(rest: str) -> str | None:
    """The diffusers name of ``rest`` (a module or parameter path inside one block, DiffSynth naming,
    e.g. ``self_attn.q.weight`` or ``modulation``), or None when it names nothing diffusers has."""
    for old, new in BLOCK_PARAMETERS:
        if rest == old:
            return new
    for old, new in sorted(BLOCK_MODULES, key=lambda pair: -len(pair[0])):
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return None


def module_name(rest: str) -> str | None:
    """The diffusers name of a module inside a block (``self_attn.q`` -> ``attn1.to_q``), or None."""
    return _MODULE_NAMES.get(rest)


def strip_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    """``key`` without any of ``prefixes`` at its start, repeatedly (``module.vace.x`` -> ``x``)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


BLOCK_KEY = re.compile(r"^(?P<group>blocks|vace_blocks)\.(?P<index>\d+)\.(?P<rest>.+)$")


def read_safetensors(path: Path, field: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path`` on the CPU; an InputError naming the file and
    ``field`` (the option or spec field that gave it) when it is missing, not safetensors (a pickle is
    refused, and said so), truncated or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(Problem(file=str(path), field=field, message="no such file"))
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl") or head[:2] in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04"):
        raise InputError(Problem(file=str(path), field=field, message=(
            "is a pickled torch file; only .safetensors weights are read (loading a pickle can run code). "
            "Convert it once where you trust it: safetensors.torch.save_file(state_dict, 'weights.safetensors')")))
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(Problem(file=str(path), field=field, message=f"is not a readable safetensors file ({why})")) from None
    problems = weight_problems(tensors, path, field)
    if problems:
        raise InputError(problems)
    return tensors


MAX_WEIGHT_MAGNITUDE = 1e4
"""The largest |value| a trained weight of these layers may hold. Trained Wan2.2 weights, VACE
branches and LoRA matrices stay far below it (their largest values are in the tens); a value
beyond it comes from a damaged file or one that holds something other than weights."""


def weight_problems(tensors: dict[str, torch.Tensor], path: Path, field: str) -> list[Problem]:
    """One problem per floating-point tensor of ``tensors`` with a NaN or an infinity, or a value beyond
    ``MAX_WEIGHT_MAGNITUDE`` (up to five, naming the file, ``field`` and the tensor)."""
    problems = []
    for key, value in tensors.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            problems.append(f"tensor {key}: {bad} of {value.numel()} values are NaN or infinite")
            continue
        largest = float(value.abs().amax())
        if largest > MAX_WEIGHT_MAGNITUDE:
            problems.append(f"tensor {key}: holds {largest:.3g}, beyond any trained weight (|value| <= {MAX_WEIGHT_MAGNITUDE:g})")
    if len(problems) > 5:
        problems = problems[:5] + [f"and {len(problems) - 5} more tensors"]
    return [Problem(file=str(path), field=field, message=text) for text in problems]


def key_problems(path: Path, field: str, unknown: list[str], missing: list[str], wrong_shape: list[str]) -> InputError | None:
    """One InputError naming (up to five of) each kind of bad key, or None when there are none."""
    problems = []
    for what, keys in (("unknown key", unknown), ("missing key", missing), ("wrong shape", wrong_shape)):
        if keys:
            more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
            problems.append(Problem(file=str(path), field=field, message=f"{what}{'s' if len(keys) > 1 else ''}: "
                                    f"{', '.join(keys[:5])}{more}"))
    return InputError(problems) if problems else None
