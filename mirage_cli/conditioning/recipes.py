"""How a chunk is denoised under the memory's conditioning: one class per ``conditioning.method``.

- ``PinRecipe`` (``pin``, training-free): the conditioner's confident cells are held on their warped
  latents (``mirage_cli.denoise.loop.denoise_chunk``).
- ``VaceRecipe`` (``vace``, the Mirage paper's trained conditioning): the warped memory of the chunk
  and of the 2 latent frames before it goes to the VACE branch with the score latent; up to 4 earlier
  generated latent frames whose view overlaps the chunk's join the sequence as references, the 2
  preceding latent frames follow it (``mirage_cli.conditioning.vace``). It keeps, per generated latent frame,
  the latent, the memory's warped latent there (its "scene") and the voxels of the memory visible
  from its camera; all of it is checkpointed.

- ``SpatiaRecipe`` (``spatia``, Spatia's weights as Spatia runs them): the RGB memory rendered on black
  with its hole score, the last 9 generated frames encoded again as the sequence's start, up to 7
  earlier frames as references by z-buffer visibility and Hungarian matching, the LoRA fused from the
  second chunk on (``mirage_cli.conditioning.spatia``). It keeps the 8-bit frames it may need again.

The rollout calls ``denoise`` for every chunk (on ``noise_frames`` latent frames of noise), ``decode``
for its latents, and ``remember`` once a chunk's frames are in the memory.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from mirage_cli.backbone.decoding import decode_with_context
from mirage_cli.backbone.lora import apply_lora
from mirage_cli.conditioning.spatia import (
    CANDIDATE_RATE,
    HISTORY_FRAMES,
    REFERENCE_CAMERA_RATE,
    control_videos,
    encode_frames,
    frame_stride,
    frontmost_visible,
    history_length,
    history_target,
    match_references,
    reference_candidates,
    reference_latents,
    to_uint8,
    window_frames,
)
from mirage_cli.conditioning.vace import (
    ScoreLatents,
    denoise_vace_chunk,
    preceding_span,
    select_references,
    vace_context,
    visible_voxels,
)
from mirage_cli.denoise.loop import DenoiseResult, DenoiseState, denoise_chunk


class Recipe(Protocol):
    def start(self, latent: Tensor, image: Tensor) -> None:
        """The start image (latent [C, h, w], pixels [3, H, W] in [0, 1]) is in the memory."""

    def noise_frames(self, chunk) -> int:
        """Latent frames of noise ``denoise`` takes for ``chunk`` (at least the chunk's)."""

    def denoise(self, chunk, view, *, noise: Tensor, cond_frame0: Tensor, prompt_embeds: Tensor, negative_prompt_embeds: Tensor,
                generator: torch.Generator, resume_state: DenoiseState | None, on_step, profiler) -> DenoiseResult:
        """Denoise ``chunk`` (noise [1, C, noise_frames, h, w]) under the conditioner's ``view``; the
        completed result holds the chunk's latents [1, C, T, h, w]."""

    def decode(self, chunk, latents: Tensor, context: Tensor | None) -> Tensor:
        """The chunk's pixels [3, F, H, W] in [-1, 1] from its latents [1, C, T, h, w] (``context``: the
        rollout's decode context, ``mirage_cli.backbone.decoding``)."""

    def remember(self, chunk, latents: Tensor, view, pixels: Tensor) -> None:
        """The chunk's latents [C, T, h, w] and pixels [3, F, H, W] are generated and its frames are in the memory."""

    def state_tensors(self) -> dict[str, dict[str, Tensor]]: ...

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None: ...


class _ChunkRecipe:
    """What the recipes share unless they say otherwise: the chunk's own noise, the decode after the
    previous chunk's latents, nothing to remember or save."""

    def __init__(self, plan, backbone, conditioner):
        self.plan = plan
        self.backbone = backbone
        self.conditioner = conditioner

    def start(self, latent: Tensor, image: Tensor) -> None:
        return None

    def noise_frames(self, chunk) -> int:
        return chunk.num_latent_frames

    def decode(self, chunk, latents: Tensor, context: Tensor | None) -> Tensor:
        return decode_with_context(self.backbone, latents, context)

    def remember(self, chunk, latents: Tensor, view, pixels: Tensor) -> None:
        return None

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        return {}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        return None


def sampler_args(plan) -> dict:
    """The loops' sampler arguments from ``plan.sampler``: UniPC's ``shift``, or the few-step sampler's
    ``timesteps`` and table ``shift`` (``mirage_cli.denoise.few_step``)."""
    if plan.sampler.few_step:
        return {"shift": plan.sampler.shift, "timesteps": plan.sampler.timesteps}
    return {"shift": plan.shift}


class PinRecipe(_ChunkRecipe):
    """``conditioning.method: pin``: memory cells held while denoising (``denoise_chunk``)."""

    def __init__(self, plan, backbone, conditioner, denoise=denoise_chunk):
        super().__init__(plan, backbone, conditioner)
        self.denoise_chunk = denoise  # a parallel render's leader runs it on the whole team (mirage_cli.render.parallel)

    def denoise(self, chunk, view, *, noise, cond_frame0, prompt_embeds, negative_prompt_embeds, generator, resume_state, on_step,
                profiler) -> DenoiseResult:
        plan = self.plan
        return self.denoise_chunk(
            self.backbone, noise=noise, cond_frame0=cond_frame0, pinned_latents=view.latents, pin_mask=view.mask,
            pin_mode=plan.memory.pin, pin_until=plan.memory.pin_until, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, guidance=plan.guidance, steps=plan.steps,
            generator=generator, resume_state=resume_state, on_step=on_step, profiler=profiler, **sampler_args(plan),
        )


class VaceRecipe(_ChunkRecipe):
    """``conditioning.method: vace``: the trained VACE branch (see the module docstring).

    State: ``latents`` [N, C, h, w] and ``scenes`` [N, C, h, w] of every generated latent frame (the
    start image's first), ``visible`` the voxel keys of the memory seen from each (ragged, kept as
    one int64 vector and N counts). As in the official inference, the history is empty until chunk 0
    is rendered (chunk 0 has no references and no preceding frames), and each chunk's frames are
    recorded after they went into the memory: all of chunk 0's (its frame 0 is the start image),
    frames 1..T-1 of the later ones (their frame 0 is the previous chunk's last).
    """

    def __init__(self, plan, backbone, conditioner):
        super().__init__(plan, backbone, conditioner)  # a memory conditioner (latent or rgb): its points and cameras
        self.scores = ScoreLatents(backbone)
        self.latents: list[Tensor] = []  # [C, h, w] per generated latent frame, backbone dtype, CPU
        self.scenes: list[Tensor] = []  # [C, h, w] the warped memory there
        self.visible: list[Tensor] = []  # int64 [V] voxel keys of the memory visible from its camera

    # --- history --------------------------------------------------------------------------------

    def start(self, latent: Tensor, image: Tensor) -> None:
        """Nothing is recorded before chunk 0 is rendered (class docstring)."""

    def _visible(self, frame: int) -> Tensor:
        """int64 [V] voxel keys of the memory's points inside video frame ``frame``'s view."""
        c = self.conditioner
        K, world_from_cam = c._cameras([frame])
        return visible_voxels(c.memory.cache.xyz, K[0], world_from_cam[0], (c.cameras.height, c.cameras.width)).cpu()

    def _append(self, latents: Tensor, scenes: Tensor, frames: list[int]) -> None:
        """Record generated latent frames ([k, C, h, w], their scenes [k, C, h, w]) seen from video ``frames``."""
        store = self.backbone.dtype
        for k, frame in enumerate(frames):
            self.latents.append(latents[k].to(device="cpu", dtype=store).clone())
            self.scenes.append(scenes[k].to(device="cpu", dtype=store).clone())
            self.visible.append(self._visible(frame))

    def remember(self, chunk, latents: Tensor, view, pixels: Tensor) -> None:
        """After the chunk's frames went into the memory: record its latent frames (``latents``
        [C, T, h, w]; their scenes, the memory warped there, ``view.latents`` [T, C, h, w]), all of them
        for the first chunk, 1..T-1 after it."""
        first = 0 if not self.latents else 1
        self._append(latents[:, first:].permute(1, 0, 2, 3), view.latents[first:], chunk.latent_camera_frames()[first:])

    # --- denoise --------------------------------------------------------------------------------

    def _references(self, chunk) -> Tensor | None:
        """[1, C, R, h, w] the generated latent frames whose view overlaps the chunk's, or None (always
        for chunk 0: nothing is generated yet)."""
        if not self.latents:
            return None
        target = torch.unique(torch.cat([self._visible(frame) for frame in chunk.latent_camera_frames()]))
        chosen = select_references(target, list(enumerate(self.visible)))
        if not chosen:
            return None
        return torch.stack([self.latents[i] for i in chosen], dim=1).unsqueeze(0)  # [1, C, R, h, w]

    def denoise(self, chunk, view, *, noise, cond_frame0, prompt_embeds, negative_prompt_embeds, generator, resume_state, on_step,
                profiler) -> DenoiseResult:
        device = self.backbone.device
        before = preceding_span(len(self.latents))
        preceding = torch.stack(self.latents[before], dim=1).unsqueeze(0) if before.stop > before.start else None
        scene = view.latents.permute(1, 0, 2, 3).to(device=device, dtype=torch.float32)  # [C, T, h, w]
        if preceding is not None:
            scene = torch.cat([scene, torch.stack(self.scenes[before], dim=1).to(scene)], dim=1)  # [C, T+P, h, w]
        C, frames, h, w = scene.shape
        control = vace_context(scene, self.scores.get(frames, h, w))
        plan = self.plan
        return denoise_vace_chunk(
            self.backbone, self.backbone.transformer, noise=noise, cond_frame0=cond_frame0,
            references=self._references(chunk), preceding=preceding, control=control,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, guidance=plan.guidance,
            steps=plan.steps, generator=generator, resume_state=resume_state, on_step=on_step, profiler=profiler,
            **sampler_args(plan),
        )

    # --- state ----------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        counts = torch.tensor([v.numel() for v in self.visible], dtype=torch.int64)
        if not self.latents:  # before chunk 0 is rendered: an empty history
            empty = torch.zeros(0, dtype=self.backbone.dtype)
            return {"vace": {"latents": empty, "scenes": empty.clone(), "visible_keys": torch.zeros(0, dtype=torch.int64),
                             "visible_counts": counts}}
        return {"vace": {"latents": torch.stack(self.latents).contiguous(), "scenes": torch.stack(self.scenes).contiguous(),
                         "visible_keys": torch.cat(self.visible).contiguous(), "visible_counts": counts}}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        group = tensors["vace"]
        counts = group["visible_counts"].tolist()
        self.latents = list(group["latents"].unbind(0)) if counts else []
        self.scenes = list(group["scenes"].unbind(0)) if counts else []
        self.visible = list(torch.split(group["visible_keys"], counts)) if counts else []


class SpatiaRecipe(_ChunkRecipe):
    """``conditioning.method: spatia``: Spatia's weights run as Spatia's inference runs them (module
    docstring of ``mirage_cli.conditioning.spatia``), on the RGB memory (``RGBConditioner``).

    Chunk 0 is Spatia's first round: the start image's latent held at frame 0, the control over the
    whole chunk, no history, no references, the DiT without its LoRA. A later chunk's window is the
    chunk with the frames of its history before it; the target sequence is the history's latents (held)
    then the chunk's new latent frames, after the references. Windows shorter than the plan's chunk
    are padded with the last camera and the padding dropped (``noise_frames``). The LoRA is fused
    into the DiT before the first later chunk, once (``apply_lora``), so a resumed render fuses it at
    the same point.

    State: the 8-bit frames that may be needed again (``frames``: video frame -> uint8 [3, H, W]): frame 0
    is the start image itself, as in Spatia, the others decoded; every candidate frame (every
    ``candidate_stride``-th) and the last ``HISTORY_FRAMES``.
    """

    def __init__(self, plan, backbone, conditioner):
        super().__init__(plan, backbone, conditioner)
        self.candidate_stride = frame_stride(plan.fps, CANDIDATE_RATE)
        self.camera_stride = frame_stride(plan.fps, REFERENCE_CAMERA_RATE)
        self.frames: dict[int, Tensor] = {}
        self.lora_fused = False
        self._history: Tensor | None = None  # [C, n, h, w] the history latents of the chunk being rendered

    # --- frames ---------------------------------------------------------------------------------

    def start(self, latent: Tensor, image: Tensor) -> None:
        self.frames = {0: (image.float() * 255).round().clamp(0, 255).to(torch.uint8).cpu()}

    def remember(self, chunk, latents: Tensor, view, pixels: Tensor) -> None:
        """Keep the chunk's new frames that a later chunk may take as history or reference."""
        eight_bit = to_uint8(pixels).cpu()  # [3, F, H, W]
        for j in range(1, pixels.shape[1]):
            self.frames[chunk.start + j] = eight_bit[:, j].clone()
        self.frames = {f: px for f, px in self.frames.items() if f % self.candidate_stride == 0 or f > chunk.end - HISTORY_FRAMES}

    # --- the window -----------------------------------------------------------------------------

    def noise_frames(self, chunk) -> int:
        nominal = self.plan.first_chunk_frames if chunk.index == 0 else self.plan.chunk_frames
        return max(chunk.num_latent_frames, (nominal - 1) // 4 + 1)

    def _control(self, frames: list[int]) -> Tensor:
        """[1, 96, T, h, w]: the memory rendered into video ``frames`` on black, and its hole score, encoded."""
        c = self.conditioner
        K, world_from_cam = c._cameras(frames)
        with c.prof.stage("memory_query"):
            v = c.memory.query(K, world_from_cam, (c.cameras.height, c.cameras.width), mark_seen=False)
        control, score = control_videos(v.rgb.float(), v.mask)
        with c.prof.stage("vae_encode"):
            scene = self.backbone.encode_video(control.to(self.backbone.device))[0]
            holes = self.backbone.encode_video(score.to(self.backbone.device))[0]
        return vace_context(scene, holes)

    def _references(self, window_start: int, frames: list[int]) -> Tensor | None:
        """[1, C, R, h, w]: the earlier frames matched to the window's cameras, each encoded alone; or None."""
        candidates = reference_candidates(window_start, self.candidate_stride)
        if not candidates:
            return None
        c = self.conditioner
        targets = frames[:: self.camera_stride]
        K, world_from_cam = c._cameras(candidates + targets)
        cam_from_world = torch.linalg.inv(world_from_cam.double()).float()
        visible = frontmost_visible(c.memory.cache.xyz, cam_from_world, K, (c.cameras.height, c.cameras.width))
        chosen = match_references(visible[: len(candidates)], visible[len(candidates) :])
        if not chosen:
            return None
        return reference_latents(self.backbone, [self.frames[candidates[i]] for i in chosen])

    def _fuse_lora(self, chunk) -> None:
        """Spatia's LoRA schedule: off in the first round, fused before the first later one."""
        lora = self.plan.conditioning.lora
        if chunk.index == 0 or lora is None or self.lora_fused:
            return
        apply_lora(self.backbone.transformer, lora, self.plan.conditioning.lora_scale, merge=True, field="conditioning.lora")
        self.lora_fused = True

    def denoise(self, chunk, view, *, noise, cond_frame0, prompt_embeds, negative_prompt_embeds, generator, resume_state, on_step,
                profiler) -> DenoiseResult:
        self._fuse_lora(chunk)
        if chunk.index == 0:
            self._history, window_start, held, target = None, chunk.start, cond_frame0, noise
        else:
            window_start = chunk.start - (history_length(chunk.start) - 1)
            history = torch.stack([self.frames[f] for f in range(window_start, chunk.start + 1)], dim=1)  # uint8 [3, n, H, W]
            self._history = held = encode_frames(self.backbone, history)  # [C, n', h, w]
            target = history_target(held, noise)
        frames = window_frames(window_start, 4 * (target.shape[2] - 1) + 1, self.plan.frames - 1)
        references = None if chunk.index == 0 else self._references(window_start, frames)
        plan = self.plan
        result = denoise_vace_chunk(
            self.backbone, self.backbone.transformer, noise=target, cond_frame0=held, references=references, preceding=None,
            control=self._control(frames), prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            guidance=plan.guidance, steps=plan.steps, generator=generator, resume_state=resume_state,
            on_step=on_step, profiler=profiler, **sampler_args(plan),
        )
        if not result.completed:
            return result
        first = 0 if self._history is None else self._history.shape[1] - 1  # the chunk's frame 0: the history's last
        return DenoiseResult(latents=result.latents[:, :, first : first + chunk.num_latent_frames], completed=True, state=None)

    def decode(self, chunk, latents: Tensor, context: Tensor | None) -> Tensor:
        """As Spatia decodes a round: its window alone (the history latents before the chunk's), the
        history's frames dropped; chunk 0 alone."""
        return decode_with_context(self.backbone, latents, None if self._history is None else self._history[:, :-1])

    # --- state ----------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        index = sorted(self.frames)
        H, W = self.plan.height, self.plan.width
        frames = torch.stack([self.frames[f] for f in index]) if index else torch.zeros(0, 3, H, W, dtype=torch.uint8)
        return {"spatia": {"frames": frames.contiguous(), "frame_index": torch.tensor(index, dtype=torch.int64)}}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        group = tensors["spatia"]
        self.frames = {int(f): px for f, px in zip(group["frame_index"].tolist(), group["frames"].unbind(0), strict=True)}


RECIPES = {"pin": PinRecipe, "vace": VaceRecipe, "spatia": SpatiaRecipe}


def make_recipe(plan, backbone, conditioner, denoise=denoise_chunk) -> Recipe:
    """The recipe of ``plan.conditioning.method``, conditioned by ``conditioner``'s memory. ``denoise``:
    the loop the pin recipe runs (``denoise_chunk``, or the leader's of a parallel render, which runs
    it on the whole team; parallel renders refuse the other methods)."""
    if plan.conditioning.method == "pin":
        return PinRecipe(plan, backbone, conditioner, denoise)
    return RECIPES[plan.conditioning.method](plan, backbone, conditioner)
