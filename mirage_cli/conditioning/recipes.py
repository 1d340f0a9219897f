"""How a chunk is denoised under the memory's conditioning: one class per ``conditioning.method``.

- ``PinRecipe`` (``pin``, training-free): the conditioner's confident cells are held on their warped
  latents (``mirage_cli.denoise.loop.denoise_chunk``).
- ``VaceRecipe`` (``vace``, the Mirage paper's trained conditioning): the warped memory of the chunk
  and of the 2 latent frames before it goes to the VACE branch with the score latent; up to 4 earlier
  generated latent frames whose view overlaps the chunk's join the sequence as references, the 2
  preceding latent frames follow it (``mirage_cli.conditioning.vace``). It keeps, per generated latent frame,
  the latent, the memory's warped latent there (its "scene") and the voxels of the memory visible
  from its camera; all of it is checkpointed.

The rollout calls ``denoise`` for every chunk and ``remember`` once a chunk's frames are in the memory.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from mirage_cli.conditioning.vace import (
    PRECEDING_LATENT_FRAMES,
    ScoreLatents,
    denoise_vace_chunk,
    select_references,
    vace_context,
    visible_voxels,
)
from mirage_cli.denoise.loop import DenoiseResult, DenoiseState, denoise_chunk


class Recipe(Protocol):
    def start(self, latent: Tensor) -> None:
        """The start image's latent [C, h, w] is in the memory."""

    def denoise(self, chunk, view, *, noise: Tensor, cond_frame0: Tensor, prompt_embeds: Tensor, negative_prompt_embeds: Tensor,
                generator: torch.Generator, resume_state: DenoiseState | None, on_step, profiler) -> DenoiseResult:
        """Denoise ``chunk`` (noise [1, C, T, h, w]) under the conditioner's ``view``."""

    def remember(self, chunk, latents: Tensor, view) -> None:
        """The chunk's latents [C, T, h, w] are generated and its frames are in the memory."""

    def state_tensors(self) -> dict[str, dict[str, Tensor]]: ...

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None: ...


class PinRecipe:
    """``conditioning.method: pin``: memory cells held while denoising (``denoise_chunk``)."""

    def __init__(self, plan, backbone, conditioner, denoise=denoise_chunk):
        self.plan = plan
        self.backbone = backbone
        self.denoise_chunk = denoise  # a parallel render's leader runs it on the whole team (mirage_cli.render.parallel)

    def start(self, latent: Tensor) -> None:
        return None

    def denoise(self, chunk, view, *, noise, cond_frame0, prompt_embeds, negative_prompt_embeds, generator, resume_state, on_step,
                profiler) -> DenoiseResult:
        plan = self.plan
        return self.denoise_chunk(
            self.backbone, noise=noise, cond_frame0=cond_frame0, pinned_latents=view.latents, pin_mask=view.mask,
            pin_mode=plan.memory.pin, pin_until=plan.memory.pin_until, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, guidance=plan.guidance, steps=plan.steps, shift=plan.shift,
            generator=generator, resume_state=resume_state, on_step=on_step, profiler=profiler,
        )

    def remember(self, chunk, latents: Tensor, view) -> None:
        return None

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        return {}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        return None


class VaceRecipe:
    """``conditioning.method: vace``: the trained VACE branch (see the module docstring).

    State: ``latents`` [N, C, h, w] and ``scenes`` [N, C, h, w] of every generated latent frame (the
    start image's first), ``visible`` the voxel keys of the memory seen from each (ragged, kept as
    one int64 vector and N counts). As in the official inference, the history is empty until chunk 0
    is rendered (chunk 0 has no references and no preceding frames), and each chunk's frames are
    recorded after they went into the memory: all of chunk 0's (its frame 0 is the start image),
    frames 1..T-1 of the later ones (their frame 0 is the previous chunk's last).
    """

    def __init__(self, plan, backbone, conditioner):
        self.plan = plan
        self.backbone = backbone
        self.conditioner = conditioner  # a memory conditioner (latent or rgb): its points and cameras
        self.scores = ScoreLatents(backbone)
        self.latents: list[Tensor] = []  # [C, h, w] per generated latent frame, backbone dtype, CPU
        self.scenes: list[Tensor] = []  # [C, h, w] the warped memory there
        self.visible: list[Tensor] = []  # int64 [V] voxel keys of the memory visible from its camera

    # --- history --------------------------------------------------------------------------------

    def start(self, latent: Tensor) -> None:
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

    def remember(self, chunk, latents: Tensor, view) -> None:
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
        before = slice(max(0, len(self.latents) - 1 - PRECEDING_LATENT_FRAMES), len(self.latents) - 1)
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
            steps=plan.steps, shift=plan.shift, generator=generator, resume_state=resume_state, on_step=on_step, profiler=profiler,
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


RECIPES = {"pin": PinRecipe, "vace": VaceRecipe}


def make_recipe(plan, backbone, conditioner, denoise=denoise_chunk) -> Recipe:
    """The recipe of ``plan.conditioning.method``, conditioned by ``conditioner``'s memory. ``denoise``:
    the loop the pin recipe runs (``denoise_chunk``, or the leader's of a parallel render, which runs
    it on the whole team; parallel renders refuse the other methods)."""
    if plan.conditioning.method == "pin":
        return PinRecipe(plan, backbone, conditioner, denoise)
    return RECIPES[plan.conditioning.method](plan, backbone, conditioner)
