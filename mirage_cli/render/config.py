"""The run's configuration: everything that changes the rendered output, as a JSON-able dict whose
fingerprint (``mirage_cli.rundir.layout.fingerprint``) a resumed render must match (``run.json``'s ``config``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirage_cli.base.files import file_record
from mirage_cli.base.options import BackboneOptions, Projection, RenderOptions
from mirage_cli.denoise.loop import WAN_SIGMAS
from mirage_cli.rundir.layout import fingerprint
from mirage_cli.spec.plan import Plan
from mirage_cli.spec.step_cache import check_calibration_fits


@dataclass(frozen=True)
class RunSettings:
    """A render's settings, decided once before anything is written (the session's stage 0).

    ``options``: the options the render runs with (dtype resolved, the VRAM plan applied).
    ``config``: what changes the output (``render_config``); ``fingerprint``: its hash, which a resumed
    render and every rank of a parallel one must match. ``vram_plan``: the ``--vram-budget`` choice
    for the report (``mirage_cli.vram.plan``), None when none was made.
    """

    options: RenderOptions
    config: dict
    fingerprint: str
    vram_plan: dict | None = None

    @classmethod
    def of(cls, plan: Plan, options: RenderOptions, vram_plan: dict | None = None) -> RunSettings:
        config = render_config(plan, options)
        return cls(options, config, fingerprint(config), vram_plan)


def _sha256_file(path: Path | None) -> str | None:
    return None if path is None else file_record(path)["sha256"]


def config_model(plan: Plan, backbone: BackboneOptions) -> str:
    """The model a render runs, as its configuration (and a MagCache calibration) names it: the spec's
    model id or folder, or ``preset:NAME`` with ``--preset``."""
    return plan.model if backbone.preset is None else f"preset:{backbone.preset}"


def check_plan_calibration(plan: Plan, backbone: BackboneOptions) -> None:
    """Refuse a MagCache calibration measured for other steps, another size or another model than
    the render of ``plan`` with ``backbone`` (``spec.step_cache.check_calibration_fits``): the one call
    ``validate``, ``render`` and ``batch`` make."""
    check_calibration_fits(plan.step_cache, steps=plan.steps, resolution=f"{plan.width}x{plan.height}",
                           model=config_model(plan, backbone), scene=plan.spec_path)


def render_config(plan: Plan, options: RenderOptions) -> dict:
    """Everything that changes the rendered output, as a JSON-able dict (fingerprinted).

    Not included: where it runs and how fast (device, offload, compile, output directory):
    resuming on another machine is allowed. VAE tiling and the attention backend change the pixels
    (other arithmetic), so they are included when set.
    """
    traj = plan.trajectory
    cams = np.concatenate([traj.world_from_cam.reshape(-1), traj.K.reshape(-1)]).astype(np.float64)
    backbone = options.backbone
    return {
        "prompt": plan.prompt,
        **({"chunk_prompts": list(plan.chunk_prompts)} if plan.varied_prompts else {}),
        **_conditioning_config(plan),
        **_loras_config(plan),
        "negative_prompt": plan.negative_prompt,
        "image_sha256": _sha256_file(plan.image_path),
        "depth_sha256": _sha256_file(plan.depth_path),
        "depth_scale": plan.depth_scale,
        "mask_sha256": _sha256_file(plan.mask_path),
        "camera_sha256": hashlib.sha256(cams.tobytes()).hexdigest(),
        "frames": plan.frames,
        "fps": plan.fps,
        "width": plan.width,
        "height": plan.height,
        "chunk_frames": plan.chunk_frames,
        **({"first_chunk_frames": plan.first_chunk_frames} if plan.first_chunk_frames != plan.chunk_frames else {}),
        "steps": plan.steps,
        "guidance": plan.guidance,
        "shift": plan.shift,
        # the few-step sampler and its timesteps; UniPC runs keep their fingerprint
        **({"sampler": plan.sampler.summary()} if plan.sampler.few_step else {}),
        "seed": plan.seed,
        "model": config_model(plan, backbone),
        "random_weights": backbone.random_weights,
        "dtype": backbone.dtype,
        "fp8": backbone.fp8,
        "memory": plan.summary()["memory"],
        "depth_model": plan.depth_model,
        "video": options.video.config(),
        # Options that change the decoded pixels, recorded only when set (runs without them keep
        # their fingerprint). --compile and --offload change how fast, not what: not recorded.
        **({"vae_tiling": True} if backbone.vae_tiling else {}),
        **({"random_text_encoder": True} if backbone.random_text_encoder else {}),
        **({"attention_backend": backbone.attention_backend} if backbone.attention_backend else {}),
        **_step_cache_config(plan),
        # where the start depth's scale comes from, unless a depth file gives it (those runs keep their fingerprint)
        **({"scene_scale": plan.scale.config()} if plan.scale is not None and plan.scale.source not in ("depth file", "no depth")
           else {}),
    }


def _step_cache_config(plan: Plan) -> dict:
    """The step cache, when one is on: method, knob and the MagCache calibration by content."""
    c = plan.step_cache
    if not c.enabled:
        return {}
    return {"step_cache": {"method": c.method, "threshold": c.threshold, "interval": c.interval,
                           "calibration_sha256": _sha256_file(c.calibration)}}


def _loras_config(plan: Plan) -> dict:
    """The LoRA stack, when there is one: each file by content (sha256) and its scale, in fusing order."""
    return {"loras": [{"sha256": _sha256_file(lora.path), "scale": lora.scale} for lora in plan.loras]} if plan.loras else {}


def _conditioning_config(plan: Plan) -> dict:
    """The conditioning, when it is not the default: its method, its weights by content (sha256) and how
    the memory is projected (pin renders with footprints keep their fingerprint)."""
    c = plan.conditioning
    if c.method == "pin" and c.lora is None and c.projection == Projection.FOOTPRINT:
        return {}
    return {"conditioning": {"method": c.method, "vace_sha256": _sha256_file(c.vace), "lora_sha256": _sha256_file(c.lora),
                             "lora_scale": c.lora_scale if c.lora is not None else None, "projection": c.projection.value,
                             # the timestep grid: the original Wan2.2 scheduler's for vace (its authors' inference)
                             **({"sigmas": WAN_SIGMAS} if c.method in ("vace", "spatia") else {})}}
