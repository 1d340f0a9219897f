"""Scene spec: a YAML file -> a validated, resolved ``Plan`` (paths, frames, chunks, camera path).

Every field's accepted types, default and meaning are declared once, in ``SPEC_FIELDS`` and
``MEMORY_FIELDS`` below; ``examples/room/scene.yaml`` shows each of them with a comment for users
(``tests/test_spec.py`` checks that it lists every field).

Validation happens before anything heavy and reports *every* problem it finds, each naming the
spec file, the field (with its YAML line) and what is wrong; the caller gets one ``InputError``
(exit 2). Nothing is silently corrected. ``load_plan`` runs one checker per concern (fields and
types, frame counts, numbers, resolution, memory settings, files, camera), each usable alone with
a ``ProblemList``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirage_cli.camera.intrinsics import DEFAULT_VERTICAL_FOV_DEG
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.errors import InputError, ProblemList, did_you_mean
from mirage_cli.options import (
    DEFAULT_DEPTH_MODEL,
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_MODEL,
    DEFAULT_RESOLUTION,
    MAX_CHUNK_FRAMES,
    MemoryMode,
    PinMode,
)
from mirage_cli.yaml_lines import load_yaml_with_lines

_MISSING = object()
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
    "negative_prompt": FieldSpec((str, _NONE), None, "negative prompt (null: Wan2.2's default)"),
    "image": FieldSpec((str,), None, "start image path, relative to the spec file", required=True),
    "depth": FieldSpec((str, _NONE), None, "start-image z-depth (.npy float32 or 16-bit PNG)"),
    "depth_scale": FieldSpec((int, float), 0.001, "scene units per step of a 16-bit depth PNG"),
    "mask": FieldSpec((str, _NONE), None, "PNG mask of what to keep out of memory (nonzero = keep out)"),
    "camera": FieldSpec((dict,), None, "camera source (exactly one; mirage_cli/camera/source.py)", required=True),
    "intrinsics": FieldSpec(
        (dict, _NONE),
        None,
        f"{{fov: deg}} or {{fx, fy, cx, cy}} at the render size (null: the source's, else fov {DEFAULT_VERTICAL_FOV_DEG:g})",
    ),
    "frames": FieldSpec((int,), DEFAULT_FRAMES, "number of output frames, 4k+1"),
    "fps": FieldSpec((int, float), DEFAULT_FPS, "output frame rate"),
    "resolution": FieldSpec((str, list, dict), "{}x{}".format(*DEFAULT_RESOLUTION), "WIDTHxHEIGHT, multiples of 32"),
    "chunk_frames": FieldSpec((int, _NONE), None, f"frames per chunk, 4k+1 (null: min({MAX_CHUNK_FRAMES}, frames))"),
    "steps": FieldSpec((int,), 50, "denoising steps per chunk"),
    "guidance": FieldSpec((int, float), 5.0, "classifier-free guidance scale"),
    "shift": FieldSpec((int, float), 5.0, "flow shift of the UniPC scheduler"),
    "seed": FieldSpec((int,), 0, "random seed (chunk c draws its noise from (seed, c))"),
    "model": FieldSpec((str,), DEFAULT_MODEL, "diffusers model id or local directory"),
    "memory": FieldSpec((dict, _NONE), None, "memory settings (MEMORY_FIELDS)"),
    "depth_model": FieldSpec((str,), DEFAULT_DEPTH_MODEL, "transformers depth model id/dir, or none"),
    "output": FieldSpec((str, _NONE), None, "run directory (null: runs/<spec file stem>)"),
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


@dataclass(frozen=True)
class Chunk:
    """One chunk of the rollout: pixel frames ``[start, end]`` inclusive of the video.

    Chunk 0 starts at frame 0; each later chunk starts at the previous chunk's last frame (its
    latent frame 0 is the previous chunk's last latent), so it adds ``end - start`` new frames.
    """

    index: int
    start: int
    end: int

    @property
    def num_frames(self) -> int:
        return self.end - self.start + 1

    @property
    def num_latent_frames(self) -> int:
        return (self.num_frames - 1) // 4 + 1

    def latent_camera_frames(self) -> list[int]:
        """Video frame index of the camera of each latent frame: latent k uses its last pixel frame."""
        return [self.start + 4 * k for k in range(self.num_latent_frames)]


@dataclass(frozen=True)
class Plan:
    """A validated scene spec with every path resolved and the camera path sampled."""

    spec_path: Path
    prompt: str
    negative_prompt: str | None
    image_path: Path
    depth_path: Path | None
    depth_scale: float
    mask_path: Path | None
    trajectory: Trajectory
    camera_source: str
    frames: int
    fps: float
    width: int
    height: int
    chunk_frames: int
    chunks: tuple[Chunk, ...]
    steps: int
    guidance: float
    shift: float
    seed: int
    model: str
    memory: MemorySettings
    depth_model: str
    output: Path

    def summary(self) -> dict:
        """The resolved plan as a JSON-able dict (what ``mirage validate --json`` prints)."""
        pos = self.trajectory.positions
        return {
            "spec": str(self.spec_path),
            "frames": self.frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "chunk_frames": self.chunk_frames,
            "chunks": [[c.start, c.end] for c in self.chunks],
            "camera_source": self.camera_source,
            "first_camera_position": [round(float(v), 6) for v in pos[0]],
            "last_camera_position": [round(float(v), 6) for v in pos[-1]],
            "image": str(self.image_path),
            "depth": str(self.depth_path) if self.depth_path else None,
            "mask": str(self.mask_path) if self.mask_path else None,
            "prompt": self.prompt,
            "steps": self.steps,
            "guidance": self.guidance,
            "shift": self.shift,
            "seed": self.seed,
            "model": self.model,
            "memory": self.memory.summary(),
            "depth_model": self.depth_model,
            "output": str(self.output),
        }

    def describe(self) -> str:
        """Human-readable plan for ``mirage validate``."""
        s = self.summary()
        chunks = ", ".join(f"{a}-{b}" for a, b in s["chunks"])
        lines = [
            f"spec        {s['spec']}",
            f"frames      {s['frames']} at {s['fps']:g} fps ({s['frames'] / s['fps']:.2f} s), {s['width']}x{s['height']}",
            f"chunks      {len(self.chunks)} of up to {s['chunk_frames']} frames: {chunks}",
            f"camera      {s['camera_source']}",
            f"  first     {s['first_camera_position']}",
            f"  last      {s['last_camera_position']}",
            f"image       {s['image']}" + (f"  (depth {s['depth']})" if s["depth"] else ""),
            f"model       {s['model']}, {s['steps']} steps, guidance {s['guidance']:g}, shift {s['shift']:g}, seed {s['seed']}",
            f"memory      {self.memory.mode} (pin {self.memory.pin} until {self.memory.pin_until:g})",
            f"depth model {s['depth_model']}",
            f"output      {s['output']}",
        ]
        return "\n".join(lines)


# --- reading ---------------------------------------------------------------------------------------


def read_spec_yaml(path: Path) -> tuple[dict, Callable[[str], int | None]]:
    """Parse a spec file; returns the mapping and a ``line_of(field)`` lookup. Raises InputError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("spec file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read spec file: {e}", file=str(path)) from None
    data, line_of = load_yaml_with_lines(text, str(path))
    if data is None:
        raise InputError("spec file is empty", file=str(path))
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of fields at the top level, got {type(data).__name__}", file=str(path))
    return data, line_of


def apply_overrides(data: dict, overrides: dict | None) -> dict:
    """``data`` with the command line's values in place (None values are not given).

    Keys are top-level fields, or ``memory.<name>`` for memory settings.
    """
    out = dict(data)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key.startswith("memory."):
            memory = out.get("memory") if isinstance(out.get("memory"), dict) else {}
            out["memory"] = {**memory, key.split(".", 1)[1]: value}
        else:
            out[key] = value
    return out


# --- the checkers ----------------------------------------------------------------------------------


def _type_name(types: tuple) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "true/false", dict: "mapping", list: "list", _NONE: "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def check_fields(data: dict, fields: dict[str, FieldSpec], problems: ProblemList, prefix: str = "") -> dict:
    """Unknown keys, missing required fields and types of a mapping; returns values with defaults filled in.

    A value of the wrong type (or a NaN/inf number) is reported and replaced by its default, so
    later checkers still run.
    """
    values = {}
    for key in data:
        if key not in fields:
            problems.add(f"{prefix}{key}", f"unknown field{did_you_mean(key, fields)}")
    for name, spec in fields.items():
        value = data.get(name, _MISSING)
        values[name] = spec.default
        if value is _MISSING:
            if spec.required:
                problems.add(f"{prefix}{name}", f"required field is missing ({spec.doc})")
        elif not isinstance(value, spec.types) or (isinstance(value, bool) and bool not in spec.types):
            problems.add(f"{prefix}{name}", f"expected {_type_name(spec.types)}, got {type(value).__name__} {value!r}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.add(f"{prefix}{name}", f"must be finite, got {value}")
        else:
            values[name] = value
    return values


def nearest_4k1(n: int) -> tuple[int, int]:
    """The valid frame counts (4k+1) just below and just above ``n``."""
    lo = max(1, ((n - 1) // 4) * 4 + 1)
    return lo, lo + 4


def check_frames(frames: int, chunk_frames: int | None, problems: ProblemList) -> int:
    """``frames`` and ``chunk_frames`` are 4k+1 (chunks at least 5, at most ``frames``); returns the
    chunk length to use (``chunk_frames`` null -> min(MAX_CHUNK_FRAMES, frames))."""
    if frames < 1 or (frames - 1) % 4:
        lo, hi = nearest_4k1(max(frames, 1))
        problems.add("frames", f"must be 4k+1 (Wan2.2's VAE compresses time by 4), got {frames}; nearest valid: {lo} or {hi}")
    chunk = chunk_frames if chunk_frames is not None else min(MAX_CHUNK_FRAMES, max(frames, 1))
    if chunk < 5 or (chunk - 1) % 4:
        lo, hi = nearest_4k1(max(chunk, 5))
        problems.add("chunk_frames", f"must be 4k+1 and at least 5, got {chunk}; nearest valid: {max(lo, 5)} or {hi}")
    elif chunk > frames >= 1:
        problems.add("chunk_frames", f"{chunk} exceeds frames ({frames}); use at most {frames} or leave it unset")
    return chunk


def check_numbers(values: dict, problems: ProblemList) -> None:
    """Ranges of fps, steps, guidance, shift, seed and depth_scale."""
    if not float(values["fps"]) > 0:
        problems.add("fps", f"must be positive, got {values['fps']}")
    if values["steps"] < 1:
        problems.add("steps", f"must be at least 1, got {values['steps']}")
    if values["guidance"] < 0:
        problems.add("guidance", f"must be >= 0, got {values['guidance']}")
    if values["shift"] <= 0:
        problems.add("shift", f"must be positive, got {values['shift']}")
    if values["seed"] < 0 or values["seed"] >= 2**63:
        problems.add("seed", f"must be in [0, 2^63), got {values['seed']}")
    if values["depth_scale"] <= 0:
        problems.add("depth_scale", f"must be positive, got {values['depth_scale']}")


def parse_resolution(value) -> tuple[int, int] | str:
    """Return (width, height) or an error message. Accepts '1280x704', [1280, 704], {width, height}."""
    try:
        if isinstance(value, str):
            w, h = value.lower().replace(" ", "").split("x")
            width, height = int(w), int(h)
        elif isinstance(value, list) and len(value) == 2:
            width, height = int(value[0]), int(value[1])
        elif isinstance(value, dict) and set(value) == {"width", "height"}:
            width, height = int(value["width"]), int(value["height"])
        else:
            raise ValueError
    except (ValueError, TypeError):
        return f"expected WIDTHxHEIGHT (e.g. 1280x704), [width, height] or {{width, height}}, got {value!r}"
    return width, height


def check_resolution(value, problems: ProblemList) -> tuple[int, int] | None:
    """(width, height), both positive multiples of 32 (one transformer token is 32x32 px), or None."""
    res = parse_resolution(value)
    if isinstance(res, str):
        problems.add("resolution", res)
        return None
    bad = [f"{name} {x}" for name, x in zip(("width", "height"), res) if x <= 0 or x % 32]
    if bad:
        fix = "x".join(str(max(32, round(x / 32) * 32)) for x in res)
        problems.add("resolution", f"{' and '.join(bad)} not a positive multiple of 32 (one transformer token is 32x32 px); e.g. {fix}")
        return None
    return res


def check_memory(values: dict, problems: ProblemList) -> MemorySettings | None:
    """Choices and ranges of the type-checked ``memory:`` values; the settings, or None."""
    start = len(problems.items)
    for name, choice in (("mode", MemoryMode), ("pin", PinMode)):
        if values[name] not in choice.values():
            valid = choice.values()
            problems.add(f"memory.{name}", f"must be one of {', '.join(valid)}, got {values[name]!r}{did_you_mean(values[name], valid)}")
    if not 0.0 <= float(values["pin_until"]) <= 1.0:
        problems.add("memory.pin_until", f"must be in [0, 1], got {values['pin_until']}")
    if values["voxel_size"] is not None and not values["voxel_size"] > 0:
        problems.add("memory.voxel_size", f"must be positive, got {values['voxel_size']}")
    if values["capacity"] is not None and values["capacity"] < 1:
        problems.add("memory.capacity", f"must be at least 1, got {values['capacity']}")
    if values["dynamic_threshold"] is not None and not values["dynamic_threshold"] > 0:
        problems.add("memory.dynamic_threshold", f"must be positive or null, got {values['dynamic_threshold']}")
    return MemorySettings.from_fields(values) if len(problems.items) == start else None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _resolve_path(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p)


def _check_file(path: Path, name: str, problems: ProblemList, suffixes: tuple[str, ...]) -> bool:
    """The file exists, is readable and has one of ``suffixes``."""
    if not path.exists():
        problems.add(name, f"file not found: {path}")
    elif not path.is_file():
        problems.add(name, f"not a file: {path}")
    elif not os.access(path, os.R_OK):
        problems.add(name, f"file is not readable: {path}")
    elif path.suffix.lower() not in suffixes:
        problems.add(name, f"unsupported file type {path.suffix!r} (expected {', '.join(suffixes)})")
    else:
        return True
    return False


def _check_image_readable(path: Path, name: str, problems: ProblemList) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for broken files
        problems.add(name, f"cannot read image {path}: {e}")


def _check_depth_file(path: Path, problems: ProblemList) -> None:
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            problems.add("depth", f"cannot read {path} as a .npy array: {e}")
            return
        if arr.ndim != 2:
            problems.add("depth", f"expected a 2-D z-depth array [H, W], got shape {list(arr.shape)}")
        elif not np.issubdtype(arr.dtype, np.floating):
            problems.add("depth", f"expected float32 z-depth, got dtype {arr.dtype}")
        return
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
    except Exception as e:
        problems.add("depth", f"cannot read depth PNG {path}: {e}")
        return
    if mode not in ("I;16", "I;16B", "I;16L", "I"):
        problems.add("depth", f"expected a 16-bit single-channel PNG (value * depth_scale = scene units), got mode {mode}")


def check_files(values: dict, base: Path, problems: ProblemList) -> tuple[Path | None, Path | None, Path | None]:
    """The start image, depth and mask exist and can be read; their resolved paths (None if not given)."""
    image = depth = mask = None
    if isinstance(values["image"], str):
        image = _resolve_path(base, values["image"])
        if _check_file(image, "image", problems, IMAGE_SUFFIXES):
            _check_image_readable(image, "image", problems)
    if isinstance(values["depth"], str):
        depth = _resolve_path(base, values["depth"])
        if _check_file(depth, "depth", problems, (".npy", ".png")):
            _check_depth_file(depth, problems)
    if isinstance(values["mask"], str):
        mask = _resolve_path(base, values["mask"])
        if _check_file(mask, "mask", problems, IMAGE_SUFFIXES):
            _check_image_readable(mask, "mask", problems)
    return image, depth, mask


def describe_camera_source(section: dict) -> str:
    """A short description like ``colmap: path`` or ``keyframes (4 inline)``."""
    for key, value in section.items():
        if key == "keyframes" and isinstance(value, list):
            return f"keyframes ({len(value)} inline)"
        if key == "preset":
            return f"preset: {value}"
        if key in ("trajectory", "colmap", "realestate10k", "nerfstudio", "json"):
            return f"{key}: {value}"
    return "camera"


def check_camera(values: dict, size: tuple[int, int], frames: int, base: Path, problems: ProblemList) -> Trajectory | None:
    """The ``camera:`` section sampled at the render's frames (``mirage_cli.camera.source``), or None."""
    from mirage_cli.camera.source import resolve_camera

    width, height = size
    try:
        return resolve_camera(
            values["camera"],
            spec_file=problems.file,
            base_dir=base,
            width=width,
            height=height,
            frames=frames,
            fps=float(values["fps"]),
            intrinsics=values["intrinsics"],
            line_of=problems.line_of,
        )
    except InputError as e:
        problems.extend(e.problems)
        return None


# --- the entry point ------------------------------------------------------------------------------


def plan_chunks(frames: int, chunk_frames: int) -> tuple[Chunk, ...]:
    """Split ``frames`` (4k+1) into chunks of ``chunk_frames`` (4k+1) sharing one boundary frame.

    Chunk 0 covers [0, chunk_frames-1]; each later chunk starts on the previous chunk's last frame.
    The last chunk may be shorter; it is still 4k+1 frames because both counts are.
    """
    chunks = [Chunk(0, 0, min(chunk_frames, frames) - 1)]
    while chunks[-1].end < frames - 1:
        start = chunks[-1].end
        chunks.append(Chunk(len(chunks), start, min(start + chunk_frames - 1, frames - 1)))
    return tuple(chunks)


def load_plan(spec_path: str | os.PathLike, overrides: dict | None = None) -> Plan:
    """Read, validate and resolve a scene spec.

    Args:
        spec_path: the YAML file.
        overrides: values that replace spec fields after parsing (the CLI's ``--steps`` etc.);
            keys are top-level fields, or ``memory.<name>`` for memory settings.

    Raises:
        InputError: with every problem found (exit 2).
    """
    path = Path(spec_path)
    data, line_of = read_spec_yaml(path)
    problems = ProblemList(str(path), "", line_of)
    v = check_fields(apply_overrides(data, overrides), SPEC_FIELDS, problems)
    memory_values = check_fields(v["memory"] or {}, MEMORY_FIELDS, problems, prefix="memory.")
    frames = v["frames"]
    chunk_frames = check_frames(frames, v["chunk_frames"], problems)
    check_numbers(v, problems)
    size = check_resolution(v["resolution"], problems)
    memory = check_memory(memory_values, problems)
    image, depth, mask = check_files(v, path.parent, problems)
    trajectory = None
    frames_ok = frames >= 1 and (frames - 1) % 4 == 0
    if isinstance(v["camera"], dict) and size and frames_ok and float(v["fps"]) > 0:
        trajectory = check_camera(v, size, frames, path.parent, problems)
    problems.raise_if_any()
    return Plan(
        spec_path=path,
        prompt=v["prompt"],
        negative_prompt=v["negative_prompt"],
        image_path=image,
        depth_path=depth,
        depth_scale=float(v["depth_scale"]),
        mask_path=mask,
        trajectory=trajectory,
        camera_source=describe_camera_source(v["camera"]),
        frames=frames,
        fps=float(v["fps"]),
        width=size[0],
        height=size[1],
        chunk_frames=chunk_frames,
        chunks=plan_chunks(frames, chunk_frames),
        steps=v["steps"],
        guidance=float(v["guidance"]),
        shift=float(v["shift"]),
        seed=v["seed"],
        model=v["model"],
        memory=memory,
        depth_model=v["depth_model"],
        output=_resolve_path(path.parent, v["output"]) if v["output"] else Path("runs") / path.stem,
    )
