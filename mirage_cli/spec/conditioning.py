"""The spec's ``conditioning:`` section: how the memory conditions each chunk.

``method: pin`` (default) is the training-free conditioning: memory-covered latent cells held on
their warped values while denoising (``mirage_cli.denoise.loop``). ``method: vace`` is the Mirage paper's
trained conditioning: the warped memory goes through a VACE control branch trained with the official
code (``vace:``, a safetensors file) and the DiT usually carries a LoRA trained with it (``lora:``,
``lora_scale:``); see ``mirage_cli.conditioning.recipes``. It needs a memory (``memory.mode`` latent, the paper's;
or rgb, Spatia's RGB memory encoded by the VAE). Paths are relative to the spec's folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mirage_cli.base.errors import ProblemList, did_you_mean
from mirage_cli.spec.checks import valid
from mirage_cli.spec.fields import _NONE, FieldSpec

METHODS = ("pin", "vace")

CONDITIONING_FIELDS: dict[str, FieldSpec] = {
    "method": FieldSpec((str,), "pin", "pin (training-free: memory cells held) | vace (trained VACE branch)"),
    "vace": FieldSpec((str, _NONE), None, "VACE weights (.safetensors, the official training export); needed by vace"),
    "lora": FieldSpec((str, _NONE), None, "a LoRA of the DiT (.safetensors, the official training export), or null"),
    "lora_scale": FieldSpec((int, float), 1.0, "weight of the LoRA's update"),
}
"""The fields of the spec's ``conditioning:`` section."""


@dataclass(frozen=True)
class ConditioningSettings:
    """The spec's ``conditioning:`` section, validated: ``method``, ``vace`` / ``lora`` (resolved paths
    or None), ``lora_scale``."""

    method: str = "pin"
    vace: Path | None = None
    lora: Path | None = None
    lora_scale: float = 1.0

    def summary(self) -> dict:
        return {"method": self.method, "vace": None if self.vace is None else str(self.vace),
                "lora": None if self.lora is None else str(self.lora), "lora_scale": self.lora_scale}


def _path(value, base_dir: Path, name: str, problems: ProblemList) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        problems.add(f"conditioning.{name}", f"not found (or not a file): {path}")
        return None
    if path.suffix != ".safetensors":
        problems.add(f"conditioning.{name}", f"expected a .safetensors file (pickled weights are refused), got {path.name}")
        return None
    return path


def check_conditioning(values: dict, memory_mode: str | None, base_dir: Path, problems: ProblemList) -> ConditioningSettings | None:
    """Choices, files and ranges of the type-checked ``conditioning:`` values; the settings, or None."""
    start = len(problems.items)
    method = values["method"]
    if valid(method) and method not in METHODS:
        problems.add("conditioning.method", f"must be one of {', '.join(METHODS)}, got {method!r}{did_you_mean(method, METHODS)}")
    vace = _path(values["vace"], base_dir, "vace", problems) if valid(values["vace"]) else None
    lora = _path(values["lora"], base_dir, "lora", problems) if valid(values["lora"]) else None
    if method == "vace" and values["vace"] is None:
        problems.add("conditioning.vace", "method vace needs the VACE weights: give conditioning.vace (or --vace PATH)")
    if method == "pin" and values["vace"] is not None:
        problems.add("conditioning.vace", "VACE weights are used by method vace only: set conditioning.method: vace "
                                          "(or --conditioning vace)")
    if method == "vace" and memory_mode == "none":
        problems.add("conditioning.method", "vace conditions on the memory: use memory.mode latent or rgb")
    scale = values["lora_scale"]
    if valid(scale) and not (math.isfinite(float(scale)) and -10.0 <= float(scale) <= 10.0):
        problems.add("conditioning.lora_scale", f"must be between -10 and 10, got {scale}")
    if len(problems.items) > start or not valid(*values.values()):
        return None
    return ConditioningSettings(method, vace, lora, float(scale))
