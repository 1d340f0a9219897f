"""Reading trained weights written by the official Mirage code (and Spatia's), and their names.

Both train Wan2.2-TI2V-5B with DiffSynth-Studio, which names the DiT's parameters after the original
Wan release (``blocks.3.self_attn.q``, ``ffn.0``, ``modulation``); diffusers names the same tensors
otherwise (``blocks.3.attn1.to_q``, ``ffn.net.0.proj``, ``scale_shift_table``). The renames below are
facts of the two layouts (diffusers' own ``scripts/convert_wan_to_diffusers.py`` uses the same): the
cross-attention's LayerNorm is DiffSynth's ``norm3`` and diffusers' ``norm2``; DiffSynth's ``norm1``
and ``norm2`` carry no parameters. A VACE block's input and output projections are ``before_proj``
and ``after_proj`` in DiffSynth, ``proj_in`` and ``proj_out`` in diffusers.

Only safetensors files are read, through the guarded reader (``mirage_cli.base.safetensors_file``): a
pickled torch file can run code when it is loaded. Every tensor must be floating point, and is checked
as it is read: a value that is not finite, or a magnitude no trained layer holds
(``limits.MAX_WEIGHT_MAGNITUDE``), refuses the file before anything renders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.limits import MAX_WEIGHT_MAGNITUDE
from mirage_cli.base.safetensors_file import FLOAT_DTYPES, SafetensorsFile, open_safetensors

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


def weight_file_problems(path: Path, field: str, check: Callable[[SafetensorsFile], None] | None, *, values: bool) -> list:
    """The problems of one trained-weights file: its header (``open_weights``), ``check`` (keys and shapes
    against the model, when given) and, with ``values``, every value (NaN, infinities, |w| beyond
    ``MAX_WEIGHT_MAGNITUDE``); an empty list when it is fine."""
    try:
        file = open_weights(path, field)
        if check is not None:
            check(file)
        why = file.value_problem(MAX_WEIGHT_MAGNITUDE) if values else None
        if why:
            raise file.error(why)
    except InputError as e:
        return list(e.problems)
    return []


def open_weights(path: Path, field: str) -> SafetensorsFile:
    """The checked header of a trained-weights file (``mirage_cli.base.safetensors_file``: regular file,
    size, header, dtypes and offsets; a pickle is refused, never unpickled), whose tensors are all floating
    point; an InputError naming the file, ``field`` (the option or spec field that gave it) and the tensor."""
    file = open_safetensors(path, field)
    if not file.tensors:
        raise file.error("holds no tensors")
    wrong = [f"{name} ({entry.dtype})" for name, entry in file.tensors.items() if not entry.is_float]
    if wrong:
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise file.error(f"tensor{'s' if len(wrong) > 1 else ''} {', '.join(wrong[:3])}{more}: trained weights are stored "
                         f"as {', '.join(FLOAT_DTYPES)}, not as integers, booleans or fp8")
    return file


def read_weights(file: SafetensorsFile) -> dict[str, torch.Tensor]:
    """Every tensor of ``file`` on the CPU, each refused as it is read when it holds a NaN, an infinity or a
    magnitude beyond ``MAX_WEIGHT_MAGNITUDE`` (InputError naming the file, the field and the tensor)."""
    return file.read_all(MAX_WEIGHT_MAGNITUDE)


def key_problems(path: Path, field: str, unknown: list[str], missing: list[str], wrong_shape: list[str],
                 wrong_rank: list[str] = ()) -> InputError | None:
    """One InputError with one problem (one line) naming up to five keys of each kind that is wrong, or
    None when nothing is."""
    parts = []
    for what, keys in (("unknown key", unknown), ("missing key", missing), ("wrong shape", wrong_shape),
                       ("wrong rank", wrong_rank)):
        if keys:
            more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
            parts.append(f"{what}{'s' if len(keys) > 1 else ''}: {', '.join(keys[:5])}{more}")
    return InputError(Problem(file=str(path), field=field, message="; ".join(parts))) if parts else None
