"""The scene spec's fields, declared once: accepted types, default and meaning of each.

``SPEC_FIELDS`` (top level) and ``MEMORY_FIELDS`` (the ``memory:`` section) are the one table the
checkers (``mirage_cli.spec.checks``), the example spec and the docs follow; ``MemorySettings`` is
the validated ``memory:`` section.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mirage_cli.base.options import (
    DEFAULT_DEPTH_MODEL,
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_MODEL,
    DEFAULT_RESOLUTION,
    MAX_CHUNK_FRAMES,
    MemoryMode,
    PinMode,
)
from mirage_cli.camera.intrinsics import DEFAULT_VERTICAL_FOV_DEG
from mirage_cli.depth.scene_scale import DEFAULT_METRIC_DEPTH_MODEL

_NONE = type(None)


@dataclass(frozen=True)
class FieldSpec:
    """One spec field: its accepted Python types, default and a one-line description."""

    types: tuple
    default: Any
    doc: str
    required: bool = False


SPEC_FIELDS: dict[str, FieldSpec] = {
    "prompt": FieldSpec((str,), None, "text prompt", required=True),
    "negative_prompt": FieldSpec((str, _NONE), None, "negative prompt (null: the method's: Wan2.2's for pin, empty for vace)"),
    "prompts": FieldSpec((list, str, _NONE), None, "prompts by chunk: a list (one per chunk, the last one continues), "
                         "a list of {frame, prompt} (from that frame on, a chunk's first frame), or a text file with one prompt per line "
                         "(Spatia's prompt.txt); null: `prompt` for every chunk"),
    "image": FieldSpec((str,), None, "start image path, relative to the spec file", required=True),
    "depth": FieldSpec((str, _NONE), None, "start-image z-depth (.npy float32 or 16-bit PNG)"),
    "depth_scale": FieldSpec((int, float, _NONE), None, "scene units per step of a 16-bit depth PNG (null: 0.001); "
                             "refused beside a .npy depth, which holds scene units"),
    "mask": FieldSpec((str, _NONE), None, "PNG mask of what to keep out of memory (nonzero = keep out)"),
    "camera": FieldSpec((dict,), None, "the camera path: exactly one of keyframes, trajectory, preset, colmap, "
                        "realestate10k, nerfstudio, json, spatia, video (a clip whose path pycolmap estimates; "
                        "samples: frames it uses, default 48)", required=True),
    "intrinsics": FieldSpec(
        (dict, str, _NONE),
        None,
        f"{{fov: deg}} or {{fx, fy, cx, cy}} at the render size, or auto / {{auto: model}} (the start image's focal length "
        f"estimated by DepthPro) (null: the source's, else fov {DEFAULT_VERTICAL_FOV_DEG:g})",
    ),
    "frames": FieldSpec((int,), DEFAULT_FRAMES, "number of output frames, 4k+1"),
    "fps": FieldSpec((int, float), DEFAULT_FPS, "output frame rate"),
    "resolution": FieldSpec((str, list, dict), "{}x{}".format(*DEFAULT_RESOLUTION), "WIDTHxHEIGHT, multiples of 32"),
    "chunk_frames": FieldSpec((int, _NONE), None, f"frames per chunk, 4k+1 (null: the method's, at most frames: "
                              f"{MAX_CHUNK_FRAMES} for pin, 33 for vace)"),
    "steps": FieldSpec((int, _NONE), None, "denoising steps per chunk (null: the method's: 50 for pin, 20 for vace)"),
    "guidance": FieldSpec((int, float, _NONE), None, "classifier-free guidance scale, 1 = off (null: the method's: 5 for pin, "
                          "1 for vace)"),
    "shift": FieldSpec((int, float, _NONE), None, "flow shift of the UniPC scheduler (null: the method's: 5)"),
    "seed": FieldSpec((int,), 0, "random seed (chunk c draws its noise from (seed, c))"),
    "model": FieldSpec((str,), DEFAULT_MODEL, "diffusers model id or local directory"),
    "memory": FieldSpec((dict, _NONE), None, "the memory settings (the memory.* fields)"),
    "conditioning": FieldSpec((dict, _NONE), None, "how the memory conditions a chunk (the conditioning.* fields)"),
    "step_cache": FieldSpec((dict, _NONE), None, "a diffusers step cache (the step_cache.* fields)"),
    "sampler": FieldSpec((str, dict, _NONE), None, "unipc | dmd (few-step, for DMD-distilled models: FastWan2.2, "
                         "Wan2.2-TI2V-5B-Turbo) | {name: dmd, timesteps: [...], shift: 8}; null: dmd for a model that "
                         "says it is DMD-distilled, else unipc"),
    "loras": FieldSpec((list, _NONE), None, "LoRAs fused into the DiT at load, in order: paths or {path, scale} "
                       "(diffusers/PEFT, kohya/ComfyUI or original Wan names)"),
    "depth_model": FieldSpec((str, _NONE), None, f"transformers depth model id/dir, none, or tiny (random weights, for CPU "
                             f"demos) (null: {DEFAULT_DEPTH_MODEL}; a metric model for a path in metres without `depth:`, "
                             f"{DEFAULT_METRIC_DEPTH_MODEL}; tiny with --preset tiny)"),
    "from": FieldSpec((str, _NONE), None, "RUN or RUN@CHUNK: a branch, which starts from that run's state after chunk CHUNK "
                      "(without @CHUNK: its last finished chunk) instead of rendering the first chunks again; RUN relative to the "
                      "spec's folder; --from replaces it"),
    "output": FieldSpec((str, _NONE), None, "run directory, relative to the spec's folder (null: runs/<spec file stem> in "
                         "the spec's folder)"),
}
"""The spec's top-level fields."""

MEMORY_FIELDS: dict[str, FieldSpec] = {
    "mode": FieldSpec((str,), MemoryMode.LATENT.value, " | ".join(MemoryMode.values())),
    "pin": FieldSpec((str,), PinMode.CLEAN.value, " | ".join(PinMode.values())),
    "pin_until": FieldSpec((int, float), 1.0, "fraction of steps during which memory is pinned"),
    "voxel_size": FieldSpec((int, float, _NONE), None, "fusion voxel size (null: from the cell footprint)"),
    "capacity": FieldSpec((int, _NONE), None, "max cached points (null: unbounded)"),
    "occlusion_filter": FieldSpec((bool,), True, "drop cells far behind their 3x3 neighbourhood"),
    "dynamic_threshold": FieldSpec((int, float, _NONE), 0.5, "dynamic-region residual threshold (null: off)"),
}
"""The fields of the spec's ``memory:`` section."""


@dataclass(frozen=True)
class MemorySettings:
    """The spec's ``memory:`` section, validated (``MEMORY_FIELDS`` documents each field)."""

    mode: MemoryMode
    pin: PinMode
    pin_until: float
    voxel_size: float | None
    capacity: int | None
    occlusion_filter: bool
    dynamic_threshold: float | None

    @classmethod
    def from_fields(cls, values: dict) -> MemorySettings:
        """From type-checked ``MEMORY_FIELDS`` values (see ``check_memory`` for the range checks)."""

        def number(name: str) -> float | None:
            return None if values[name] is None else float(values[name])

        return cls(
            mode=MemoryMode(values["mode"]),
            pin=PinMode(values["pin"]),
            pin_until=float(values["pin_until"]),
            voxel_size=number("voxel_size"),
            capacity=values["capacity"],
            occlusion_filter=values["occlusion_filter"],
            dynamic_threshold=number("dynamic_threshold"),
        )

    @classmethod
    def default(cls) -> MemorySettings:
        """The defaults of ``MEMORY_FIELDS``."""
        return cls.from_fields({name: spec.default for name, spec in MEMORY_FIELDS.items()})

    def summary(self) -> dict:
        """Plain values (enums as strings)."""
        return {k: (v.value if isinstance(v, (MemoryMode, PinMode)) else v) for k, v in asdict(self).items()}
