"""The Mirage paper's trained-conditioning recipe, piece by piece (facts of the official
``MiragePipeline.generate_single_iteration``; the code is ours):

- the latent sequence is ``[reference latents | target latents | preceding latents]`` along time;
  per-token timestep 0 for the references, the preceding frames and the target's frame 0, the
  step's timestep for the other target frames (``sequence_timestep``);
- the VACE context (96 channels) is the warped memory latent of the target and preceding frames
  (48) next to the latent of an all-white "score" video of the same length (48), encoded once per
  size (``ScoreLatents``, ``vace_context``);
- up to 4 references: past generated latent frames whose visible memory points share at least 4%
  of their 0.1-unit voxels (intersection over union) with the points visible from the target
  cameras, best first (``visible_voxels``, ``voxel_iou``, ``select_references``);
- the timesteps are the original Wan2.2 scheduler's (``WAN_SIGMAS``), not diffusers' grid;
- after every step, and before the first, the target's frame 0 is set to the conditioning latent
  (``denoise_vace_chunk``), whose loop state is a ``DenoiseState`` like the training-free loop's,
  so a chunk stopped mid-way continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import Tensor

from mirage_cli.backbone.vace import VACE_IN_CHANNELS
from mirage_cli.backbone.vace_forward import vace_forward
from mirage_cli.denoise.loop import (
    PATCH,
    WAN_SIGMAS,
    DenoiseResult,
    DenoiseState,
    FiniteWatch,
    SchedulerState,
    _cache_context,
    _start,
)
from mirage_cli.profiling.profiler import DENOISE_STEP

MAX_REFERENCES = 4
REFERENCE_IOU_THRESHOLD = 0.04
REFERENCE_VOXEL = 0.1
PRECEDING_LATENT_FRAMES = 2
"""8 preceding pixel frames: the 2 latent frames before the chunk's conditioning frame."""


class ScoreLatents:
    """The latent of an all-white video of T latent frames at (h, w), encoded once per size."""

    def __init__(self, backbone):
        self.backbone = backbone
        self._cache: dict[tuple[int, int, int], Tensor] = {}

    def get(self, frames: int, h: int, w: int) -> Tensor:
        """float32 [C, T, h, w] (normalized, as every latent outside the backbone)."""
        key = (frames, h, w)
        if key not in self._cache:
            s = self.backbone.spatial_scale
            white = torch.ones(1, 3, 4 * (frames - 1) + 1, h * s, w * s, device=self.backbone.device)
            self._cache[key] = self.backbone.encode_video(white)[0]
        return self._cache[key]


def vace_context(scene: Tensor, score: Tensor) -> Tensor:
    """[1, 96, T, h, w]: the warped memory latent ``scene`` [C, T, h, w] above the score latent [C, T, h, w]."""
    if scene.shape != score.shape or scene.shape[0] * 2 != VACE_IN_CHANNELS:
        raise ValueError(f"scene, score: expected two [{VACE_IN_CHANNELS // 2}, T, h, w], got {list(scene.shape)} and {list(score.shape)}")
    return torch.cat([scene, score.to(scene)], dim=0).unsqueeze(0)


def preceding_span(recorded: int, count: int = PRECEDING_LATENT_FRAMES) -> slice:
    """Which of the ``recorded`` generated latent frames a chunk takes as its preceding frames: the
    ``count`` before the last one (the last is the chunk's conditioning frame 0); empty before there are two."""
    stop = max(0, recorded - 1)
    return slice(max(0, stop - count), stop)


def sequence_timestep(t: Tensor, refs: int, target: int, preceding: int, tokens_per_frame: int, held: int = 1) -> Tensor:
    """float32 [1, (refs + target + preceding) * tokens]: 0 on references, preceding frames and the
    target's first ``held`` frames (its conditioning frame; Spatia's history frames); ``t`` on the other
    target frames."""
    per_frame = torch.zeros(refs + target + preceding, dtype=torch.float32, device=t.device)
    per_frame[refs + held : refs + target] = t.to(torch.float32)
    return per_frame.repeat_interleave(tokens_per_frame).unsqueeze(0)


def visible_voxels(xyz: Tensor, K: Tensor, world_from_cam: Tensor, size: tuple[int, int], voxel: float = REFERENCE_VOXEL) -> Tensor:
    """int64 [V] sorted keys of the ``voxel``-sized cells holding points of ``xyz`` [N, 3] that project
    inside a camera (K [3, 3] at ``size`` (h, w), world_from_cam [4, 4]) in front of it, ``0 <= u < w`` and
    ``0 <= v < h``; no occlusion test (the official selection's rule; its latent intrinsics are the pixel
    ones times the cell scale, so the bounds mean the same at pixel size)."""
    cam_from_world = torch.linalg.inv(world_from_cam.to(torch.float64))
    p = xyz.to(torch.float64) @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    z = p[:, 2]
    u = p[:, 0] * K[0, 0].double() / z + K[0, 2].double()
    v = p[:, 1] * K[1, 1].double() / z + K[1, 2].double()
    h, w = size
    inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)  # the official bounds
    cells = torch.floor(xyz[inside].to(torch.float64) / voxel).long().clamp(-(1 << 20) + 1, (1 << 20) - 1) + (1 << 20)
    return torch.unique((cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2])


def voxel_iou(a: Tensor, b: Tensor) -> float:
    """Intersection over union of two sets of voxel keys (int64, unique)."""
    if a.numel() == 0 or b.numel() == 0:
        return 0.0
    both = int(torch.isin(a, b).sum())
    return both / (a.numel() + b.numel() - both)


def select_references(target: Tensor, history: list[tuple[int, Tensor]], max_refs: int = MAX_REFERENCES,
                      threshold: float = REFERENCE_IOU_THRESHOLD) -> list[int]:
    """The latent-frame indices (of ``history``: (index, voxel keys) per generated latent frame) whose
    voxel IoU with ``target`` is at least ``threshold``, best first (ties: earlier frame first), at most
    ``max_refs``."""
    scored = [(voxel_iou(target, keys), index) for index, keys in history]
    scored = [(iou, index) for iou, index in scored if iou >= threshold]
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [index for _, index in scored[:max_refs]]


def _velocity(model, sequence, timestep, control, refs, prompt_embeds, negative_prompt_embeds, guidance):
    """Guided velocity of the whole sequence [1, C, R+T+P, h, w] float32."""
    with _cache_context(model, "cond"):
        velocity = vace_forward(model, sequence, timestep, prompt_embeds, control, ref_frames=refs).to(torch.float32)
    if guidance > 1.0:
        with _cache_context(model, "uncond"):
            uncond = vace_forward(model, sequence, timestep, negative_prompt_embeds, control, ref_frames=refs).to(torch.float32)
        velocity = uncond + guidance * (velocity - uncond)
    return velocity


@torch.no_grad()
def denoise_vace_chunk(
    backbone, model, *, noise: Tensor, cond_frame0: Tensor, references: Tensor | None, preceding: Tensor | None,
    control: Tensor, prompt_embeds: Tensor, negative_prompt_embeds: Tensor | None, guidance: float, steps: int,
    shift: float, generator: torch.Generator, resume_state: DenoiseState | None = None,
    on_step: Callable[[int, DenoiseState], bool | None] | None = None, profiler=None, sigmas: str = WAN_SIGMAS,
    timesteps: Sequence[float] | None = None,
) -> DenoiseResult:
    """Denoise one chunk's target latents with the VACE model ``model`` (``attach_vace``).

    ``noise``: [1, C, T, h, w] the initial target sample. ``cond_frame0``: [C, h, w] the conditioning
    latent (target frame 0), or [C, k, h, w] the first k target frames (Spatia's history), held at
    timestep 0 and set again after every step. ``references``: [1, C, R, h, w] or None; ``preceding``: [1, C, P, h, w] or
    None. ``control``: [1, 96, T + P, h, w] (``vace_context``). ``sigmas``: the timestep grid, the
    original Wan2.2 one by default as the official inference (``set_sigmas``). ``timesteps``: the
    few-step sampler at these timesteps instead of UniPC (``mirage_cli.denoise.few_step``). The rest as
    ``denoise_chunk`` (under UniPC this recipe draws nothing after the noise; the few-step sampler
    re-noises from the generator).

    Returns ``DenoiseResult(latents [1, C, T, h, w] float32, completed, state)``.
    """
    device, dtype = backbone.device, backbone.dtype
    _, C, T, h, w = noise.shape
    refs = 0 if references is None else references.shape[2]
    pre = 0 if preceding is None else preceding.shape[2]
    if control.shape != (1, VACE_IN_CHANNELS, T + pre, h, w):
        raise ValueError(f"control: expected [1, {VACE_IN_CHANNELS}, {T + pre}, {h}, {w}], got {list(control.shape)}")
    scheduler, latents, first = _start(backbone, noise, steps, shift, generator, 0, resume_state, sigmas, timesteps)
    held = cond_frame0 if cond_frame0.ndim == 4 else cond_frame0.unsqueeze(1)  # [C, k, h, w]
    held = held.to(device=device, dtype=torch.float32)
    k = held.shape[1]
    if not 1 <= k < T:
        raise ValueError(f"cond_frame0: {k} held frames for a target of {T} latent frames")
    latents = latents.clone()
    latents[:, :, :k] = held
    context = [x.to(device=device, dtype=dtype) for x in (references, preceding) if x is not None]
    control = control.to(device=device, dtype=dtype)
    prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
    if guidance > 1.0:
        negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
    tokens = (h // PATCH) * (w // PATCH)
    watch = FiniteWatch(steps)  # NaN or inf stops the chunk (mirage_cli.denoise.loop)
    for i in range(first, steps):
        with profiler.stage(DENOISE_STEP) if profiler is not None else nullcontext():
            t = scheduler.timesteps[i]
            parts = ([context[0]] if refs else []) + [latents.to(dtype)] + ([context[-1]] if pre else [])
            sequence = torch.cat(parts, dim=2)  # [1, C, R+T+P, h, w]
            timestep = sequence_timestep(t, refs, T, pre, tokens, held=k)
            velocity = _velocity(model, sequence, timestep, control, refs, prompt_embeds, negative_prompt_embeds, guidance)
            latents = scheduler.step(velocity[:, :, refs : refs + T], t, latents, return_dict=False)[0]
            latents = latents.clone()
            latents[:, :, :k] = held  # the conditioning frame(s) re-clamped after every step
            watch.after_step(i, latents)
        if on_step is not None:
            state = DenoiseState(latents, i + 1, steps, float(shift), SchedulerState.capture(scheduler), generator.get_state())
            if on_step(i, state) is True and i + 1 < steps:
                watch.flush()
                return DenoiseResult(latents=latents, completed=False, state=state)
    watch.flush()
    return DenoiseResult(latents=latents, completed=True, state=None)
