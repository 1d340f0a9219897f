"""Scene spec: a YAML file -> a validated, resolved ``Plan`` (paths, frames, chunks, camera path).

Validation happens before anything heavy and reports *every* problem it finds, each as one
``Problem`` naming the spec file, the field (with its YAML line) and what is wrong; the caller
gets one ``InputError`` (exit 2). Nothing is silently corrected.

Fields and defaults (``SPEC_FIELDS`` is the single source of truth; ``examples/room/scene.yaml``
shows every field with comments):

================  ==========================================  ==========================================
field             default                                     meaning
================  ==========================================  ==========================================
prompt            (required)                                  text prompt
negative_prompt   null -> Wan2.2's default negative prompt    classifier-free guidance negative prompt
image             (required)                                  start image, relative to the spec file
depth             null                                        start-image z-depth: .npy float32 [H, W] or
                                                              16-bit PNG (value * depth_scale)
depth_scale       0.001                                       metres per unit of a 16-bit depth PNG
mask              null                                        PNG, nonzero = keep out of memory (moving)
camera            (required)                                  exactly one camera source (see camera/source.py)
intrinsics        null -> the source's own, else fov 60       ``{fov: deg}`` (vertical) or ``{fx, fy, cx, cy}``
                                                              in pixels at the render size
frames            121                                         output frames, 4k+1
fps               24                                          output frame rate
resolution        1280x704                                    WIDTHxHEIGHT, multiples of 32
chunk_frames      null -> min(121, frames)                    frames per chunk, 4k+1
steps             50                                          denoising steps per chunk
guidance          5.0                                         classifier-free guidance scale
shift             5.0                                         flow shift of the UniPC scheduler
seed              0                                           noise seed (noise of chunk c from (seed, c))
model             Wan-AI/Wan2.2-TI2V-5B-Diffusers             diffusers model id or local directory
memory            see MEMORY_FIELDS                           latent spatial memory settings
depth_model       depth-anything/Depth-Anything-V2-Small-hf   transformers depth model id/dir, or ``none``
output            null -> runs/<spec file stem>               run directory (``--out`` overrides)
================  ==========================================  ==========================================
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.errors import InputError, Problem
from mirage_cli.options import DEFAULT_DEPTH_MODEL, DEFAULT_MODEL, MemoryMode, PinMode
from mirage_cli.yaml_lines import load_yaml_with_lines

MAX_CHUNK_FRAMES = 121

_MISSING = object()


@dataclass(frozen=True)
class FieldSpec:
    """One spec field: its accepted Python types, default and a one-line description."""

    types: tuple
    default: Any
    doc: str
    required: bool = False


SPEC_FIELDS: dict[str, FieldSpec] = {
    "prompt": FieldSpec((str,), None, "text prompt", required=True),
    "negative_prompt": FieldSpec((str, type(None)), None, "negative prompt (null: Wan2.2's default)"),
    "image": FieldSpec((str,), None, "start image path, relative to the spec file", required=True),
    "depth": FieldSpec((str, type(None)), None, "start-image z-depth (.npy float32 or 16-bit PNG)"),
    "depth_scale": FieldSpec((int, float), 0.001, "metres per unit of a 16-bit depth PNG"),
    "mask": FieldSpec((str, type(None)), None, "PNG mask of what to keep out of memory (nonzero = keep out)"),
    "camera": FieldSpec((dict,), None, "camera source (exactly one)", required=True),
    "intrinsics": FieldSpec((dict, type(None)), None, "{fov: deg} or {fx, fy, cx, cy} at the render size"),
    "frames": FieldSpec((int,), 121, "number of output frames, 4k+1"),
    "fps": FieldSpec((int, float), 24, "output frame rate"),
    "resolution": FieldSpec((str, list, dict), "1280x704", "WIDTHxHEIGHT, multiples of 32"),
    "chunk_frames": FieldSpec((int, type(None)), None, "frames per chunk, 4k+1 (null: min(121, frames))"),
    "steps": FieldSpec((int,), 50, "denoising steps per chunk"),
    "guidance": FieldSpec((int, float), 5.0, "classifier-free guidance scale"),
    "shift": FieldSpec((int, float), 5.0, "flow shift"),
    "seed": FieldSpec((int,), 0, "random seed"),
    "model": FieldSpec((str,), DEFAULT_MODEL, "diffusers model id or local directory"),
    "memory": FieldSpec((dict, type(None)), None, "memory settings"),
    "depth_model": FieldSpec((str,), DEFAULT_DEPTH_MODEL, "transformers depth model id/dir, or none"),
    "output": FieldSpec((str, type(None)), None, "run directory (default runs/<spec stem>)"),
}

MEMORY_FIELDS: dict[str, FieldSpec] = {
    "mode": FieldSpec((str,), "latent", "latent | rgb | none"),
    "pin": FieldSpec((str,), "clean", "clean | noised"),
    "pin_until": FieldSpec((int, float), 1.0, "fraction of steps during which memory is pinned"),
    "voxel_size": FieldSpec((int, float, type(None)), None, "fusion voxel size (null: from the cell footprint)"),
    "capacity": FieldSpec((int, type(None)), None, "max cached points (null: unbounded)"),
    "occlusion_filter": FieldSpec((bool,), True, "drop cells far behind their 3x3 neighbourhood"),
    "dynamic_threshold": FieldSpec((int, float, type(None)), 0.5, "dynamic-region residual threshold (null: off)"),
}


@dataclass(frozen=True)
class MemorySettings:
    mode: str = "latent"
    pin: str = "clean"
    pin_until: float = 1.0
    voxel_size: float | None = None
    capacity: int | None = None
    occlusion_filter: bool = True
    dynamic_threshold: float | None = 0.5


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
    raw: dict = field(repr=False, default_factory=dict)

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
            "memory": {k: str(v) if isinstance(v, (MemoryMode, PinMode)) else v for k, v in self.memory.__dict__.items()},
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


# --- YAML with line numbers ------------------------------------------------------------------------


def read_spec_yaml(path: Path) -> tuple[dict, Callable[[str], int | None]]:
    """Parse a spec file; returns the mapping and a ``line_of(field)`` lookup. Raises InputError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("spec file not found", file=str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read spec file: {e}", file=str(path))
    data, line_of = load_yaml_with_lines(text, str(path))
    if data is None:
        raise InputError("spec file is empty", file=str(path))
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of fields at the top level, got {type(data).__name__}", file=str(path))
    return data, line_of


# --- validation helpers ---------------------------------------------------------------------------


def suggest(name: str, valid) -> str:
    """' (did you mean `x`?)' for the closest valid name, or ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def nearest_4k1(n: int) -> tuple[int, int]:
    """The valid frame counts (4k+1) just below and just above ``n``."""
    lo = max(1, ((n - 1) // 4) * 4 + 1)
    return lo, lo + 4


def _type_name(types: tuple) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "true/false", dict: "mapping", list: "list", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check_fields(data: dict, fields: dict[str, FieldSpec], prefix: str, report: Callable[[str, str], None]) -> dict:
    """Type-check a mapping against ``fields``; returns values with defaults filled in."""
    values = {}
    for key in data:
        if key not in fields:
            report(f"{prefix}{key}", f"unknown field{suggest(str(key), fields)}")
    for name, spec in fields.items():
        value = data.get(name, _MISSING)
        if value is _MISSING:
            if spec.required:
                report(f"{prefix}{name}", f"required field is missing ({spec.doc})")
            values[name] = spec.default
            continue
        ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
        if not ok:
            report(f"{prefix}{name}", f"expected {_type_name(spec.types)}, got {type(value).__name__} {value!r}")
            values[name] = spec.default
            continue
        if isinstance(value, float) and not math.isfinite(value):
            report(f"{prefix}{name}", f"must be finite, got {value}")
            values[name] = spec.default
            continue
        values[name] = value
    return values


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


def _resolve_path(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p)


def _check_file(path: Path, field_name: str, report: Callable[[str, str], None], suffixes: tuple[str, ...] | None = None) -> bool:
    if not path.exists():
        report(field_name, f"file not found: {path}")
        return False
    if not path.is_file():
        report(field_name, f"not a file: {path}")
        return False
    if not os.access(path, os.R_OK):
        report(field_name, f"file is not readable: {path}")
        return False
    if suffixes and path.suffix.lower() not in suffixes:
        report(field_name, f"unsupported file type {path.suffix!r} (expected {', '.join(suffixes)})")
        return False
    return True


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# --- the entry point ------------------------------------------------------------------------------


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
    file = str(path)
    problems: list[Problem] = []

    def report(field_name: str, message: str) -> None:
        problems.append(Problem(file, field_name, message, line_of(field_name)))

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key.startswith("memory."):
            mem = data.get("memory") if isinstance(data.get("memory"), dict) else {}
            data["memory"] = {**mem, key.split(".", 1)[1]: value}
        else:
            data[key] = value

    v = _check_fields(data, SPEC_FIELDS, "", report)
    mem_raw = v["memory"] or {}
    m = _check_fields(mem_raw, MEMORY_FIELDS, "memory.", report)
    base = path.parent

    # Numbers.
    frames = v["frames"]
    if frames < 1 or (frames - 1) % 4:
        lo, hi = nearest_4k1(max(frames, 1))
        report("frames", f"must be 4k+1 (Wan2.2's VAE compresses time by 4), got {frames}; nearest valid: {lo} or {hi}")
    chunk_frames = v["chunk_frames"] if v["chunk_frames"] is not None else min(MAX_CHUNK_FRAMES, max(frames, 1))
    if chunk_frames < 5 or (chunk_frames - 1) % 4:
        lo, hi = nearest_4k1(max(chunk_frames, 5))
        report("chunk_frames", f"must be 4k+1 and at least 5, got {chunk_frames}; nearest valid: {max(lo, 5)} or {hi}")
    elif chunk_frames > frames >= 1:
        report("chunk_frames", f"{chunk_frames} exceeds frames ({frames}); use at most {frames} or leave it unset")
    fps = float(v["fps"])
    if not fps > 0:
        report("fps", f"must be positive, got {v['fps']}")
    for name in ("steps",):
        if v[name] < 1:
            report(name, f"must be at least 1, got {v[name]}")
    if v["guidance"] < 0:
        report("guidance", f"must be >= 0, got {v['guidance']}")
    if v["shift"] <= 0:
        report("shift", f"must be positive, got {v['shift']}")
    if v["seed"] < 0 or v["seed"] >= 2**63:
        report("seed", f"must be in [0, 2^63), got {v['seed']}")
    if v["depth_scale"] <= 0:
        report("depth_scale", f"must be positive, got {v['depth_scale']}")

    res = parse_resolution(v["resolution"])
    width = height = None
    if isinstance(res, str):
        report("resolution", res)
    else:
        width, height = res
        bad = [f"{n} {x}" for n, x in (("width", width), ("height", height)) if x <= 0 or x % 32]
        if bad:
            fix = "x".join(str(max(32, round(x / 32) * 32)) for x in (width, height))
            report("resolution", f"{' and '.join(bad)} not a positive multiple of 32 (one transformer token is 32x32 px); e.g. {fix}")
            width = height = None

    # Memory settings.
    modes, pins = MemoryMode.values(), PinMode.values()
    if m["mode"] not in modes:
        report("memory.mode", f"must be one of {', '.join(modes)}, got {m['mode']!r}{suggest(str(m['mode']), modes)}")
    if m["pin"] not in pins:
        report("memory.pin", f"must be one of {', '.join(pins)}, got {m['pin']!r}{suggest(str(m['pin']), pins)}")
    if not 0.0 <= float(m["pin_until"]) <= 1.0:
        report("memory.pin_until", f"must be in [0, 1], got {m['pin_until']}")
    if m["voxel_size"] is not None and not m["voxel_size"] > 0:
        report("memory.voxel_size", f"must be positive, got {m['voxel_size']}")
    if m["capacity"] is not None and m["capacity"] < 1:
        report("memory.capacity", f"must be at least 1, got {m['capacity']}")
    if m["dynamic_threshold"] is not None and not m["dynamic_threshold"] > 0:
        report("memory.dynamic_threshold", f"must be positive or null, got {m['dynamic_threshold']}")

    # Files.
    image_path = depth_path = mask_path = None
    if isinstance(v["image"], str):
        image_path = _resolve_path(base, v["image"])
        if _check_file(image_path, "image", report, IMAGE_SUFFIXES):
            _check_image_readable(image_path, "image", report)
    if isinstance(v["depth"], str):
        depth_path = _resolve_path(base, v["depth"])
        if _check_file(depth_path, "depth", report, (".npy", ".png")):
            _check_depth_file(depth_path, report)
    if isinstance(v["mask"], str):
        mask_path = _resolve_path(base, v["mask"])
        if _check_file(mask_path, "mask", report, IMAGE_SUFFIXES):
            _check_image_readable(mask_path, "mask", report)

    # Camera (only when the numbers it depends on are sane).
    trajectory = None
    camera_source = "?"
    if isinstance(v["camera"], dict) and width and frames >= 1 and (frames - 1) % 4 == 0 and fps > 0:
        from mirage_cli.camera.source import resolve_camera

        try:
            trajectory = resolve_camera(
                v["camera"],
                spec_file=file,
                base_dir=base,
                width=width,
                height=height,
                frames=frames,
                fps=fps,
                intrinsics=v["intrinsics"],
                line_of=line_of,
            )
            camera_source = describe_camera_source(v["camera"])
        except InputError as e:
            problems.extend(e.problems)

    if problems:
        raise InputError(problems)

    output = _resolve_path(base, v["output"]) if v["output"] else Path("runs") / path.stem
    chunks = plan_chunks(frames, chunk_frames)
    return Plan(
        spec_path=path,
        prompt=v["prompt"],
        negative_prompt=v["negative_prompt"],
        image_path=image_path,
        depth_path=depth_path,
        depth_scale=float(v["depth_scale"]),
        mask_path=mask_path,
        trajectory=trajectory,
        camera_source=camera_source,
        frames=frames,
        fps=fps,
        width=width,
        height=height,
        chunk_frames=chunk_frames,
        chunks=chunks,
        steps=v["steps"],
        guidance=float(v["guidance"]),
        shift=float(v["shift"]),
        seed=v["seed"],
        model=v["model"],
        memory=MemorySettings(
            mode=MemoryMode(m["mode"]),
            pin=PinMode(m["pin"]),
            pin_until=float(m["pin_until"]),
            voxel_size=None if m["voxel_size"] is None else float(m["voxel_size"]),
            capacity=m["capacity"],
            occlusion_filter=m["occlusion_filter"],
            dynamic_threshold=None if m["dynamic_threshold"] is None else float(m["dynamic_threshold"]),
        ),
        depth_model=v["depth_model"],
        output=output,
        raw=data,
    )


def describe_camera_source(section: dict) -> str:
    """A short description like ``colmap: path`` or ``keyframes (4)``."""
    for key, value in section.items():
        if key == "keyframes" and isinstance(value, list):
            return f"keyframes ({len(value)} inline)"
        if key == "preset":
            return f"preset: {value}"
        if key in ("trajectory", "colmap", "realestate10k", "nerfstudio", "json"):
            return f"{key}: {value}"
    return "camera"


def _check_image_readable(path: Path, field_name: str, report) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for broken files
        report(field_name, f"cannot read image {path}: {e}")


def _check_depth_file(path: Path, report) -> None:
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            report("depth", f"cannot read {path} as a .npy array: {e}")
            return
        if arr.ndim != 2:
            report("depth", f"expected a 2-D z-depth array [H, W], got shape {list(arr.shape)}")
        elif not np.issubdtype(arr.dtype, np.floating):
            report("depth", f"expected float32 z-depth, got dtype {arr.dtype}")
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                mode = im.mode
        except Exception as e:
            report("depth", f"cannot read depth PNG {path}: {e}")
            return
        if mode not in ("I;16", "I;16B", "I;16L", "I"):
            report("depth", f"expected a 16-bit single-channel PNG (value * depth_scale = metres), got mode {mode}")
