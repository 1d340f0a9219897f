"""``predict_vram``: the peak device memory of each stage of a render, from meta-device traces of the
real modules at the render's real shapes.

Per stage (the profiler's stage names), the peak is

    weights on the device  +  tensors carried in from earlier stages  +  the stage's own transient

- *weights*: which components are on the device during the stage follows the offload mode. With
  ``--offload none`` on a GPU the components wait on the CPU and move to the device at their first use
  (``Backbone.use``): the text encoder embeds the prompts and is freed before the transformer arrives.
  ``model``: only the running component (and the depth model, which is never offloaded).
  ``group``: the running component's top-level weights and two of its blocks (one computing, one
  prefetched). ``sequential``: its largest layer. On the CPU everything loaded stays (the text encoder
  until the prompts are embedded).
- *transient*: the most bytes the stage's own code allocates and holds at once, traced with
  ``mirage_cli.vram.meta_trace`` (fused attention, as every GPU backend runs it). The denoising loop is
  the real ``denoise_chunk`` run on the CPU for three steps at the real latent shape, with the
  transformer's traced forward standing in for the transformer.
- *carried*: the inputs the stage receives (prompt embeddings, latents, the decoded chunk), from their
  shapes.

Not counted: the CUDA context (outside the allocator), kernel workspaces (cuBLAS, cuDNN), allocator
rounding and fragmentation; ``mirage_cli.vram.plan`` keeps a headroom for them. The memory module's
own tensors (queries, the point cache) are a few MB at the real size and not traced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mirage_cli.backbone.decoding import DECODE_CONTEXT
from mirage_cli.conditioning.conditioners import CONDITIONERS
from mirage_cli.vram.meta_models import MetaComponents
from mirage_cli.vram.meta_trace import weight_bytes
from mirage_cli.vram.stages import TRACES

GIB = 2**30
STAGES = ("text_encoding", "start_encode", "denoise", "decode", "depth_estimation")
"""The stages of a render that use the model, by their profiler names, in the order they run."""


@dataclass(frozen=True)
class RenderShape:
    """The sizes that set a render's memory.

    ``width``, ``height``: pixels. ``latent_frames``: T of the longest chunk. ``decode_context``,
    ``decode_latent_frames``: the chunk the VAE decodes the most latent frames for (its own T after
    the previous chunk's context frames). ``guidance``: > 1 runs the negative prompt too.
    ``stores_frames``: the memory mode keeps frames (the depth stage runs).
    """

    width: int
    height: int
    latent_frames: int
    decode_context: int
    guidance: float
    stores_frames: bool
    decode_latent_frames: int = 0  # 0: latent_frames

    @classmethod
    def of_plan(cls, plan) -> RenderShape:
        decodes, context = [], 0  # (latent frames, context frames) of every chunk, as the rollout decodes them
        for chunk in plan.chunks:
            decodes.append((chunk.num_latent_frames, context))
            context = min(DECODE_CONTEXT, context + chunk.num_latent_frames - 1)
        frames, context = max(decodes, key=lambda d: (d[0] + d[1], d[0]))
        return cls(plan.width, plan.height, max(chunk.num_latent_frames for chunk in plan.chunks), context, float(plan.guidance),
                   CONDITIONERS[plan.memory.mode].stores_frames, frames)

    @property
    def pixel_frames(self) -> int:
        return 4 * (self.latent_frames - 1) + 1


@dataclass
class StagePeak:
    """One stage's predicted peak, in bytes, and the components on the device during it."""

    stage: str
    weights: int
    carried: int
    transient: int
    on_device: tuple[str, ...]

    @property
    def peak(self) -> int:
        return self.weights + self.carried + self.transient

    def to_dict(self) -> dict:
        return {"stage": self.stage, "peak_gib": _gib(self.peak), "weights_gib": _gib(self.weights),
                "carried_gib": _gib(self.carried), "transient_gib": _gib(self.transient), "on_device": list(self.on_device)}


@dataclass
class VramPrediction:
    """The predicted peaks of a render's stages under one memory plan (``offload``, ``vae_tiling``)."""

    stages: list[StagePeak]
    offload: str
    vae_tiling: bool
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(stage.peak for stage in self.stages)

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda stage: stage.peak).stage

    def to_dict(self) -> dict:
        return {"offload": self.offload, "vae_tiling": self.vae_tiling, "peak_gib": _gib(self.peak),
                "peak_stage": self.peak_stage, "stages": [stage.to_dict() for stage in self.stages], "notes": list(self.notes)}


def _gib(nbytes: int) -> float:
    return round(nbytes / GIB, 3)


# --- which weights are on the device -----------------------------------------------------------------

_RUNS = {"text_encoding": "text_encoder", "start_encode": "vae", "denoise": "transformer", "decode": "vae",
         "depth_estimation": "depth"}
_FIRST_USE = {  # --offload none on a GPU: what has arrived by each stage (the text encoder is freed after its stage)
    "text_encoding": ("text_encoder", "depth"),
    "start_encode": ("vae", "depth"),
    "denoise": ("transformer", "vae", "depth"),
    "decode": ("transformer", "vae", "depth"),
    "depth_estimation": ("transformer", "vae", "depth"),
}


def on_device(stage: str, offload: str, device_type: str) -> tuple[str, ...]:
    """The components whose weights (all or part, see ``stage_weights``) are on the device during ``stage``."""
    if device_type == "cpu":
        loaded = ("transformer", "vae", "depth")
        return ("text_encoder", *loaded) if stage == "text_encoding" else loaded
    if offload == "none":
        return _FIRST_USE[stage]
    running = _RUNS[stage]
    if offload == "model" and stage == "depth_estimation":
        return ("vae", "depth")  # the VAE stays until another component is used
    return (running,) if running == "depth" else (running, "depth")


def _partial_weights(module: torch.nn.Module, offload: str) -> int:
    """Bytes of ``module`` on the device while it runs under ``group`` or ``sequential`` offloading."""
    if offload == "sequential":
        return max((weight_bytes(m) for m in module.modules() if not list(m.children())), default=0)
    blocks = [child for m in module.modules() if isinstance(m, torch.nn.ModuleList) for child in m]
    in_blocks = sum(weight_bytes(block) for block in blocks if not any(block is not b and _contains(b, block) for b in blocks))
    largest = max((weight_bytes(block) for block in blocks), default=0)
    return weight_bytes(module) - in_blocks + 2 * largest


def _contains(outer: torch.nn.Module, inner: torch.nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def _module(parts: MetaComponents, name: str) -> torch.nn.Module | None:
    if name == "depth":
        return None if parts.depth is None else parts.depth.model
    return getattr(parts, name)


def stage_weights(parts: MetaComponents, names: tuple[str, ...], running: str, offload: str) -> int:
    """Bytes of weights on the device: whole components, except the running one under group/sequential."""
    total = 0
    for name in names:
        module = _module(parts, name)
        if module is None:
            continue
        partial = offload in ("group", "sequential") and name == running and name != "depth"
        total += _partial_weights(module, offload) if partial else weight_bytes(module)
    return total



Transients = dict[str, tuple[int, int]]
"""Per stage: (carried, transient) bytes, as ``mirage_cli.vram.stages`` traces them."""


def trace_transients(parts: MetaComponents, shape: RenderShape) -> Transients:
    """Trace every stage once (independent of the offload mode; the VAE's tiling is in ``parts``)."""

    return {stage: TRACES[stage](parts, shape) for stage in STAGES}


def predict_vram(parts: MetaComponents, shape: RenderShape, *, offload: str, device_type: str = "cuda",
                 transients: Transients | None = None) -> VramPrediction:
    """The predicted peak of every model stage of a render of ``shape`` with ``parts`` (built with the
    plan's VAE tiling and fp8) under ``offload`` on a ``device_type`` device. ``transients``: the
    stages already traced for these parts and shape (``trace_transients``)."""
    transients = transients if transients is not None else trace_transients(parts, shape)
    stages = []
    for stage in STAGES:
        carried, transient = transients[stage]
        names = tuple(name for name in on_device(stage, offload, device_type) if _module(parts, name) is not None)
        stages.append(StagePeak(stage, stage_weights(parts, names, _RUNS[stage], offload), carried, transient, names))
    tiling = bool(getattr(parts.vae, "use_tiling", False))
    return VramPrediction(stages, offload, tiling, list(parts.notes))
