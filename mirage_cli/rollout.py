"""The chunk loop: query memory -> denoise -> decode -> depth -> update memory (DESIGN.md section 5).

``Rollout`` holds everything that lives across chunks (backbone, prompt embeddings, memory, the
previous chunk's last latent and decoded frame) and runs one chunk at a time:

1. Query the memory at the camera of every latent frame of the chunk (latent frame k uses the camera
   of its last pixel frame). ``latent``: warp cached latent tokens straight into each view.
   ``rgb``: render the RGB point cloud into every pixel frame and VAE-encode the renders.
   ``none``: nothing (plain chunked TI2V).
2. Denoise (``mirage_cli.denoise.denoise_chunk``): latent frame 0 pinned (start image latent for
   chunk 0, the previous chunk's last latent after), memory-covered tokens pinned ``clean`` or
   ``noised`` until ``pin_until``; noise from a generator seeded by (seed, chunk).
3. Decode the chunk (the caller writes it as an MP4 segment).
4. Depth of the new frames (depth model, aligned to the memory; or propagated from the memory).
5. Dynamic-region filter, then insert only what the memory did not already explain.

The rollout never prints and never touches the run directory; ``mirage_cli.render`` does that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from mirage_cli.errors import InputError
from mirage_cli.memory.latent import OCCLUSION_THRESHOLD
from mirage_cli.spec import Chunk, Plan

log = logging.getLogger(__name__)

# A cell is pinned only if the memory is confident about it (depth edges are stored low-confidence).
PIN_CONFIDENCE = 0.5
# RGB baseline: a latent cell counts as covered when this share of its pixels was rendered.
RGB_CELL_COVERAGE = 0.95
HOLE_VALUE = 0.5  # grey, in [0, 1], where the RGB render has no point
# Chunk c > 0 is decoded after this many of the previous chunk's latent frames, so the causal VAE
# decoder sees the frames leading into the chunk (each causal convolution looks back 2 frames, and
# the layers stack). On the tiny VAE, 4 frames cut the difference to a one-pass decode of the whole
# video by ~4x (tests/test_decode_context.py), for 4 extra latent frames per chunk (13% more decode
# at 31 latent frames). Streaming the decoder's cache across chunks instead would be exact but puts
# gigabytes of full-resolution features into every checkpoint at 1280x704.
DECODE_CONTEXT = 4


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The seed of chunk ``chunk_index``'s generators: a fixed mix of (seed, chunk), < 2**63."""
    return (int(seed) * 1_000_003 + 7919 * int(chunk_index) + 1) % (2**63 - 1)


def decode_with_context(backbone, latents: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Decode a chunk's latents after some of the previous chunk's latent frames.

    Args:
        backbone: ``mirage_cli.backbone.Backbone``.
        latents: float [1, C, T, h, w] the chunk (frame 0 = previous chunk's last latent).
        context: float [C, k, h, w] the previous latent frames before ``latents[:, :, 0]``, or None.

    Returns:
        float [3, F, H, W] in [-1, 1], F = 4(T-1)+1: the decoder runs over k + T latent frames and the
        first 4k pixel frames (the context's) are dropped.
    """
    if context is None:
        return backbone.decode(latents)[0]  # [3, F, H, W]
    k = context.shape[1]
    z = torch.cat([context.unsqueeze(0).to(latents), latents], dim=2)  # [1, C, k+T, h, w]
    return backbone.decode(z)[0][:, 4 * k :]  # [3, F, H, W]


@dataclass
class ChunkResult:
    """What one chunk produced.

    Attributes:
        latents: float [1, C, T, h, w] the chunk's final latents (frame 0 = conditioning frame).
        pixels: float [3, F, H, W] decoded frames in [-1, 1].
        stats: per-chunk memory statistics for the report.
        completed: False when the denoising loop stopped early (``state`` holds where).
        denoise_state: the denoiser's resumable state when not completed.
    """

    latents: torch.Tensor | None
    pixels: torch.Tensor | None
    stats: dict
    completed: bool = True
    denoise_state: object | None = None


@dataclass
class ConditionView:
    """What the memory gives one chunk: latents to pin and where.

    latents: [T, C, h, w] (frame 0 unused); mask: bool [T, h, w] cells to pin; depth: [T, h, w]
    rendered z-depth (latent grid; 0 where empty); covered: bool [T, h, w] cells the memory explained.
    """

    latents: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    covered: torch.Tensor


class Rollout:
    """Runs a plan chunk by chunk. See the module docstring for the stages."""

    def __init__(
        self,
        plan: Plan,
        backbone,
        *,
        depth_provider,
        profiler,
        pin_mode: str | None = None,
        pin_until: float | None = None,
    ):
        self.plan = plan
        self.backbone = backbone
        self.device = backbone.device
        self.depth_provider = depth_provider
        self.prof = profiler
        self.mode = plan.memory.mode
        self.pin_mode = pin_mode or plan.memory.pin
        self.pin_until = plan.memory.pin_until if pin_until is None else pin_until
        self.memory = self._make_memory()
        self.occlusion_threshold = OCCLUSION_THRESHOLD if plan.memory.occlusion_filter else None
        self.prompt_embeds = None
        self.negative_embeds = None
        self.last_latent: torch.Tensor | None = None  # [C, h, w] conditioning latent of the next chunk
        self.last_frame: torch.Tensor | None = None  # [3, H, W] in [0, 1], decoded frame matching last_latent
        self.context_latents: torch.Tensor | None = None  # [C, k, h, w] latent frames before last_latent (decode context)
        self.last_depth: torch.Tensor | None = None  # [H, W] z-depth of last_frame (alignment fallback)
        self.depth_fit_scale: float | None = None  # last relative-depth fit, for frames without overlap
        self.K = torch.as_tensor(plan.trajectory.K, dtype=torch.float32, device=self.device)  # [N, 3, 3]
        self.world_from_cam = torch.as_tensor(plan.trajectory.world_from_cam, dtype=torch.float32, device=self.device)  # [N, 4, 4]

    # --- setup -----------------------------------------------------------------------------------

    def _make_memory(self):
        m = self.plan.memory
        if self.mode == "latent":
            from mirage_cli.memory import LatentSpatialMemory

            return LatentSpatialMemory(
                channels=self.backbone.z_dim,
                stride=self.backbone.spatial_scale,
                device=self.device,
                dtype=torch.float16,
                voxel_size=m.voxel_size,
                capacity=m.capacity,
            )
        if self.mode == "rgb":
            from mirage_cli.memory import RGBPointMemory

            return RGBPointMemory(device=self.device)
        return None

    def encode_prompt(self) -> None:
        with self.prof.stage("text_encoding"):
            self.prompt_embeds, self.negative_embeds = self.backbone.encode_prompt(
                self.plan.prompt, self.plan.negative_prompt
            )

    def start(self, image: torch.Tensor, depth: torch.Tensor | None, keep_out: torch.Tensor | None) -> None:
        """Encode the start image and seed the memory with it.

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
        self.last_frame = image
        if self.memory is None:
            return
        if depth is None:
            if self.depth_provider.name == "none":
                raise InputError(
                    "no depth for the start image: give `depth:` in the spec or use a depth model (--depth-model)",
                    file=str(self.plan.spec_path),
                    field="depth",
                )
            with self.prof.stage("depth_estimation"):
                depth = self._start_depth_from_model(image)
        depth = depth.to(self.device)
        self.last_depth = depth
        self._insert(
            latents=self.last_latent.unsqueeze(0),
            frames01=image.unsqueeze(0),
            depth=depth.unsqueeze(0),
            cam_index=[0],
            keep_cells=None if keep_out is None else ~self._cells_any(keep_out.to(self.device).unsqueeze(0)),
            keep_pixels=None if keep_out is None else ~keep_out.to(self.device).unsqueeze(0),
        )

    def _start_depth_from_model(self, image: torch.Tensor) -> torch.Tensor:
        est = self.depth_provider.estimate(image.unsqueeze(0))[0]  # [H, W]
        if self.depth_provider.kind == "metric":
            return est
        log.warning(
            "relative depth model %s: the scene's scale is unknown, assuming a median start-image depth of 1.0 "
            "camera-path units; give `depth:` in the spec or use a metric depth model for true scale",
            self.depth_provider.name,
        )
        inv = est.clamp(min=1e-6)
        return inv.median() / inv  # [H, W], median depth 1

    # --- one chunk --------------------------------------------------------------------------------

    def run_chunk(
        self,
        chunk: Chunk,
        *,
        resume_state=None,
        on_step: Callable[[int, object], bool | None] | None = None,
    ) -> ChunkResult:
        """Run one chunk; returns latents + decoded pixels, or a resumable state if stopped early."""
        from mirage_cli.denoise import denoise_chunk

        plan, bb = self.plan, self.backbone
        T = chunk.num_latent_frames
        h, w = plan.height // bb.spatial_scale, plan.width // bb.spatial_scale
        cams = chunk.latent_camera_frames()

        # A resumed chunk re-runs its query on the memory saved mid-chunk, which already counted
        # this query as "seen": do not count it twice (keeps eviction order identical).
        view = self._condition(chunk, mark_seen=resume_state is None)

        seed = chunk_seed(plan.seed, chunk.index)
        noise_gen = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn((1, bb.z_dim, T, h, w), generator=noise_gen, dtype=torch.float32).to(self.device)
        eps_gen = torch.Generator(device=self.device).manual_seed(seed + 1)

        with self.prof.stage("denoise"):
            result = denoise_chunk(
                bb,
                noise=noise,
                cond_frame0=self.last_latent,
                pinned_latents=view.latents,
                pin_mask=view.mask,
                mode=self.pin_mode,
                pin_until=self.pin_until,
                prompt_embeds=self.prompt_embeds,
                negative_prompt_embeds=self.negative_embeds,
                guidance=plan.guidance,
                steps=plan.steps,
                shift=plan.shift,
                generator=eps_gen,
                resume_state=resume_state,
                on_step=on_step,
                profiler=self.prof,
            )
        stats = self._view_stats(view)
        if not result.completed:
            return ChunkResult(None, None, stats, completed=False, denoise_state=result.state)

        latents = result.latents  # [1, C, T, h, w]
        with self.prof.stage("decode"):
            pixels = decode_with_context(bb, latents, self.context_latents)  # [3, F, H, W]
        frames01 = ((pixels.float() + 1) / 2).clamp(0, 1)  # [3, F, H, W]

        added = 0
        if self.memory is not None and T > 1:
            new_frames01 = frames01[:, 4 : 4 * (T - 1) + 1 : 4].permute(1, 0, 2, 3)  # [T-1, 3, H, W]
            new_latents = latents[0, :, 1:].permute(1, 0, 2, 3)  # [T-1, C, h, w]
            with self.prof.stage("depth_estimation"):
                depth = self._new_depth(new_frames01, view, cams[1:])  # [T-1, H, W]
            keep = ~view.covered[1:]  # [T-1, h, w] cells the memory did not explain
            if plan.memory.dynamic_threshold is not None:
                keep = keep & ~self._dynamic_cells(latents[0], depth, cams)
            added = self._insert(
                latents=new_latents,
                frames01=new_frames01,
                depth=depth,
                cam_index=cams[1:],
                keep_cells=keep,
                keep_pixels=None,
            )
            self.last_depth = depth[-1]

        self.last_latent = latents[0, :, -1].clone()  # [C, h, w]
        self.context_latents = self._next_context(latents[0])  # [C, k, h, w]
        self.last_frame = frames01[:, -1].clone()  # [3, H, W]
        stats["points_added"] = int(added)
        stats.update(self.memory_stats())
        return ChunkResult(latents, pixels, stats)

    def _next_context(self, latents: torch.Tensor) -> torch.Tensor | None:
        """The DECODE_CONTEXT latent frames before the last one, from this chunk and the context before it.

        ``latents``: [C, T, h, w] this chunk's latents (frame 0 = previous chunk's last latent).
        """
        if DECODE_CONTEXT == 0:
            return None
        history = latents[:, :-1]  # [C, T-1, h, w]
        if self.context_latents is not None:
            history = torch.cat([self.context_latents.to(latents), history], dim=1)
        return history[:, -DECODE_CONTEXT:].clone()  # [C, <=k, h, w]

    # --- conditioning -----------------------------------------------------------------------------

    def _condition(self, chunk: Chunk, mark_seen: bool = True) -> ConditionView:
        bb, plan = self.backbone, self.plan
        T = chunk.num_latent_frames
        h, w = plan.height // bb.spatial_scale, plan.width // bb.spatial_scale
        empty = ConditionView(
            latents=torch.zeros(T, bb.z_dim, h, w, device=self.device),
            mask=torch.zeros(T, h, w, dtype=torch.bool, device=self.device),
            depth=torch.zeros(T, h, w, device=self.device),
            covered=torch.zeros(T, h, w, dtype=torch.bool, device=self.device),
        )
        if self.memory is None or T == 1:
            return empty
        cams = chunk.latent_camera_frames()
        if self.mode == "latent":
            idx = torch.tensor(cams, device=self.device)
            with self.prof.stage("memory_query"):
                v = self.memory.query(
                    self.K[idx],
                    self.world_from_cam[idx],
                    (plan.height, plan.width),
                    occlusion_threshold=self.occlusion_threshold,
                    mark_seen=mark_seen,
                )
            covered = v.mask.clone()  # [T, h, w]
            mask = v.mask & (v.confidence >= PIN_CONFIDENCE)
            mask[0] = False
            covered[0] = False
            return ConditionView(v.latents.float(), mask, v.depth.float(), covered)
        return self._condition_rgb(chunk)

    def _condition_rgb(self, chunk: Chunk) -> ConditionView:
        """The RGB baseline: render every pixel frame, VAE-encode the renders, mask by coverage."""
        bb, plan = self.backbone, self.plan
        H, W, s = plan.height, plan.width, bb.spatial_scale
        idx = torch.arange(chunk.start + 1, chunk.end + 1, device=self.device)  # pixel frames 1..F-1
        with self.prof.stage("memory_query"):
            v = self.memory.query(self.K[idx], self.world_from_cam[idx], (H, W), occlusion_threshold=self.occlusion_threshold)
        rgb = torch.where(v.mask.unsqueeze(1), v.rgb.float(), torch.full_like(v.rgb.float(), HOLE_VALUE))  # [F-1, 3, H, W]
        video = torch.cat([self.last_frame.unsqueeze(0), rgb], 0)  # [F, 3, H, W]
        with self.prof.stage("vae_encode"):
            latents = bb.encode_video((video * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0))[0]  # [C, T, h, w]
        T = latents.shape[1]
        # Latent frame k >= 1 covers pixel frames 4k-3..4k, i.e. rows 4k-4..4k-1 of the renders.
        cover = F.avg_pool2d(v.mask.float().unsqueeze(1), s).squeeze(1)  # [F-1, h, w]
        cover = cover.view(T - 1, 4, H // s, W // s).amin(1)  # [T-1, h, w]
        covered = torch.cat([torch.zeros_like(cover[:1], dtype=torch.bool), cover >= RGB_CELL_COVERAGE], 0)  # [T, h, w]
        depth_px = torch.where(v.mask, v.depth.float(), torch.full_like(v.depth.float(), float("inf")))
        depth = -F.max_pool2d(-depth_px.unsqueeze(1), s).squeeze(1)  # [F-1, h, w] nearest surface
        depth = depth.view(T - 1, 4, H // s, W // s)[:, -1]  # [T-1, h, w] at each latent frame's camera
        depth = torch.cat([torch.zeros_like(depth[:1]), torch.nan_to_num(depth, posinf=0.0)], 0)  # [T, h, w]
        self._rgb_view = v  # pixel-level depth for propagation
        self._rgb_view_frames = idx
        return ConditionView(latents.permute(1, 0, 2, 3).float(), covered.clone(), depth, covered)

    # --- depth and insertion ----------------------------------------------------------------------

    def _new_depth(self, frames01: torch.Tensor, view: ConditionView, cams: list[int]) -> torch.Tensor:
        """z-depth [T-1, H, W] of the new latent frames' pixel frames ``frames01`` [T-1, 3, H, W]."""
        from mirage_cli.memory.filters import align_depth

        H, W = self.plan.height, self.plan.width
        ref = view.depth[1:]  # [T-1, h, w]
        ref_valid = view.covered[1:] & (ref > 0)  # [T-1, h, w]
        if self.depth_provider.name == "none":
            if self.mode == "rgb":
                rows = [c - self._rgb_view_frames[0].item() for c in cams]
                d = self._rgb_view.depth[rows].float()  # [T-1, H, W]
                return self.depth_provider.from_memory(d, self._rgb_view.mask[rows] & (d > 0), (H, W))
            return self.depth_provider.from_memory(ref, ref_valid, (H, W))
        est = self.depth_provider.estimate(frames01)  # [T-1, H, W]
        ref_px = F.interpolate(ref.unsqueeze(1), size=(H, W), mode="nearest").squeeze(1)  # [T-1, H, W]
        valid_px = F.interpolate(ref_valid.float().unsqueeze(1), size=(H, W), mode="nearest").squeeze(1) > 0
        mode = "scale" if self.depth_provider.kind == "metric" else "scale_shift_inverse"
        out = []
        for k in range(est.shape[0]):
            if int(valid_px[k].sum()) >= 64:
                aligned, fit = align_depth(est[k], ref_px[k], valid_px[k], mode=mode)
                self.depth_fit_scale = float(fit.scale)
            elif mode == "scale":
                aligned = est[k] * (self.depth_fit_scale or 1.0)
            else:
                # No overlap with the memory: keep the last known scale of inverse depth.
                aligned = (self.depth_fit_scale or 1.0) / est[k].clamp(min=1e-6)
            out.append(aligned)
        return torch.stack(out)  # [T-1, H, W]

    def _dynamic_cells(self, latents: torch.Tensor, depth: torch.Tensor, cams: list[int]) -> torch.Tensor:
        """bool [T-1, h, w]: cells of latent frames 1..T-1 that moved (warped residual too large)."""
        from mirage_cli.memory.filters import dynamic_region_mask

        T = latents.shape[1]
        out = [torch.zeros(latents.shape[-2:], dtype=torch.bool, device=self.device)]
        for k in range(2, T):
            a, b = cams[k - 1], cams[k]
            out.append(
                dynamic_region_mask(
                    latents[:, k - 1],
                    depth[k - 2],
                    self.K[a],
                    self.world_from_cam[a],
                    latents[:, k],
                    self.world_from_cam[b],
                    threshold=self.plan.memory.dynamic_threshold,
                )
            )
        return torch.stack(out)  # [T-1, h, w]

    def _insert(self, *, latents, frames01, depth, cam_index, keep_cells, keep_pixels) -> int:
        """Insert frames into the memory, each only where the memory does not explain it yet.

        ``insert_unexplained`` goes frame by frame, so a new surface seen by several frames of the
        chunk is stored once. ``keep_cells`` / ``keep_pixels`` further restrict what may go in
        (cells the chunk's query left empty, minus moving regions, minus the user's mask).
        """
        idx = torch.tensor(cam_index, device=self.device)
        with self.prof.stage("memory_insert"):
            if self.mode == "latent":
                return int(
                    self.memory.insert_unexplained(
                        latents, depth, self.K[idx], self.world_from_cam[idx], keep=keep_cells, frame_index=idx
                    )
                )
            # RGB baseline: per-pixel points; a latent keep mask is applied at pixel level.
            if keep_pixels is None and keep_cells is not None:
                s = self.backbone.spatial_scale
                keep_pixels = keep_cells.repeat_interleave(s, -2).repeat_interleave(s, -1)
            return int(
                self.memory.insert_unexplained(
                    frames01, depth, self.K[idx], self.world_from_cam[idx], keep=keep_pixels, frame_index=idx
                )
            )

    @staticmethod
    def _cells_any(mask_px: torch.Tensor, s: int = 16) -> torch.Tensor:
        """bool [T, h, w]: cells with any True pixel in ``mask_px`` bool [T, H, W]."""
        return F.max_pool2d(mask_px.float().unsqueeze(1), s).squeeze(1) > 0

    # --- stats and state --------------------------------------------------------------------------

    def _view_stats(self, view: ConditionView) -> dict:
        T = view.mask.shape[0]
        if T <= 1:
            return {"memory_coverage": 0.0, "pinned_cells": 0, "pinned_tokens": 0, "cells_covered": 0}
        m = view.mask[1:]  # [T-1, h, w]
        tokens = m.unflatten(-2, (m.shape[-2] // 2, 2)).unflatten(-1, (m.shape[-1] // 2, 2)).all(-1).all(-2)
        pinned_tokens = int(tokens.sum()) if self.pin_mode == "clean" else int(m.sum()) // 4
        return {
            "memory_coverage": float(view.covered[1:].float().mean()),
            "cells_covered": int(view.covered[1:].sum()),
            "pinned_cells": int(m.sum()),
            "pinned_tokens": pinned_tokens,
        }

    def memory_stats(self) -> dict:
        if self.memory is None:
            return {"cache_points": 0, "cache_bytes": 0}
        return {"cache_points": int(self.memory.num_points), "cache_bytes": int(self.memory.nbytes)}

    def state_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """What a checkpoint needs to continue after this point (see ``load_state_tensors``)."""
        rollout = {"last_latent": self.last_latent.contiguous(), "last_frame": self.last_frame.contiguous()}
        if self.context_latents is not None:
            rollout["context_latents"] = self.context_latents.contiguous()
        if self.last_depth is not None:
            rollout["last_depth"] = self.last_depth.contiguous()
        if self.depth_fit_scale is not None:
            rollout["depth_fit_scale"] = torch.tensor([self.depth_fit_scale], dtype=torch.float64)
        out = {"rollout": rollout}
        if self.memory is not None:
            out["memory"] = self.memory.state_dict()
        return out

    def load_state_tensors(self, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        r = tensors["rollout"]
        self.last_latent = r["last_latent"].to(self.device)
        self.last_frame = r["last_frame"].to(self.device)
        self.context_latents = r["context_latents"].to(self.device) if "context_latents" in r else None
        self.last_depth = r["last_depth"].to(self.device) if "last_depth" in r else None
        self.depth_fit_scale = float(r["depth_fit_scale"][0]) if "depth_fit_scale" in r else None
        if self.memory is not None:
            cls = type(self.memory)
            self.memory = cls.from_state_dict(tensors["memory"], device=self.device)
