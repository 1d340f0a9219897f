"""The spec's ``conditioning:`` section: how the memory conditions each chunk.

``method: pin`` (default) is the training-free conditioning: memory-covered latent cells held on
their warped values while denoising (``mirage_cli.denoise.loop``). ``method: vace`` is the Mirage paper's
trained conditioning: the warped memory goes through a VACE control branch trained with the official
code (``vace:``, a safetensors file) and the DiT usually carries a LoRA trained with it (``lora:``,
``lora_scale:``); see ``mirage_cli.conditioning.recipes``. It needs a memory (``memory.mode`` latent, the paper's;
or rgb, Spatia's RGB memory encoded by the VAE). ``method: spatia`` is Spatia's own recipe for its
weights (``mirage_cli.conditioning.spatia``): the RGB memory (``memory.mode rgb``) rendered on black
with a hole-score video, history frames and reference images, the LoRA from the second chunk on.
Paths are relative to the spec's folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mirage_cli.backbone.configs import SPATIA_NEGATIVE_PROMPT
from mirage_cli.base.errors import ProblemList, did_you_mean
from mirage_cli.base.files import file_problem
from mirage_cli.base.limits import MAX_WEIGHTS_BYTES
from mirage_cli.base.options import MAX_CHUNK_FRAMES, Projection
from mirage_cli.spec.checks import valid
from mirage_cli.spec.fields import _NONE, FieldSpec

METHODS = ("pin", "vace", "spatia")


@dataclass(frozen=True)
class MethodDefaults:
    """The sampling settings a method renders with where the spec and the flags leave them unset: the
    settings its weights were run with by their authors (``source``)."""

    chunk_frames: int
    """Frames per chunk (at most the video's ``frames``)."""
    steps: int
    guidance: float
    negative_prompt: str | None
    """None: Wan2.2's own negative prompt."""
    shift: float
    projection: Projection
    """How the latent memory is rendered into the chunk's views."""
    source: str
    """Whose inference the values are taken from."""
    first_chunk_frames: int | None = None
    """Frames of chunk 0 when it differs from the later chunks' (None: ``chunk_frames``)."""


METHOD_DEFAULTS: dict[str, MethodDefaults] = {
    # Wan2.2's TI2V-5B inference settings (its generate.py config for ti2v-5B and diffusers' WanPipeline):
    # 121 frames, 50 UniPC steps, guidance 5, shift 5, its Chinese negative prompt.
    "pin": MethodDefaults(MAX_CHUNK_FRAMES, 50, 5.0, None, 5.0, Projection.FOOTPRINT, "Wan2.2-TI2V-5B's own inference settings"),
    # The official Mirage inference (microsoft/LatentSpatialMemory, mirage_pipeline.py): 33 target frames a
    # chunk as in training, 20 steps, no classifier-free guidance, an empty negative prompt, shift 5; the
    # memory rendered by nearest cell (its LatentPointCloud.project), in training and at inference.
    "vace": MethodDefaults(33, 20, 1.0, "", 5.0, Projection.NEAREST, "the official Mirage inference (microsoft/LatentSpatialMemory)"),
    # Spatia's inference (ZhaoJingjing713/Spatia, inference.py): a first round of 121 frames, then rounds of
    # 81 frames whose first 9 are the last generated ones (72 new frames: chunks of 73 frames here, which
    # share their first frame with the chunk before), 40 UniPC steps, guidance 3.5 with its negative prompt,
    # shift 5; its memory is an RGB point cloud (memory.mode rgb), rendered with footprints.
    "spatia": MethodDefaults(73, 40, 3.5, SPATIA_NEGATIVE_PROMPT, 5.0, Projection.FOOTPRINT,
                             "Spatia's inference (ZhaoJingjing713/Spatia)", first_chunk_frames=121),
}
"""Each method's defaults for the ``METHOD_DEFAULTED`` spec fields."""

TRAINED_METHODS = ("vace", "spatia")
"""The methods that run a trained VACE branch (``conditioning.vace`` needed)."""

METHOD_DEFAULTED = ("chunk_frames", "steps", "guidance", "negative_prompt", "shift")
"""The spec fields whose default is the conditioning method's (``METHOD_DEFAULTS``)."""


def method_of(section) -> str:
    """The conditioning method a spec's raw ``conditioning:`` section names (``pin`` when it names none,
    or names one that does not exist: ``check_conditioning`` reports that)."""
    method = section.get("method") if isinstance(section, dict) else None
    return method if isinstance(method, str) and method in METHODS else "pin"


def fill_method_defaults(values: dict, given: dict, flags: dict | None) -> tuple[dict, dict, MethodDefaults]:
    """``values`` (the checked spec fields, overrides applied) with each unset ``METHOD_DEFAULTED`` field
    but ``chunk_frames`` set to its method's default (``chunk_frames`` stays None: ``check_frames`` takes
    the default, bounded by ``frames``); where each of those fields' values comes from (``spec``,
    ``flag`` or ``method <name> default``); the method's defaults. ``given``: the spec file's own
    fields; ``flags``: the command line's overrides (None values not given)."""
    method = method_of(values.get("conditioning"))
    defaults = METHOD_DEFAULTS[method]
    out = dict(values)
    origins = {}
    for name in METHOD_DEFAULTED:
        if (flags or {}).get(name) is not None:
            origins[name] = "flag"
        elif given.get(name) is not None:
            origins[name] = "spec"
        else:
            origins[name] = f"method {method} default"
            if name != "chunk_frames":
                out[name] = getattr(defaults, name)
    return out, origins, defaults

CONDITIONING_FIELDS: dict[str, FieldSpec] = {
    "method": FieldSpec((str,), "pin", "pin (training-free: memory cells held) | vace (trained VACE branch, the Mirage "
                        "recipe) | spatia (Spatia's VACE weights with its own recipe, memory.mode rgb); each method "
                        "has its own defaults for chunk_frames, steps, guidance, negative_prompt and shift (METHOD_DEFAULTS)"),
    "vace": FieldSpec((str, _NONE), None, "VACE weights (.safetensors, the official training export); needed by vace and spatia"),
    "lora": FieldSpec((str, _NONE), None, "a LoRA of the DiT (.safetensors, the official training export), or null"),
    "lora_scale": FieldSpec((int, float), 1.0, "weight of the LoRA's update"),
    "projection": FieldSpec((str, _NONE), None, "how the latent memory is rendered into a chunk's views: nearest (each "
                            "point to its nearest cell, holes left empty: what the official Mirage code trains with) | "
                            "footprint (splats sized by each point's footprint, few holes) (null: the method's: nearest "
                            "for vace, footprint for pin; footprint for memory.mode rgb)"),
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
    projection: Projection = Projection.FOOTPRINT
    """How the latent memory is rendered into a chunk's views (``LatentSpatialMemory.query``)."""

    def summary(self) -> dict:
        return {"method": self.method, "vace": None if self.vace is None else str(self.vace),
                "lora": None if self.lora is None else str(self.lora), "lora_scale": self.lora_scale,
                "projection": self.projection.value}


def _path(value, base_dir: Path, name: str, problems: ProblemList) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    why = file_problem(path, MAX_WEIGHTS_BYTES)
    if why is not None:
        problems.add(f"conditioning.{name}", f"{path}: {why}")
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
    if method in TRAINED_METHODS and values["vace"] is None:
        problems.add("conditioning.vace", f"method {method} needs the VACE weights: give conditioning.vace (or --vace PATH)")
    if method == "pin" and values["vace"] is not None:
        problems.add("conditioning.vace", "VACE weights are used by the trained methods only: set conditioning.method: vace "
                                          "or spatia (or --conditioning vace)")
    if method == "vace" and memory_mode == "none":
        problems.add("conditioning.method", "vace conditions on the memory: use memory.mode latent or rgb")
    if method == "spatia" and memory_mode not in (None, "rgb"):
        problems.add("conditioning.method", f"spatia renders an RGB point memory as its weights were trained on: use memory.mode "
                                            f"rgb, got {memory_mode}")
    projection = values["projection"]
    if valid(projection) and projection is not None and projection not in Projection.values():
        problems.add("conditioning.projection", f"must be one of {', '.join(Projection.values())}, got {projection!r}"
                                                f"{did_you_mean(projection, Projection.values())}")
    if projection is not None and memory_mode == "none":
        problems.add("conditioning.projection", "memory.mode none has no memory to project: leave projection unset")
    elif projection == Projection.NEAREST.value and memory_mode == "rgb":
        problems.add("conditioning.projection", "nearest renders the latent memory; memory.mode rgb renders its points as pixels "
                                                "with footprints: use memory.mode latent, or projection footprint")
    scale = values["lora_scale"]
    if valid(scale) and not (math.isfinite(float(scale)) and -10.0 <= float(scale) <= 10.0):
        problems.add("conditioning.lora_scale", f"must be between -10 and 10, got {scale}")
    if len(problems.items) > start or not valid(*values.values()):
        return None
    if projection is None:
        projection = METHOD_DEFAULTS[method].projection if memory_mode == "latent" else Projection.FOOTPRINT
    return ConditioningSettings(method, vace, lora, float(scale), Projection(projection))
