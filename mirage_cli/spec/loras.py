"""The spec's ``loras:`` list: speed and style LoRAs fused into the DiT at load, in their order
(``mirage_cli.backbone.lora_stack``), after the trained memory LoRA (``conditioning.lora``).

Each item is a path (scale 1) or ``{path: x.safetensors, scale: 0.5}``; paths are relative to the spec's
folder. On the command line ``--lora FILE[:SCALE]`` (repeatable) gives the whole list, replacing the spec's.
"""

from __future__ import annotations

import math
from pathlib import Path

from mirage_cli.backbone.lora_stack import LoraFile
from mirage_cli.base.errors import InputError, ProblemList
from mirage_cli.base.files import file_problem
from mirage_cli.base.limits import MAX_WEIGHTS_BYTES

MAX_LORAS = 16
"""LoRAs in one stack (more is a mistake, not a stack)."""
MAX_SCALE = 10.0
"""|scale| of one LoRA (as ``conditioning.lora_scale``)."""


def parse_lora_flag(value: str) -> dict:
    """``--lora FILE[:SCALE]`` -> ``{"path": FILE, "scale": SCALE}`` (a trailing ``:number`` is the scale;
    the path is made absolute against the working directory). InputError (field ``lora``) for a bad scale."""
    path, sep, tail = value.rpartition(":")
    if not sep or not path or "/" in tail or tail.endswith(".safetensors"):
        path, tail = value, None
    scale = 1.0
    if tail is not None:
        try:
            scale = float(tail)
        except ValueError:
            raise InputError(f"{value}: expected FILE or FILE:SCALE, the scale a number, got {tail!r}", field="lora") from None
    return {"path": str(Path(path).expanduser().absolute()), "scale": scale}


def lora_stack(flags: list[str] | None) -> list[dict] | None:
    """The ``loras:`` a repeated ``--lora FILE[:SCALE]`` gives (None: not given, the spec's list stands)."""
    return [parse_lora_flag(flag) for flag in flags] if flags else None


def check_loras(value, base_dir: Path, problems: ProblemList) -> tuple[LoraFile, ...]:
    """The checked ``loras:`` list (files regular ``.safetensors`` within the size bound, scales finite and
    within +-``MAX_SCALE``); problems named ``loras[i]`` / ``loras[i].scale``."""
    if value is None:
        return ()
    if len(value) > MAX_LORAS:
        problems.add("loras", f"at most {MAX_LORAS} LoRAs in a stack, got {len(value)}")
        return ()
    out = []
    for i, item in enumerate(value):
        name = f"loras[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or set(item) - {"path", "scale"}:
            problems.add(name, "expected a path or {path: FILE, scale: NUMBER}")
            continue
        scale = item.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or abs(scale) > MAX_SCALE:
            problems.add(f"{name}.scale", f"must be a number between -{MAX_SCALE:g} and {MAX_SCALE:g}, got {scale!r}")
            continue
        path = Path(item["path"]).expanduser()
        path = path if path.is_absolute() else base_dir / path
        why = file_problem(path, MAX_WEIGHTS_BYTES)
        if why is not None:
            problems.add(name, f"{path}: {why}")
        elif path.suffix != ".safetensors":
            problems.add(name, f"expected a .safetensors file (pickled weights are refused), got {path.name}")
        else:
            out.append(LoraFile(path, float(scale)))
    return tuple(out)
