"""RGBPointMemory: the explicit baseline, an RGB point cloud rendered at pixel level.

What other world models keep, done properly: one point per pixel of the decoded frames (lifted
with full-resolution depth), voxel-fused like the latent memory, and rendered into every target
pixel frame by the same footprint splat and z-buffer at stride 1 (so holes fill when the camera
moves closer). The rollout VAE-encodes these renders to condition the model; that encode and the
per-pixel work are what the latent memory avoids.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from mirage_cli.memory.ply import write_point_cloud
from mirage_cli.memory.point_cache import gather_rows
from mirage_cli.memory.points import DEPTH_TOLERANCE, MAX_HALF_SIZE, UNEXPLAINED_DEPTH_MARGIN, PointMemory
from mirage_cli.memory.state import check_state, save_state
from mirage_cli.memory.view import RGBView

FORMAT = "mirage.rgb_memory.v1"
_COLOUR_DTYPES = (torch.uint8, torch.float16, torch.float32)


class RGBPointMemory(PointMemory):
    """A voxel-fused RGB point cloud with a pixel-level z-buffer renderer.

    Args:
        device: where the cloud lives; inputs are moved there.
        dtype: colour storage: uint8 (default, 8-bit like decoded video), float16 or float32.
        voxel_size: fusion voxel size in world units, or None to size voxels from each point's
            pixel footprint (``memory/voxel.py``).
        capacity: maximum number of points, or None (least recently seen evicted first).
    """

    _FEATURES = "rgb"
    _FORMAT = FORMAT

    def __init__(self, device="cpu", dtype: torch.dtype = torch.uint8, voxel_size: float | None = None, capacity: int | None = None):
        super().__init__(3, device, dtype, _COLOUR_DTYPES, voxel_size, capacity)

    def __repr__(self) -> str:
        return f"RGBPointMemory(points={self.num_points}, dtype={self.dtype}, device={self.device}, nbytes={self.nbytes})"

    # --- colour storage --------------------------------------------------------------------------

    def _encode(self, rgb: Tensor) -> Tensor:
        if self.dtype == torch.uint8:
            return (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
        return rgb.to(self.dtype)

    def _decode(self, colour: Tensor) -> Tensor:
        if self.dtype == torch.uint8:
            return colour.to(torch.float32) / 255.0
        return colour.to(torch.float32)

    # --- insert ----------------------------------------------------------------------------------

    def insert(self, rgb: Tensor, depth: Tensor, K: Tensor, world_from_cam: Tensor, keep: Tensor | None = None, frame_index=None) -> int:
        """Lift every pixel with valid depth to a world point and add those whose voxel is free.

        Args:
            rgb: float [3, H, W] or [T, 3, H, W] in [0, 1].
            depth: float [H, W] or [T, H, W] z-depth.
            K: float [3, 3] or [T, 3, 3] pixel intrinsics.
            world_from_cam: float [4, 4] or [T, 4, 4].
            keep: optional bool [H, W] or [T, H, W]: only these pixels are inserted.
            frame_index: optional int or int [T] stored per point.

        Returns:
            The number of points added.
        """
        x, dep, Kt, wfc, kp = self._inputs(rgb, depth, K, world_from_cam, keep)
        return self._insert_checked(x, dep, dep, Kt, wfc, kp, frame_index)

    def _insert_checked(self, x, z, dep, Kt, wfc, kp, frame_index) -> int:
        return self._add(self._encode(x), z, Kt, wfc, self._elements(z, kp), frame_index)  # the grid is the pixels: z is the depth

    def insert_unexplained(
        self,
        rgb: Tensor,
        depth: Tensor,
        K: Tensor,
        world_from_cam: Tensor,
        keep: Tensor | None = None,
        frame_index=None,
        depth_margin: float = UNEXPLAINED_DEPTH_MARGIN,
    ) -> int:
        """Insert the frames' pixels that neither the cloud nor the previous frame explains (same rule
        as ``LatentSpatialMemory.insert_unexplained``, per pixel, a few frames per group)."""
        x, dep, Kt, wfc, kp = self._inputs(rgb, depth, K, world_from_cam, keep)
        return self._insert_unexplained(x, dep, dep, Kt, wfc, kp, frame_index, depth_margin)

    # --- query -----------------------------------------------------------------------------------

    def query(
        self,
        K: Tensor,
        world_from_cam: Tensor,
        size: tuple[int, int],
        *,
        depth_tolerance: float = DEPTH_TOLERANCE,
        max_half_size: float = MAX_HALF_SIZE,
        occlusion_threshold: float | None = None,
        mark_seen: bool = True,
    ) -> RGBView:
        """Render the cloud into T target cameras at pixel level.

        Args:
            K: float [3, 3] or [T, 3, 3] pixel intrinsics at ``size``.
            world_from_cam: float [4, 4] or [T, 4, 4].
            size: (H, W) in pixels.
            depth_tolerance, max_half_size, occlusion_threshold, mark_seen: as
                ``LatentSpatialMemory.query`` (footprints in pixels).

        Returns:
            ``RGBView`` with rgb [T, 3, H, W], mask and depth [T, H, W].
        """
        H, W = (int(s) for s in size)
        if H <= 0 or W <= 0:
            raise ValueError(f"size: expected positive (H, W), got {tuple(size)}")
        Kt, wfc = self._cameras(K, world_from_cam)
        # [T, H, W] each
        winner, mask, depth = self._render(Kt, wfc, (H, W), depth_tolerance, max_half_size, occlusion_threshold, mark_seen)
        rgb = self._decode(gather_rows(self.cache.features, winner)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W]
        return RGBView(rgb=rgb, mask=mask, depth=depth)

    # --- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Every array and setting as tensors."""
        return self._state()

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], device="cpu") -> RGBPointMemory:
        """Rebuild from ``state_dict()``'s output; ValueError lists wrong keys, dtypes and shapes."""
        check_state(state, cls._schema(_COLOUR_DTYPES, 3), "RGBPointMemory")
        mem = cls(device=device, dtype=state["rgb"].dtype, **cls._limits(state))
        mem._restore(state)
        return mem

    def save(self, path: str | os.PathLike) -> None:
        """Write the cloud to a safetensors file, atomically."""
        save_state(path, self.state_dict(), FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> RGBPointMemory:
        """Read a file written by ``save``; ValueError names the file and what is wrong."""
        return cls._load(path, device)

    def export_ply(self, path: str | os.PathLike) -> int:
        """Write the cloud as a binary PLY with its own colours, atomically; returns the point count."""
        colour = (self._decode(self.cache.features).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
        return write_point_cloud(path, self.cache.xyz, colour)
