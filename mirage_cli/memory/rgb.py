"""RGBPointMemory: the explicit baseline, an RGB point cloud rendered at pixel level.

What other world models keep, done properly: one point per pixel of the decoded frames (lifted
with full-resolution depth), voxel-fused like the latent memory, and rendered into every target
pixel frame by the same footprint splat and z-buffer at stride 1 (so holes fill when the camera
moves closer). The rollout VAE-encodes these renders to condition the model; that encode and the
per-pixel work are what the latent memory avoids.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from mirage_cli import geometry
from mirage_cli.memory import checks
from mirage_cli.memory.cache import PointCache, gather_rows
from mirage_cli.memory.latent import DEPTH_TOLERANCE, MAX_HALF_SIZE, UNEXPLAINED_DEPTH_MARGIN
from mirage_cli.memory.state import check_state, load_state, save_state
from mirage_cli.memory.view import RGBView

FORMAT = "mirage.rgb_memory.v1"
_COLOUR_DTYPES = (torch.uint8, torch.float16, torch.float32)


class RGBPointMemory:
    """A voxel-fused RGB point cloud with a pixel-level z-buffer renderer.

    Args:
        device: where the cloud lives; inputs are moved there.
        dtype: colour storage: uint8 (default, 8-bit like decoded video), float16 or float32.
        voxel_size: fusion voxel size in world units, or None to size voxels from each point's
            pixel footprint (``memory/voxel.py``).
        capacity: maximum number of points, or None (least recently seen evicted first).
    """

    def __init__(self, device="cpu", dtype: torch.dtype = torch.uint8, voxel_size: Optional[float] = None, capacity: Optional[int] = None):
        if dtype not in _COLOUR_DTYPES:
            raise ValueError(f"dtype: expected one of {list(_COLOUR_DTYPES)}, got {dtype}")
        if voxel_size is not None and not voxel_size > 0:
            raise ValueError(f"voxel_size: expected > 0 or None, got {voxel_size}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity: expected >= 1 or None, got {capacity}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.capacity = None if capacity is None else int(capacity)
        self.cache = PointCache(3, dtype, self.device, self.voxel_size)

    @property
    def num_points(self) -> int:
        return len(self.cache)

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-point arrays (xyz, colour, radius, frame index, last seen)."""
        return self.cache.nbytes

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

    def _inputs(self, rgb, depth, K, world_from_cam, keep):
        x = checks.tensor(rgb, "rgb", self.device)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"rgb: expected shape [T, 3, H, W] or [3, H, W], got {list(rgb.shape)}")
        T, _, H, W = x.shape
        dep = checks.frames_first(checks.tensor(depth, "depth", self.device, torch.float32), (H, W), "depth", T)
        Kt = checks.frames_first(checks.tensor(K, "K", self.device, torch.float64), (3, 3), "K", T)
        wfc = checks.frames_first(checks.tensor(world_from_cam, "world_from_cam", self.device, torch.float64), (4, 4), "world_from_cam", T)
        kp = None
        if keep is not None:
            kp = checks.frames_first(checks.tensor(keep, "keep", self.device, torch.bool), (H, W), "keep", T)
        return x, dep, Kt, wfc, kp

    def insert(self, rgb: Tensor, depth: Tensor, K: Tensor, world_from_cam: Tensor, keep: Optional[Tensor] = None, frame_index=None) -> int:
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
        T, _, H, W = x.shape
        frames = checks.frame_indices(frame_index, T, self.device)  # [T]
        ok = geometry.valid_depth(dep)  # [T, H, W]
        if kp is not None:
            ok &= kp
        xyz = geometry.backproject(torch.where(ok, dep, torch.ones_like(dep)), Kt, wfc)  # [T, H, W, 3]
        focal = torch.sqrt(Kt[:, 0, 0] * Kt[:, 1, 1]).to(torch.float32)  # [T]
        distance = (xyz - wfc[:, None, None, :3, 3].to(xyz.dtype)).norm(dim=-1)  # [T, H, W]
        radius = geometry.footprint_radius(dep, distance, focal[:, None, None])  # [T, H, W]
        colour = self._encode(x.permute(0, 2, 3, 1))  # [T, H, W, 3]
        frame_of = frames[:, None, None].expand(T, H, W)  # [T, H, W]
        added = self.cache.add(xyz[ok], colour[ok], radius[ok], frame_of[ok])
        if self.capacity is not None:
            self.cache.evict(self.capacity)
        return added

    def insert_unexplained(
        self,
        rgb: Tensor,
        depth: Tensor,
        K: Tensor,
        world_from_cam: Tensor,
        keep: Optional[Tensor] = None,
        frame_index=None,
        depth_margin: float = UNEXPLAINED_DEPTH_MARGIN,
    ) -> int:
        """Insert frames one after another, each only where the cloud does not explain it yet
        (same rule as ``LatentSpatialMemory.insert_unexplained``, per pixel)."""
        x, dep, Kt, wfc, kp = self._inputs(rgb, depth, K, world_from_cam, keep)
        T, _, H, W = x.shape
        frames = checks.frame_indices(frame_index, T, self.device)
        added = 0
        for t in range(T):
            view = self.query(Kt[t], wfc[t], (H, W), mark_seen=False)
            explained = view.mask[0] & (dep[t] >= view.depth[0] * (1.0 - depth_margin))  # [H, W]
            keep_t = ~explained if kp is None else (~explained & kp[t])
            added += self.insert(x[t], dep[t], Kt[t], wfc[t], keep=keep_t, frame_index=frames[t])
        return added

    # --- query -----------------------------------------------------------------------------------

    def query(
        self,
        K: Tensor,
        world_from_cam: Tensor,
        size: tuple[int, int],
        *,
        depth_tolerance: float = DEPTH_TOLERANCE,
        max_half_size: float = MAX_HALF_SIZE,
        occlusion_threshold: Optional[float] = None,
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
        wfc = checks.tensor(world_from_cam, "world_from_cam", self.device, torch.float64)
        T = wfc.shape[0] if wfc.ndim == 3 else 1
        wfc = checks.frames_first(wfc, (4, 4), "world_from_cam", T)
        Kt = checks.frames_first(checks.tensor(K, "K", self.device, torch.float64), (3, 3), "K", T)
        winner, depth = self.cache.render(Kt, wfc, (H, W), depth_tolerance, max_half_size)  # [T, H, W] x2
        mask = winner >= 0
        if occlusion_threshold is not None:
            mask = geometry.occlusion_filter(depth, mask, occlusion_threshold)
            winner = torch.where(mask, winner, torch.full_like(winner, -1))
        if mark_seen:
            self.cache.mark_seen(winner)
        rgb = self._decode(gather_rows(self.cache.features, winner)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W]
        return RGBView(rgb=rgb, mask=mask, depth=torch.where(mask, depth, torch.zeros((), device=self.device)))

    # --- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Every array and setting as tensors."""
        c = self.cache
        return {
            "xyz": c.xyz,
            "rgb": c.features,
            "radius": c.radius,
            "frame_index": c.frame_index,
            "last_seen": c.last_seen,
            "voxel_size": torch.tensor(float("nan") if self.voxel_size is None else self.voxel_size, dtype=torch.float64),
            "capacity": torch.tensor(-1 if self.capacity is None else self.capacity, dtype=torch.int64),
            "clock": torch.tensor(c.clock, dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], device="cpu") -> "RGBPointMemory":
        """Rebuild from ``state_dict()``'s output; ValueError lists wrong keys, dtypes and shapes."""
        schema = {
            "xyz": ((torch.float32,), ("N", 3)),
            "rgb": (_COLOUR_DTYPES, ("N", 3)),
            "radius": ((torch.float32,), ("N",)),
            "frame_index": ((torch.int32,), ("N",)),
            "last_seen": ((torch.int64,), ("N",)),
            "voxel_size": ((torch.float64,), ()),
            "capacity": ((torch.int64,), ()),
            "clock": ((torch.int64,), ()),
        }
        check_state(state, schema, "RGBPointMemory")
        voxel_size = float(state["voxel_size"])
        capacity = int(state["capacity"])
        mem = cls(
            device=device,
            dtype=state["rgb"].dtype,
            voxel_size=None if voxel_size != voxel_size else voxel_size,
            capacity=None if capacity < 0 else capacity,
        )
        c = mem.cache
        c.xyz = state["xyz"].to(mem.device).clone()
        c.features = state["rgb"].to(mem.device).clone()
        c.radius = state["radius"].to(mem.device).clone()
        c.frame_index = state["frame_index"].to(mem.device).clone()
        c.last_seen = state["last_seen"].to(mem.device).clone()
        c.clock = int(state["clock"])
        return mem

    def save(self, path: str | os.PathLike) -> None:
        """Write the cloud to a safetensors file, atomically."""
        save_state(path, self.state_dict(), FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> "RGBPointMemory":
        """Read a file written by ``save``; ValueError names the file and what is wrong."""
        state = load_state(path, FORMAT, "cpu")
        try:
            return cls.from_state_dict(state, device=device)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None

    def export_ply(self, path: str | os.PathLike) -> int:
        """Write the cloud as a binary PLY with its own colours, atomically; returns the point count."""
        from mirage_cli.memory.ply import write_point_cloud

        colour = (self._decode(self.cache.features).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
        return write_point_cloud(path, self.cache.xyz, colour)
