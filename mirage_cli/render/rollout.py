"""The chunk loop: condition -> denoise -> decode -> depth -> update memory.

``Rollout`` holds what lives across chunks (backbone, prompt embeddings, the conditioner with its
memory, the depth aligner, the previous chunk's last latent and decode context) and runs one chunk
at a time:

1. Condition: the ``Conditioner`` (``mirage_cli.conditioning.conditioners``: latent memory, RGB baseline or
   none) gives the latents to pin at the camera of every latent frame (latent frame k uses the
   camera of its last pixel frame).
2. Denoise (``mirage_cli.denoise.loop.denoise_chunk``): latent frame 0 pinned (start image latent for
   chunk 0, the previous chunk's last latent after), memory-covered tokens pinned ``clean`` or
   ``noised`` until ``pin_until``; noise from generators seeded by (seed, chunk).
3. Decode the chunk after the previous chunk's last latent frames, or as the recipe decodes it (the
   caller writes the frames).
4. Depth of the new frames (``mirage_cli.depth.providers.DepthAligner``: a model aligned to the memory, or
   the memory's own depth).
5. Dynamic-region filter, then the conditioner inserts what the memory did not already explain.

The rollout never prints and never touches the run directory; ``mirage_cli.render.session`` does that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mirage_cli.backbone.decoding import next_decode_context
from mirage_cli.conditioning.conditioners import CameraTensors, Conditioner, ConditionView, make_conditioner
from mirage_cli.conditioning.recipes import make_recipe
from mirage_cli.denoise.loop import DenoiseState, denoise_chunk
from mirage_cli.depth.providers import DepthAligner
from mirage_cli.memory.filters import dynamic_region_mask
from mirage_cli.spec.plan import Chunk, Plan
from mirage_cli.testing import pauses as test_hooks


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The seed of chunk ``chunk_index``'s generators: a fixed mix of (seed, chunk), < 2**63."""
    return (int(seed) * 1_000_003 + 7919 * int(chunk_index) + 1) % (2**63 - 1)


@dataclass
class ChunkResult:
    """What one chunk produced.

    Attributes:
        latents: float [1, C, T, h, w] the chunk's final latents (frame 0 = conditioning frame);
            None when the chunk stopped early.
        pixels: float [3, F, H, W] decoded frames in [-1, 1]; None when the chunk stopped early.
        stats: per-chunk memory statistics for the report.
        denoise_state: where the denoising loop stopped when it stopped early (resume from it);
            None when the chunk completed.
    """

    latents: Tensor | None
    pixels: Tensor | None
    stats: dict
    denoise_state: DenoiseState | None = None

    @property
    def completed(self) -> bool:
        return self.denoise_state is None


def embed_prompts(plan: Plan, backbone) -> tuple[dict[str, Tensor], Tensor]:
    """Every prompt the plan's chunks use, embedded once each (prompt -> [1, L, D]), and the negative
    prompt's embedding [1, L, D]."""
    prompts = list(dict.fromkeys([plan.prompt, *plan.chunk_prompts]))  # distinct, in order
    embeds, negative = {}, None
    for prompt in prompts:
        embeds[prompt], negative = backbone.encode_prompt(prompt, plan.negative_prompt)
    return embeds, negative


class Rollout:
    """Runs a plan chunk by chunk. See the module docstring for the stages.

    Args:
        plan: the validated scene.
        backbone: ``mirage_cli.backbone.Backbone``.
        conditioner: what conditions each chunk (``mirage_cli.conditioning.conditioners``).
        depth: ``mirage_cli.depth.providers.DepthAligner`` for the frames the conditioner stores.
        cameras: the plan's camera path as tensors on the backbone's device.
        profiler: ``mirage_cli.profiling.profiler.Profiler``.
    """

    def __init__(self, plan: Plan, backbone, conditioner: Conditioner, depth: DepthAligner, cameras: CameraTensors, *, profiler,
                 prompt_embeds: dict[str, Tensor], negative_embeds: Tensor, recipe=None):
        self.plan = plan
        self.recipe = recipe if recipe is not None else make_recipe(plan, backbone, conditioner)
        self.backbone = backbone
        self.device = backbone.device
        self.conditioner = conditioner
        self.depth = depth
        self.cameras = cameras
        self.prof = profiler
        self.prompt_embeds = prompt_embeds  # prompt -> [1, L, D], every prompt of the plan's chunks
        self.negative_embeds = negative_embeds  # [1, L, D]
        self.last_latent: Tensor | None = None  # [C, h, w] conditioning latent of the next chunk (start / load_state_tensors)
        self.context_latents: Tensor | None = None  # [C, k, h, w] latent frames before last_latent (decode context)

    @classmethod
    def for_plan(cls, plan: Plan, backbone, *, depth_provider, profiler, denoise=denoise_chunk) -> Rollout:
        """The rollout of ``plan``: the conditioner of ``plan.memory.mode``, depth from ``depth_provider``,
        the recipe of ``plan.conditioning.method`` running ``denoise`` (``make_recipe``), and the
        embeddings of every prompt it uses (``embed_prompts``)."""
        cameras = CameraTensors.from_trajectory(plan.trajectory, backbone.device)
        conditioner = make_conditioner(plan.memory.mode, backbone=backbone, cameras=cameras, settings=plan.memory, profiler=profiler,
                                       projection=plan.conditioning.projection,
                                       encode_views=plan.conditioning.method != "spatia")  # spatia renders its own control
        depth = DepthAligner(depth_provider, (plan.height, plan.width))
        with profiler.stage("text_encoding"):
            prompt_embeds, negative_embeds = embed_prompts(plan, backbone)
        return cls(plan, backbone, conditioner, depth, cameras, profiler=profiler, prompt_embeds=prompt_embeds,
                   negative_embeds=negative_embeds, recipe=make_recipe(plan, backbone, conditioner, denoise))

    def start(self, image: Tensor, depth: Tensor | None, keep_out: Tensor | None) -> None:
        """Encode the start image and put it into the memory.

        Args:
            image: float32 [3, H, W] in [0, 1].
            depth: float32 [H, W] z-depth or None (then the depth model estimates it).
            keep_out: bool [H, W] pixels to keep out of memory (the spec's ``mask``), or None.
        """
        H, W = self.plan.height, self.plan.width
        if image.shape != (3, H, W):
            raise ValueError(f"image: expected [3, {H}, {W}], got {list(image.shape)}")
        image = image.to(self.device)
        with self.prof.stage("start_encode"):
            pixels = (image * 2 - 1).view(1, 3, 1, H, W)  # [1, 3, 1, H, W]
            self.last_latent = self.backbone.encode_video(pixels)[0, :, 0]  # [C, h, w]
        if not self.conditioner.stores_frames:
            return
        if depth is None:
            with self.prof.stage("depth_estimation"):
                depth = self.depth.start_depth(image, self.plan.scale)  # [H, W], in path units (mirage_cli.depth.scene_scale)
        keep_out = None if keep_out is None else keep_out.to(self.device)
        self.conditioner.start(self.last_latent, image, depth.to(self.device), keep_out)
        self.recipe.start(self.last_latent, image)

    # --- one chunk --------------------------------------------------------------------------------

    def run_chunk(
        self,
        chunk: Chunk,
        *,
        resume_state: DenoiseState | None = None,
        on_step: Callable[[int, DenoiseState], bool | None] | None = None,
    ) -> ChunkResult:
        """Run one chunk; returns latents + decoded pixels, or a resumable state if stopped early."""
        # A resumed chunk re-runs its query on the memory saved mid-chunk, which already counted
        # this query as "seen": do not count it twice (keeps eviction order identical).
        view = self.conditioner.condition(chunk, mark_seen=resume_state is None)
        result = self._denoise(chunk, view, resume_state, on_step)
        stats = view.stats(self.plan.memory.pin)
        if not result.completed:
            return ChunkResult(None, None, stats, denoise_state=result.state)

        latents = result.latents  # [1, C, T, h, w]
        with self.prof.stage("decode"):
            test_hooks.pause("decode")  # tests stop the render here (mirage_cli.testing.pauses)
            pixels = self.recipe.decode(chunk, latents, self.context_latents)  # [3, F, H, W]
        added = self._remember(chunk, latents[0], pixels, view)
        self.recipe.remember(chunk, latents[0], view, pixels)
        self.last_latent = latents[0, :, -1].clone()  # [C, h, w]
        self.context_latents = next_decode_context(latents[0], self.context_latents)  # [C, k, h, w]
        stats["points_added"] = int(added)
        stats.update(self.conditioner.stats())
        return ChunkResult(latents, pixels, stats)

    def _denoise(self, chunk: Chunk, view: ConditionView, resume_state, on_step):
        """The chunk's denoising loop (the plan's recipe), with noise from generators seeded by (seed, chunk index)."""
        plan, bb = self.plan, self.backbone
        T = self.recipe.noise_frames(chunk)
        h, w = plan.height // bb.spatial_scale, plan.width // bb.spatial_scale
        seed = chunk_seed(plan.seed, chunk.index)
        noise_gen = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn((1, bb.z_dim, T, h, w), generator=noise_gen, dtype=torch.float32).to(self.device)
        eps_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        with self.prof.stage("denoise"):
            return self.recipe.denoise(
                chunk, view, noise=noise, cond_frame0=self.last_latent, prompt_embeds=self.prompt_embeds[plan.prompt_of(chunk.index)],
                negative_prompt_embeds=self.negative_embeds, generator=eps_gen, resume_state=resume_state, on_step=on_step,
                profiler=self.prof,
            )

    def _remember(self, chunk: Chunk, latents: Tensor, pixels: Tensor, view: ConditionView) -> int:
        """Depth of the new latent frames, the dynamic filter, then the conditioner's insert.

        ``latents``: [C, T, h, w] the chunk's latents; ``pixels``: [3, F, H, W] in [-1, 1].
        Returns the number of points added.
        """
        T = latents.shape[1]
        if not self.conditioner.stores_frames or T == 1:
            return 0
        cams = chunk.latent_camera_frames()
        frames01 = ((pixels[:, 4 : 4 * (T - 1) + 1 : 4].float() + 1) / 2).clamp(0, 1).permute(1, 0, 2, 3)  # [T-1, 3, H, W]
        with self.prof.stage("depth_estimation"):
            depth = self.depth.new_frames(frames01, view)  # [T-1, H, W]
        keep = ~view.covered[1:]  # [T-1, h, w] cells the memory did not explain
        if self.plan.memory.dynamic_threshold is not None:
            keep = keep & ~self._dynamic_cells(latents, depth, cams)
        new_latents = latents[:, 1:].permute(1, 0, 2, 3)  # [T-1, C, h, w]
        return self.conditioner.insert(new_latents, frames01, depth, cams[1:], keep)

    def _dynamic_cells(self, latents: Tensor, depth: Tensor, cams: list[int]) -> Tensor:
        """bool [T-1, h, w]: cells of latent frames 1..T-1 that moved (warped residual too large).

        ``latents``: [C, T, h, w]; ``depth``: [T-1, H, W] z-depth of latent frames 1..T-1.
        """
        T = latents.shape[1]
        K, world_from_cam = self.cameras.K, self.cameras.world_from_cam
        out = [torch.zeros(latents.shape[-2:], dtype=torch.bool, device=self.device)]
        for k in range(2, T):
            a, b = cams[k - 1], cams[k]
            out.append(
                dynamic_region_mask(
                    latents[:, k - 1],
                    depth[k - 2],
                    K[a],
                    world_from_cam[a],
                    latents[:, k],
                    world_from_cam[b],
                    threshold=self.plan.memory.dynamic_threshold,
                )
            )
        return torch.stack(out)  # [T-1, h, w]

    # --- stats and state --------------------------------------------------------------------------

    def memory_stats(self) -> dict:
        """``cache_points`` and ``cache_bytes`` of the conditioner's memory (0 without one)."""
        return self.conditioner.stats()

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        """What a checkpoint needs to continue after this point (see ``load_state_tensors``)."""
        rollout = {"last_latent": self.last_latent.contiguous(), **self.depth.state_tensors()}
        if self.context_latents is not None:
            rollout["context_latents"] = self.context_latents.contiguous()
        return {"rollout": rollout, **self.conditioner.state_tensors(), **self.recipe.state_tensors()}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        r = tensors["rollout"]
        self.last_latent = r["last_latent"].to(self.device)
        self.context_latents = r["context_latents"].to(self.device) if "context_latents" in r else None
        self.depth.load_state_tensors(r)
        self.conditioner.load_state_tensors(tensors)
        self.recipe.load_state_tensors(tensors)
