"""Scene spec: a YAML file -> a validated, resolved ``Plan`` (paths, frames, chunks, camera path).

Every field's accepted types, default and meaning are declared once, in ``SPEC_FIELDS`` and
``MEMORY_FIELDS`` (``mirage_cli.spec.fields``); ``examples/room/scene.yaml`` shows each of them with
a comment for users (``tests/test_spec.py`` checks that it lists every field).

Validation happens before anything heavy and reports *every* problem it finds, each naming the
spec file, the field (with its YAML line) and what is wrong; the caller gets one ``InputError``
(exit 2). Nothing is silently corrected. ``load_plan`` runs one checker per concern
(``mirage_cli.spec.checks``), each usable alone with a ``ProblemList``; ``inputs.preflight`` then
reads the start image, depth and mask in full.

Loading a spec reads files and runs no model (as diffusers' ``check_inputs`` only raises). What needs
a model is a named stage after it: with ``intrinsics: auto`` the plan comes back with
``intrinsics_auto`` set and no camera path yet (the path was checked with a stand-in field of view);
``mirage_cli.render.prepare.estimate_intrinsics`` runs the field-of-view model and hands the estimate
to ``with_intrinsics``, which samples the camera path and decides the scene scale.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mirage_cli.backbone.lora_stack import LoraFile
from mirage_cli.base.errors import InputError, ProblemList
from mirage_cli.base.files import read_text
from mirage_cli.base.limits import MAX_FRAMES, MAX_SPEC_BYTES
from mirage_cli.base.options import BACKBONE_PRESETS, DEFAULT_DEPTH_MODEL, TINY_PRESET
from mirage_cli.base.yaml_lines import load_yaml_with_lines
from mirage_cli.camera.scale import path_units
from mirage_cli.camera.source import camera_section_problems
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.depth.field_of_view import DEFAULT_FOV_MODEL
from mirage_cli.depth.scene_scale import DEFAULT_METRIC_DEPTH_MODEL, SceneScale, decide
from mirage_cli.depth.tiny import TINY_DEPTH_MODEL
from mirage_cli.spec.branch_source import BranchSource
from mirage_cli.spec.checks import (
    INVALID,
    check_camera,
    check_fields,
    check_files,
    check_frames,
    check_memory,
    check_numbers,
    check_resolution,
    describe_camera_source,
    nearest_4k1,
    resolve_branch_source,
    resolve_output,
    valid,
)
from mirage_cli.spec.conditioning import CONDITIONING_FIELDS, ConditioningSettings, check_conditioning, fill_method_defaults
from mirage_cli.spec.fields import MEMORY_FIELDS, SPEC_FIELDS, FieldSpec, MemorySettings
from mirage_cli.spec.loras import check_loras
from mirage_cli.spec.prompts import chunk_prompts
from mirage_cli.spec.sampler import DMD, SamplerSettings, check_sampler, fit_steps_and_guidance, model_sampler, override_sampler
from mirage_cli.spec.step_cache import STEP_CACHE_FIELDS, StepCacheSettings, calibration_misfit, check_step_cache

__all__ = [
    "MEMORY_FIELDS",
    "SPEC_FIELDS",
    "Chunk",
    "FieldSpec",
    "MemorySettings",
    "Plan",
    "load_plan",
    "nearest_4k1",
    "plan_chunks",
    "read_spec_yaml",
]


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
class AutoIntrinsics:
    """``intrinsics: auto`` waiting for its model: the model (``{auto: MODEL}``, or the default), and the
    checked spec values and folder the camera path is sampled from once the estimate is in."""

    model: str
    values: dict = field(repr=False)
    base_dir: Path


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
    trajectory: Trajectory | None
    """The camera path; None only while ``intrinsics_auto`` waits for its estimate."""
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
    branch_from: BranchSource | None = None
    """The run a branch starts from (``mirage_cli.render.branch``): ``--from``, else the spec's ``from:``."""
    chunk_prompts: tuple[str, ...] = ()
    """The prompt of every chunk (the spec's ``prompts:``; ``prompt`` for all when not given)."""
    conditioning: ConditioningSettings = ConditioningSettings()
    """The spec's ``conditioning:`` (``mirage_cli.spec.conditioning``)."""
    step_cache: StepCacheSettings = StepCacheSettings()
    """The spec's ``step_cache:`` (``mirage_cli.spec.step_cache``)."""
    sampler: SamplerSettings = SamplerSettings()
    """The spec's ``sampler:`` (``mirage_cli.spec.sampler``)."""
    loras: tuple[LoraFile, ...] = ()
    """The spec's ``loras:``, fused at load in this order (``mirage_cli.spec.loras``)."""
    scale: SceneScale | None = None
    """Where the start depth's scale comes from (``mirage_cli.depth.scene_scale``)."""
    intrinsics_estimate: dict | None = None
    """``intrinsics: auto``: the model, the estimated fields of view and focal length (``mirage_cli.depth.field_of_view``)."""
    intrinsics_auto: AutoIntrinsics | None = None
    """``intrinsics: auto`` not estimated yet (then ``trajectory`` and ``scale`` are None; module docstring)."""
    settings_from: dict = field(default_factory=dict)
    """Where each of the method-defaulted settings (``METHOD_DEFAULTED``) comes from: ``spec``, ``flag`` or
    ``method <name> default``."""
    defaults_source: str = ""
    """Whose inference the conditioning method's defaults are taken from (``MethodDefaults.source``)."""
    line_of: Callable[[str], int | None] = field(default=lambda name: None, repr=False, compare=False)
    """The spec's line of a field (for problems found later, e.g. by ``inputs.preflight``)."""

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
            **({"first_chunk_frames": self.first_chunk_frames} if self.first_chunk_frames != self.chunk_frames else {}),
            "chunks": [[c.start, c.end] for c in self.chunks],
            "camera_source": self.camera_source,
            "first_camera_position": [round(float(v), 6) for v in pos[0]],
            "last_camera_position": [round(float(v), 6) for v in pos[-1]],
            "image": str(self.image_path),
            "depth": str(self.depth_path) if self.depth_path else None,
            "mask": str(self.mask_path) if self.mask_path else None,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            **({"chunk_prompts": list(self.chunk_prompts)} if self.varied_prompts else {}),
            "steps": self.steps,
            "guidance": self.guidance,
            "shift": self.shift,
            "seed": self.seed,
            "model": self.model,
            "memory": self.memory.summary(),
            "conditioning": self.conditioning.summary(),
            **({"loras": [lora.summary() for lora in self.loras]} if self.loras else {}),
            "settings_from": dict(self.settings_from),
            "step_cache": self.step_cache.summary(),
            "sampler": self.sampler.summary(),
            **({"intrinsics_estimate": self.intrinsics_estimate} if self.intrinsics_estimate else {}),
            "depth_model": self.depth_model,
            "output": str(self.output),
            **({"from": self.branch_from.summary()} if self.branch_from else {}),
        }

    @property
    def first_chunk_frames(self) -> int:
        """Frames of chunk 0 (more than ``chunk_frames`` where the method's first round is longer)."""
        return self.chunks[0].num_frames if self.chunks else self.chunk_frames

    @property
    def varied_prompts(self) -> bool:
        """Whether some chunk is rendered with another prompt than ``prompt``."""
        return any(p != self.prompt for p in self.chunk_prompts)

    def prompt_of(self, chunk_index: int) -> str:
        """The prompt chunk ``chunk_index`` is rendered with."""
        return self.chunk_prompts[chunk_index] if self.chunk_prompts else self.prompt

    def _describe_defaults(self) -> list[str]:
        """The lines saying which of the method's defaults apply, and where the others come from."""
        if not self.settings_from:
            return []
        method = self.conditioning.method
        first = f" (the first {self.first_chunk_frames})" if self.first_chunk_frames > self.chunk_frames else ""
        shown = {"chunk_frames": f"{self.chunk_frames}{first}", "steps": str(self.steps), "guidance": f"{self.guidance:g}",
                 "shift": f"{self.shift:g}",
                 "negative_prompt": "Wan2.2's" if self.negative_prompt is None else repr(self._short(self.negative_prompt))}
        defaulted = [f"{name} {shown[name]}" for name, origin in self.settings_from.items() if origin.startswith("method")]
        set_here = [f"{name} from the {origin}" for name, origin in self.settings_from.items() if not origin.startswith("method")]
        lines = [f"defaults    method {method} ({self.defaults_source}): " + (", ".join(defaulted) if defaulted else "none used")]
        if set_here:
            lines.append(f"  set       {', '.join(set_here)}")
        return lines

    @staticmethod
    def _short(text: str, limit: int = 40) -> str:
        return text if len(text) <= limit else text[: limit - 3] + "..."

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
            f"sampler     {self.sampler.describe()}",
            *self._describe_defaults(),
            f"memory      {self.memory.mode} (pin {self.memory.pin} until {self.memory.pin_until:g})",
            *([f"conditioning {self.conditioning.method}: vace {self.conditioning.vace}"
               + (f", lora {self.conditioning.lora} x{self.conditioning.lora_scale:g}" if self.conditioning.lora else "")]
              if self.conditioning.method != "pin" else []),
            f"projection  {self.conditioning.projection.value} (the memory into each view: "
            + ("nearest cell, holes left empty, as the official Mirage code)" if self.conditioning.projection.value == "nearest"
               else "footprint splats)"),
            *([f"step cache  {self.step_cache.method}" + (f", threshold {self.step_cache.threshold:g}" if self.step_cache.threshold else "")
               + (f", interval {self.step_cache.interval}" if self.step_cache.interval else "")] if self.step_cache.enabled else []),
            *([f"intrinsics  estimated by {e['model']}: horizontal fov {e['horizontal_fov_deg']:.1f} deg, vertical "
               f"{e['vertical_fov_deg']:.1f} deg, focal {e['focal_px']:.1f} px"] if (e := self.intrinsics_estimate) else []),
            f"depth model {s['depth_model']}",
            f"output      {s['output']}",
        ]
        if self.varied_prompts:
            lines[-3:-3] = self._describe_prompts()
        if self.branch_from is not None:
            lines.append(f"branch of   {s['from']} (checked when the render starts)")
        return "\n".join(lines)

    MAX_PROMPT_LINES = 50
    """Runs of chunks ``describe`` lists with their prompt (``--json`` has every chunk's)."""

    def _describe_prompts(self) -> list[str]:
        """One line per run of consecutive chunks with the same prompt: the chunks, their frames and the
        prompt (shortened)."""
        runs: list[list[int]] = []
        for i, text in enumerate(self.chunk_prompts):
            if runs and self.chunk_prompts[runs[-1][0]] == text:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        lines = [f"prompts     {len(set(self.chunk_prompts))} different over {len(self.chunks)} chunks:"]
        for first, last in runs[: self.MAX_PROMPT_LINES]:
            which = f"chunk {first}" if first == last else f"chunks {first}-{last}"
            frames = f"frames {self.chunks[first].start}-{self.chunks[last].end}"
            lines.append(f"  {which} ({frames}): {self._short(self.chunk_prompts[first], 60)!r}")
        if len(runs) > self.MAX_PROMPT_LINES:
            lines.append(f"  ... and {len(runs) - self.MAX_PROMPT_LINES} more changes of prompt (--json lists every chunk's)")
        return lines


# --- reading ---------------------------------------------------------------------------------------


PNG_DEPTH_SCALE = 0.001
"""Scene units per step of a 16-bit depth PNG when the spec's ``depth_scale`` is null (millimetres)."""


def scene_trajectory(path: Path, overrides: dict) -> Trajectory:
    """The camera path a render of the scene spec at ``path`` follows (``load_plan`` with ``overrides``:
    every field checked). InputError when the spec is refused, or when its intrinsics are ``auto``
    (they come from a model at render time)."""
    plan = load_plan(path, overrides=overrides)
    if plan.trajectory is None:
        raise InputError("auto: the path's intrinsics are estimated by a model when the render starts; give "
                         "intrinsics: {fov: DEGREES} to see the path here", file=str(path), field="intrinsics")
    return plan.trajectory


def read_spec_yaml(path: Path) -> tuple[dict, Callable[[str], int | None]]:
    """Parse a spec file; returns the mapping and a ``line_of(field)`` lookup. Raises InputError.

    Only a regular file of at most ``limits.MAX_SPEC_BYTES`` is read (``mirage_cli.base.files``), and the
    YAML loader refuses hostile documents (``mirage_cli.base.yaml_lines``).
    """
    text = read_text(path, MAX_SPEC_BYTES)
    data, line_of = load_yaml_with_lines(text, str(path))
    if data is None:
        raise InputError("spec file is empty", file=str(path))
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of fields at the top level, got {type(data).__name__}", file=str(path))
    return data, line_of


def apply_overrides(data: dict, overrides: dict | None) -> dict:
    """``data`` with the command line's values in place (None values are not given).

    Keys are top-level fields, or ``<section>.<name>`` for the memory, conditioning and step_cache sections.
    """
    out = dict(data)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        if key == "sampler":
            out[key] = override_sampler(out.get(key), value)
        elif key == "from":  # --from, parsed: the spec's from: is replaced (resolve_branch_source takes the override)
            out.pop(key, None)
        elif name and section in ("memory", "conditioning", "step_cache"):
            current = out.get(section) if isinstance(out.get(section), dict) else {}
            out[section] = {**current, name: value}
        else:
            out[key] = value
    return out


# --- the checkers ----------------------------------------------------------------------------------


AUTO_STAND_IN = {"fov": 60.0}
"""The field of view the camera path is checked with while ``intrinsics: auto`` waits for its model
(the path is sampled again with the estimate; nothing of the stand-in stays in the plan)."""


def is_auto_intrinsics(value) -> bool:
    return value == "auto" or (isinstance(value, dict) and set(value) == {"auto"})


def auto_intrinsics_model(value, problems: ProblemList) -> str | None:
    """The model of ``intrinsics: auto`` (or ``{auto: MODEL}``), or None (and a problem) when it is not a name."""
    model = value["auto"] if isinstance(value, dict) else DEFAULT_FOV_MODEL
    if not isinstance(model, str) or not model.strip():
        problems.add("intrinsics.auto", f"expected a model id or folder, got {model!r}")
        return None
    return model


def with_intrinsics(plan: Plan, intrinsics: dict, estimate: dict) -> Plan:
    """``plan`` with its ``intrinsics: auto`` resolved: the camera path sampled with ``intrinsics``
    (``{fx, fy, cx, cy}`` in render pixels) and the scene scale decided, ``estimate`` (the model's
    record) kept for validate and the report. Runs no model; raises InputError like ``load_plan``."""
    auto = plan.intrinsics_auto
    if auto is None:
        raise ValueError("plan: its intrinsics are not waiting for an estimate")
    problems = ProblemList(str(plan.spec_path), "", plan.line_of)
    values = {**auto.values, "intrinsics": intrinsics}
    trajectory = check_camera(values, (plan.width, plan.height), plan.frames, auto.base_dir, problems)
    scale = None
    if trajectory is not None and not problems:
        scale = decide(values["camera"], auto.base_dir, trajectory, plan.depth_path is not None, plan.depth_model, problems)
    problems.raise_if_any()
    return replace(plan, trajectory=trajectory, scale=scale, intrinsics_estimate=estimate, intrinsics_auto=None)


def plan_chunks(frames: int, chunk_frames: int, first_chunk_frames: int | None = None) -> tuple[Chunk, ...]:
    """Split ``frames`` (4k+1) into chunks of ``chunk_frames`` (4k+1) sharing one boundary frame.

    Chunk 0 covers [0, first_chunk_frames-1] (``chunk_frames`` when None); each later chunk starts on
    the previous chunk's last frame. The last chunk may be shorter; it is still 4k+1 frames because
    all the counts are. The counts must already be checked (``check_frames``: whole numbers within
    ``base.limits``); a chunk of fewer than 2 frames or more frames than ``MAX_FRAMES`` would never
    end, so they raise ValueError here (a programming error, not an input one).
    """
    if not (2 <= chunk_frames and 2 <= (first_chunk_frames or chunk_frames) and 1 <= frames <= MAX_FRAMES):
        raise ValueError(f"plan_chunks: unchecked counts frames={frames!r}, chunk_frames={chunk_frames!r}, "
                         f"first_chunk_frames={first_chunk_frames!r}")
    chunks = [Chunk(0, 0, min(first_chunk_frames or chunk_frames, frames) - 1)]
    while chunks[-1].end < frames - 1:
        start = chunks[-1].end
        chunks.append(Chunk(len(chunks), start, min(start + chunk_frames - 1, frames - 1)))
    return tuple(chunks)


def section_values(v: dict, name: str, fields, problems: ProblemList) -> dict:
    """The nested section ``name`` of the checked spec values, its own fields checked (``name.field``)."""
    return check_fields(v[name] if isinstance(v[name], dict) else {}, fields, problems, prefix=f"{name}.")


def check_sections(v: dict, memory_values: dict, base: Path, problems: ProblemList):
    """The spec's nested sections, each by its own checker: ``memory:`` (its fields checked first, by
    ``load_plan``), ``conditioning:`` (which needs the memory mode) and ``step_cache:`` (refused with the
    VACE branch). (MemorySettings, ConditioningSettings, StepCacheSettings), each None where it has a
    problem."""
    memory = check_memory(memory_values, problems)
    conditioning = check_conditioning(section_values(v, "conditioning", CONDITIONING_FIELDS, problems),
                                      None if memory is None else memory.mode, base, problems)
    step_cache = check_step_cache(section_values(v, "step_cache", STEP_CACHE_FIELDS, problems), base, problems)
    if step_cache is not None and step_cache.enabled and conditioning is not None and conditioning.method != "pin":
        problems.add("step_cache.method", f"step caches are not supported with conditioning.method {conditioning.method} (the "
                                          "VACE branch adds its hints between blocks, which a cache would skip)")
    return memory, conditioning, step_cache


def check_calibration_fit(v: dict, step_cache: StepCacheSettings | None, size, spec_path: Path, problems: ProblemList) -> None:
    """A MagCache calibration measured for other steps or another resolution than the checked spec's
    (``mirage_cli.spec.step_cache.calibration_misfit``; the model is compared once the model flags are
    known: ``mirage validate`` and the render)."""
    steps_ok = isinstance(v["steps"], int) and not any(p.field == "steps" for p in problems.items)
    if step_cache is None or not size or not steps_ok:
        return
    misfit = calibration_misfit(step_cache, steps=v["steps"], resolution=f"{size[0]}x{size[1]}", scene=spec_path)
    if misfit is not None:
        problems.extend([misfit])


def resolve_camera(v: dict, size, frames, depth_model: str, base: Path, problems: ProblemList):
    """The camera path sampled at the render's frames and the scene scale, or, with ``intrinsics:
    auto``, the path checked with a stand-in field of view and left to wait for the estimate (module
    docstring). (Trajectory | None, SceneScale | None, AutoIntrinsics | None)."""
    auto_model = auto_intrinsics_model(v["intrinsics"], problems) if is_auto_intrinsics(v["intrinsics"]) else None
    fps_ok = valid(v["fps"], v["intrinsics"]) and not any(p.field == "fps" for p in problems.items)
    intrinsics_ok = not any((p.field or "").startswith("intrinsics") for p in problems.items)
    if not (isinstance(v["camera"], dict) and size and frames and fps_ok and intrinsics_ok):
        if isinstance(v["camera"], dict):  # what can be checked without the refused values, in the same pass
            problems.items.extend(camera_section_problems(v["camera"], spec_file=problems.file, base_dir=base,
                                                          line_of=problems.line_of))
        return None, None, None
    checked = {**v, "intrinsics": AUTO_STAND_IN} if auto_model is not None else v
    trajectory = check_camera(checked, size, frames, base, problems)
    if auto_model is not None:
        return None, None, AutoIntrinsics(auto_model, {k: v[k] for k in ("camera", "fps", "intrinsics")}, base)
    if trajectory is None or problems:
        return trajectory, None, None
    return trajectory, decide(v["camera"], base, trajectory, v["depth"] is not None, depth_model, problems), None


def chosen_sampler(v: dict, given: dict, flags: dict | None) -> tuple:
    """The ``sampler`` value to check and where it comes from: the flag, the spec, else what the model
    says (``model_sampler``), else the default."""
    said = model_sampler(v["model"]) if isinstance(v["model"], str) else None
    own = said[0] if said and isinstance(said[0], dict) else None  # the model's own dmd timesteps
    for origin, named in (("flag", (flags or {}).get("sampler")), ("spec", given.get("sampler"))):
        if named is not None:  # a bare dmd keeps the model's own timesteps
            return (own if v["sampler"] == DMD and own else v["sampler"]), origin
    return said if said else (None, "default")


def resolve_depth_model(v: dict, preset: str | None) -> str:
    """The depth model of the checked spec values ``v``: the one named, else the tiny one with
    ``--preset tiny``, else a metric model for a path in metres without ``depth:``, else the default."""
    if v["depth_model"] is not None:
        return v["depth_model"]
    if preset == TINY_PRESET:
        return TINY_DEPTH_MODEL
    metric_path = isinstance(v["camera"], dict) and path_units(v["camera"]) == "metres" and v["depth"] is None
    return DEFAULT_METRIC_DEPTH_MODEL if metric_path else DEFAULT_DEPTH_MODEL


def load_plan(spec_path: str | os.PathLike, overrides: dict | None = None, preset: str | None = None) -> Plan:
    """Read, validate and resolve a scene spec.

    Args:
        spec_path: the YAML file.
        overrides: values that replace spec fields after parsing (the CLI's ``--steps`` etc.);
            keys are top-level fields, or ``memory.<name>`` for memory settings.
        preset: the components preset the render runs with (``--preset``): ``tiny`` brings the tiny
            depth model (``depth.tiny``) when neither the spec nor ``overrides`` names one.

    Raises:
        InputError: with every problem found (exit 2).
    """
    path = Path(spec_path)
    if preset is not None and preset not in BACKBONE_PRESETS:
        raise InputError(f"unknown preset {preset!r} (available: {', '.join(BACKBONE_PRESETS)})", field="--preset")
    data, line_of = read_spec_yaml(path)
    problems = ProblemList(str(path), "", line_of)
    v = check_fields(apply_overrides(data, overrides), SPEC_FIELDS, problems)
    v, settings_from, defaults = fill_method_defaults(v, data, overrides)
    sampler = check_sampler(*chosen_sampler(v, data, overrides), problems)
    if sampler is not None:
        fit_steps_and_guidance(v, settings_from, sampler, problems)
    memory_values = section_values(v, "memory", MEMORY_FIELDS, problems)
    frames, chunk_frames = check_frames(v["frames"], v["chunk_frames"], problems, default_chunk=defaults.chunk_frames)
    check_numbers(v, problems)
    size = check_resolution(v["resolution"], problems)
    memory, conditioning, step_cache = check_sections(v, memory_values, path.parent, problems)
    image, depth, mask = check_files(v, path.parent, problems)
    loras = check_loras(v["loras"], path.parent, problems) if valid(v["loras"]) else ()
    output = resolve_output(v, path.parent, path.stem, problems)
    branch_from = resolve_branch_source(v, path.parent, output, problems, (overrides or {}).get("from"))
    first_chunk = None
    if settings_from.get("chunk_frames", "").startswith("method") and defaults.first_chunk_frames and frames:
        first_chunk = min(defaults.first_chunk_frames, frames)  # the method's first round (spatia: 121 frames)
    chunks = plan_chunks(frames, chunk_frames, first_chunk) if frames and chunk_frames else ()
    prompts = (chunk_prompts(v["prompts"], chunks, v["prompt"], path.parent, problems)
               if chunks and isinstance(v["prompt"], str) and valid(v["prompts"]) else ())
    check_calibration_fit(v, step_cache, size, path, problems)
    depth_model = resolve_depth_model(v, preset)
    trajectory, scale, auto = resolve_camera(v, size, frames, depth_model, path.parent, problems)
    problems.raise_if_any()
    assert INVALID not in v.values() and chunk_frames is not None and memory is not None  # else a problem was raised
    return Plan(
        spec_path=path,
        prompt=v["prompt"],
        negative_prompt=v["negative_prompt"],
        image_path=image,
        depth_path=depth,
        depth_scale=float(PNG_DEPTH_SCALE if v["depth_scale"] is None else v["depth_scale"]),
        mask_path=mask,
        trajectory=trajectory,
        camera_source=describe_camera_source(v["camera"]),
        frames=frames,
        fps=float(v["fps"]),
        width=size[0],
        height=size[1],
        chunk_frames=chunk_frames,
        chunks=chunks,
        steps=v["steps"],
        guidance=float(v["guidance"]),
        shift=float(v["shift"]),
        seed=v["seed"],
        model=v["model"],
        memory=memory,
        depth_model=depth_model,
        output=output,
        branch_from=branch_from,
        chunk_prompts=prompts,
        conditioning=conditioning,
        step_cache=step_cache,
        sampler=sampler,
        loras=loras,
        scale=scale,
        intrinsics_auto=auto,
        settings_from=settings_from,
        defaults_source=defaults.source,
        line_of=line_of,
    )


def trim_plan(plan: Plan, chunks: int | None) -> Plan:
    """The plan limited to its first ``chunks`` chunks (None: all)."""
    if chunks is None or chunks >= len(plan.chunks):
        return plan
    if chunks < 1:
        raise ValueError(f"chunks: expected at least 1, got {chunks}")
    kept = plan.chunks[:chunks]
    return replace(plan, chunks=kept, frames=kept[-1].end + 1)
