"""Conditioning strategies: what the memory gives each chunk, and what each chunk gives back.

A ``Conditioner`` answers two questions for the rollout (``mirage_cli.render.rollout``):

- ``condition(chunk)``: which latent cells of the chunk to pin, and to what (a ``ConditionView``);
- ``start(...)`` / ``insert(...)``: what the start image and the frames each chunk generated add to
  the memory.

Three strategies, one per ``--memory`` mode:

- ``LatentConditioner`` (``latent``, the method): warp the cached latent tokens straight into the
  camera of every latent frame (``LatentSpatialMemory.query``); insert new latent cells.
- ``RGBConditioner`` (``rgb``, the explicit baseline): render the RGB point cloud into every pixel
  frame, VAE-encode the renders; insert new pixels.
- ``NoConditioner`` (``none``, plain chunked TI2V): nothing is pinned or remembered.

``make_conditioner`` picks one for a memory mode. A new conditioning is a new class here (and an
entry in ``CONDITIONERS``), never a branch in the rollout. Conditioners never print; they time their
own stages on the profiler they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from mirage_cli.base.options import MemoryMode, PinMode, Projection
from mirage_cli.denoise.loop import token_pin_mask
from mirage_cli.memory import LatentSpatialMemory, RGBPointMemory
from mirage_cli.memory.latent import OCCLUSION_THRESHOLD
from mirage_cli.spec.plan import Chunk, MemorySettings

# RGB baseline: a latent cell counts as covered when this share of its pixels was rendered.
RGB_CELL_COVERAGE = 0.95
HOLE_VALUE = 0.5  # grey, in [0, 1], where the RGB render has no point


@dataclass(frozen=True)
class CameraTensors:
    """The render's camera path as tensors on the render device (OpenCV, docs/CONVENTIONS.md).

    Attributes:
        K: float32 [N, 3, 3] pixel intrinsics at ``height`` x ``width``.
        world_from_cam: float32 [N, 4, 4].
        height, width: the render size in pixels.
    """

    K: Tensor
    world_from_cam: Tensor
    height: int
    width: int

    @classmethod
    def from_trajectory(cls, trajectory, device: torch.device) -> CameraTensors:
        """From a ``mirage_cli.camera.Trajectory`` (float64 numpy arrays)."""
        return cls(
            K=torch.as_tensor(trajectory.K, dtype=torch.float32, device=device),  # [N, 3, 3]
            world_from_cam=torch.as_tensor(trajectory.world_from_cam, dtype=torch.float32, device=device),  # [N, 4, 4]
            height=int(trajectory.height),
            width=int(trajectory.width),
        )


@dataclass
class ConditionView:
    """What the memory gives one chunk of T latent frames (frame 0 is the conditioning frame).

    Attributes:
        latents: float32 [T, C, h, w] latents to pin (frame 0 unused).
        mask: bool [T, h, w] cells to pin (frame 0 False).
        depth: float32 [T, h, w] the memory's z-depth on the latent grid at each latent frame's
            camera (0 where empty).
        covered: bool [T, h, w] cells the memory explained (frame 0 False): not inserted again.
        memory_depth: float32 [T, h', w'] the memory's own rendered z-depth at its native grid
            (latent cells, or pixels for the RGB memory), for depth propagation without a model.
        memory_depth_valid: bool [T, h', w'] where ``memory_depth`` is a surface.
    """

    latents: Tensor
    mask: Tensor
    depth: Tensor
    covered: Tensor
    memory_depth: Tensor
    memory_depth_valid: Tensor

    @classmethod
    def empty(cls, frames: int, channels: int, height: int, width: int, device: torch.device) -> ConditionView:
        """Nothing to pin: zeros of shape [T, C, h, w] / [T, h, w] (T = ``frames``)."""
        zeros = torch.zeros(frames, height, width, device=device)  # [T, h, w]
        none = torch.zeros(frames, height, width, dtype=torch.bool, device=device)  # [T, h, w]
        latents = torch.zeros(frames, channels, height, width, device=device)  # [T, C, h, w]
        return cls(latents, none, zeros, none.clone(), zeros.clone(), none.clone())

    def stats(self, pin_mode: str) -> dict:
        """Per-chunk numbers for the report: coverage and how much was pinned (frames 1..T-1)."""
        if self.mask.shape[0] <= 1:
            return {"memory_coverage": 0.0, "pinned_cells": 0, "pinned_tokens": 0, "cells_covered": 0}
        cells = self.mask[1:]  # [T-1, h, w]
        pinned_tokens = int(token_pin_mask(cells).sum()) if pin_mode == PinMode.CLEAN else int(cells.sum()) // 4
        return {
            "memory_coverage": float(self.covered[1:].float().mean()),
            "cells_covered": int(self.covered[1:].sum()),
            "pinned_cells": int(cells.sum()),
            "pinned_tokens": pinned_tokens,
        }


class Conditioner(Protocol):
    """The interface the rollout uses; see the module docstring.

    ``stores_frames``: True when ``insert`` keeps the frames it is given (the rollout then estimates
    their depth first); False for a conditioner without memory.
    """

    stores_frames: bool

    def start(self, latent: Tensor, image: Tensor, depth: Tensor, keep_out: Tensor | None) -> None:
        """Put the start frame into memory: latent [C, h, w], image [3, H, W] in [0, 1], depth [H, W],
        keep_out bool [H, W] (the spec's ``mask``: pixels that stay out) or None."""

    def condition(self, chunk: Chunk, *, mark_seen: bool = True) -> ConditionView:
        """The view of ``chunk``; ``mark_seen=False`` when re-querying a resumed chunk."""

    def insert(self, latents: Tensor, frames01: Tensor, depth: Tensor, cams: Sequence[int], keep: Tensor) -> int:
        """Insert new frames (latents [T, C, h, w], frames01 [T, 3, H, W], depth [T, H, W], seen from
        ``cams``), only cells where ``keep`` bool [T, h, w]; returns the number of points added."""

    def stats(self) -> dict:
        """``cache_points`` and ``cache_bytes``."""

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        """Checkpoint groups ``{group: {name: tensor}}`` (empty: nothing to save)."""

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        """Restore what ``state_tensors`` returned (``tensors`` may hold other groups too)."""


class NoConditioner:
    """``--memory none``: plain chunked TI2V; nothing pinned beyond frame 0, nothing remembered."""

    stores_frames = False

    def __init__(self, *, backbone, cameras: CameraTensors, settings: MemorySettings, profiler):
        self.channels = backbone.z_dim
        self.latent_size = (cameras.height // backbone.spatial_scale, cameras.width // backbone.spatial_scale)
        self.device = cameras.K.device

    def start(self, latent: Tensor, image: Tensor, depth: Tensor, keep_out: Tensor | None) -> None:
        return None

    def condition(self, chunk: Chunk, *, mark_seen: bool = True) -> ConditionView:
        return ConditionView.empty(chunk.num_latent_frames, self.channels, *self.latent_size, self.device)

    def insert(self, latents: Tensor, frames01: Tensor, depth: Tensor, cams: Sequence[int], keep: Tensor) -> int:
        return 0

    def stats(self) -> dict:
        return {"cache_points": 0, "cache_bytes": 0}

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        return {}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        return None


class _MemoryConditioner:
    """What the latent and the RGB conditioners share: a point memory, the cameras, the profiler."""

    stores_frames = True

    def __init__(self, memory, *, backbone, cameras: CameraTensors, settings: MemorySettings, profiler):
        self.memory = memory
        self.channels = backbone.z_dim
        self.cameras = cameras
        self.stride = backbone.spatial_scale
        self.latent_size = (cameras.height // self.stride, cameras.width // self.stride)
        self.device = cameras.K.device
        self.occlusion_threshold = OCCLUSION_THRESHOLD if settings.occlusion_filter else None
        self.prof = profiler

    def _empty(self, chunk: Chunk) -> ConditionView:
        return ConditionView.empty(chunk.num_latent_frames, self.channels, *self.latent_size, self.device)

    def _cameras(self, frames: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """K [T, 3, 3] and world_from_cam [T, 4, 4] of video frames ``frames``."""
        idx = torch.as_tensor(frames, device=self.device)  # [T]
        return self.cameras.K[idx], self.cameras.world_from_cam[idx]

    def stats(self) -> dict:
        return {"cache_points": int(self.memory.num_points), "cache_bytes": int(self.memory.nbytes)}

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        return {"memory": self.memory.state_dict()}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        self.memory = type(self.memory).from_state_dict(tensors["memory"], device=self.device)


class LatentConditioner(_MemoryConditioner):
    """``--memory latent``: the latent spatial memory, warped into every latent frame's camera."""

    def __init__(self, *, backbone, cameras: CameraTensors, settings: MemorySettings, profiler,
                 projection: Projection = Projection.FOOTPRINT):
        memory = LatentSpatialMemory(
            channels=backbone.z_dim,
            stride=backbone.spatial_scale,
            device=cameras.K.device,
            dtype=torch.float16,
            voxel_size=settings.voxel_size,
            capacity=settings.capacity,
        )
        super().__init__(memory, backbone=backbone, cameras=cameras, settings=settings, profiler=profiler)
        self.projection = Projection(projection)
        if self.projection == Projection.NEAREST:
            self.occlusion_threshold = None  # the official projection has no occlusion filter

    def start(self, latent: Tensor, image: Tensor, depth: Tensor, keep_out: Tensor | None) -> None:
        keep = None if keep_out is None else ~cells_any(keep_out.unsqueeze(0), self.stride)  # [1, h, w]
        self._insert(latent.unsqueeze(0), depth.unsqueeze(0), [0], keep)

    def condition(self, chunk: Chunk, *, mark_seen: bool = True) -> ConditionView:
        if chunk.num_latent_frames == 1:
            return self._empty(chunk)
        K, world_from_cam = self._cameras(chunk.latent_camera_frames())
        with self.prof.stage("memory_query"):
            v = self.memory.query(
                K,
                world_from_cam,
                (self.cameras.height, self.cameras.width),
                occlusion_threshold=self.occlusion_threshold,
                mark_seen=mark_seen,
                projection=self.projection,
            )
        covered = v.mask.clone()  # [T, h, w]
        mask = v.confident  # [T, h, w]: depth-edge cells are never pinned
        mask[0] = False
        covered[0] = False
        depth = v.depth.float()  # [T, h, w]
        return ConditionView(v.latents.float(), mask, depth, covered, depth, covered & (depth > 0))

    def insert(self, latents: Tensor, frames01: Tensor, depth: Tensor, cams: Sequence[int], keep: Tensor) -> int:
        return self._insert(latents, depth, cams, keep)

    def _insert(self, latents: Tensor, depth: Tensor, cams: Sequence[int], keep: Tensor | None) -> int:
        idx = torch.tensor(cams, device=self.device)  # [T]
        K, world_from_cam = self._cameras(idx)
        with self.prof.stage("memory_insert"):
            return int(self.memory.insert_unexplained(latents, depth, K, world_from_cam, keep=keep, frame_index=idx))


class RGBConditioner(_MemoryConditioner):
    """``--memory rgb``: the RGB point cloud rendered into every pixel frame, then VAE-encoded."""

    def __init__(self, *, backbone, cameras: CameraTensors, settings: MemorySettings, profiler, encode_views: bool = True):
        # The baseline as first measured: footprint-sized voxels, no capacity limit.
        memory = RGBPointMemory(device=cameras.K.device)
        super().__init__(memory, backbone=backbone, cameras=cameras, settings=settings, profiler=profiler)
        self.backbone = backbone
        self.encode_views = encode_views  # False: the view's latents stay zero (a recipe that encodes its own renders)
        self.last_frame: Tensor | None = None  # [3, H, W] in [0, 1]: frame 0 of the next chunk's render

    def start(self, latent: Tensor, image: Tensor, depth: Tensor, keep_out: Tensor | None) -> None:
        keep = None if keep_out is None else ~keep_out.unsqueeze(0)  # [1, H, W]
        self._insert(image.unsqueeze(0), depth.unsqueeze(0), [0], keep)
        self.last_frame = image

    def condition(self, chunk: Chunk, *, mark_seen: bool = True) -> ConditionView:
        if chunk.num_latent_frames == 1:
            return self._empty(chunk)
        H, W, s = self.cameras.height, self.cameras.width, self.stride
        frames = torch.arange(chunk.start + 1, chunk.end + 1, device=self.device)  # pixel frames 1..F-1
        K, world_from_cam = self._cameras(frames)
        with self.prof.stage("memory_query"):
            v = self.memory.query(K, world_from_cam, (H, W), occlusion_threshold=self.occlusion_threshold, mark_seen=mark_seen)
        rgb = torch.where(v.mask.unsqueeze(1), v.rgb.float(), torch.full_like(v.rgb.float(), HOLE_VALUE))  # [F-1, 3, H, W]
        video = torch.cat([self.last_frame.unsqueeze(0), rgb], 0)  # [F, 3, H, W]
        T = chunk.num_latent_frames
        if self.encode_views:
            with self.prof.stage("vae_encode"):
                latents = self.backbone.encode_video((video * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0))[0]  # [C, T, h, w]
        else:
            latents = torch.zeros(self.channels, T, H // s, W // s, device=self.device)
        # Latent frame k >= 1 covers pixel frames 4k-3..4k, i.e. rows 4k-4..4k-1 of the renders.
        cover = F.avg_pool2d(v.mask.float().unsqueeze(1), s).squeeze(1)  # [F-1, h, w]
        cover = cover.view(T - 1, 4, H // s, W // s).amin(1)  # [T-1, h, w]
        covered = torch.cat([torch.zeros_like(cover[:1], dtype=torch.bool), cover >= RGB_CELL_COVERAGE], 0)  # [T, h, w]
        depth_px = torch.where(v.mask, v.depth.float(), torch.full_like(v.depth.float(), float("inf")))
        depth = -F.max_pool2d(-depth_px.unsqueeze(1), s).squeeze(1)  # [F-1, h, w] nearest surface
        depth = depth.view(T - 1, 4, H // s, W // s)[:, -1]  # [T-1, h, w] at each latent frame's camera
        depth = torch.cat([torch.zeros_like(depth[:1]), torch.nan_to_num(depth, posinf=0.0)], 0)  # [T, h, w]
        # Pixel-level depth at each latent frame's camera (rows 4k-1 of the renders, k >= 1).
        rows = torch.arange(3, 4 * (T - 1), 4, device=self.device)  # [T-1]
        px = v.depth[rows].float()  # [T-1, H, W]
        memory_depth = torch.cat([torch.zeros_like(px[:1]), px], 0)  # [T, H, W]
        memory_valid = torch.cat([torch.zeros_like(v.mask[:1]), v.mask[rows] & (px > 0)], 0)  # [T, H, W]
        return ConditionView(latents.permute(1, 0, 2, 3).float(), covered.clone(), depth, covered, memory_depth, memory_valid)

    def insert(self, latents: Tensor, frames01: Tensor, depth: Tensor, cams: Sequence[int], keep: Tensor) -> int:
        s = self.stride
        keep_pixels = keep.repeat_interleave(s, -2).repeat_interleave(s, -1)  # [T, H, W]
        added = self._insert(frames01, depth, cams, keep_pixels)
        self.last_frame = frames01[-1].clone()
        return added

    def _insert(self, frames01: Tensor, depth: Tensor, cams: Sequence[int], keep: Tensor | None) -> int:
        idx = torch.tensor(cams, device=self.device)  # [T]
        K, world_from_cam = self._cameras(idx)
        with self.prof.stage("memory_insert"):
            return int(self.memory.insert_unexplained(frames01, depth, K, world_from_cam, keep=keep, frame_index=idx))

    def state_tensors(self) -> dict[str, dict[str, Tensor]]:
        return {**super().state_tensors(), "rgb_render": {"last_frame": self.last_frame.contiguous()}}

    def load_state_tensors(self, tensors: dict[str, dict[str, Tensor]]) -> None:
        super().load_state_tensors(tensors)
        # Checkpoints written before the conditioners existed kept the frame in the rollout's group.
        group = tensors["rgb_render"] if "rgb_render" in tensors else tensors["rollout"]
        self.last_frame = group["last_frame"].to(self.device)


def cells_any(mask_px: Tensor, stride: int) -> Tensor:
    """bool [T, h, w]: cells with any True pixel in ``mask_px`` bool [T, H, W] (cells of ``stride`` pixels)."""
    return F.max_pool2d(mask_px.float().unsqueeze(1), stride).squeeze(1) > 0


CONDITIONERS = {
    MemoryMode.LATENT: LatentConditioner,
    MemoryMode.RGB: RGBConditioner,
    MemoryMode.NONE: NoConditioner,
}


def make_conditioner(mode: str, *, backbone, cameras: CameraTensors, settings: MemorySettings, profiler,
                     projection: Projection = Projection.FOOTPRINT, encode_views: bool = True) -> Conditioner:
    """The conditioner of memory mode ``mode`` (``latent`` | ``rgb`` | ``none``) for one render; ``projection``:
    how the latent memory is rendered into the views (the other modes take footprint only); ``encode_views``
    False: the RGB memory's renders are not VAE-encoded into the view (Spatia's recipe encodes its own)."""
    if MemoryMode(mode) == MemoryMode.LATENT:
        return LatentConditioner(backbone=backbone, cameras=cameras, settings=settings, profiler=profiler, projection=projection)
    if Projection(projection) != Projection.FOOTPRINT:
        raise ValueError(f"projection: {Projection(projection).value} needs memory mode latent, got {mode}")
    if MemoryMode(mode) == MemoryMode.RGB:
        return RGBConditioner(backbone=backbone, cameras=cameras, settings=settings, profiler=profiler, encode_views=encode_views)
    return CONDITIONERS[MemoryMode(mode)](backbone=backbone, cameras=cameras, settings=settings, profiler=profiler)
