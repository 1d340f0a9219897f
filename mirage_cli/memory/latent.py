"""LatentSpatialMemory: a persistent 3D cache of diffusion latents.

Insert: each latent cell is lifted to one world point with the z-depth at its centre (bilinear
between the 4 central pixels of its 16x16 block) and the latent-grid intrinsics. Cells whose block
is not one plane (``geometry.depth_edge_score`` > ``edge_threshold``: a depth edge) are stored with
confidence 0 and never pinned; cells with invalid depth are dropped. Points are fused on a voxel
grid (``memory/voxel.py``), so inserting a place again adds (almost) nothing.

Query: every point is projected into the target cameras with the latent-grid intrinsics and
splatted with its footprint (``splatting.splat``): half-size ``0.5 * z_src / z_dst`` cells on the
optical axis (equal intrinsics), stretched off axis like the pinhole stretches the cell
(``splatting.footprint_half_size``), grown by ``cache.FOOTPRINT_MARGIN`` (10%) against rounding
cracks, capped at 2: this fills the holes nearest-cell splatting leaves when the camera moves
closer. The per-cell winner comes from an order-independent z-buffer: nearest depth, then (within
``depth_tolerance`` of it) the point closest to the cell centre, exact ties broken by the point's
own coordinates. Winners are marked seen (for least-recently-seen eviction).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from mirage_cli.base.options import Projection
from mirage_cli.geometry import projection as geometry
from mirage_cli.memory.ply import pca_colours, write_point_cloud
from mirage_cli.memory.point_cache import gather_rows
from mirage_cli.memory.points import DEPTH_TOLERANCE, MAX_HALF_SIZE, UNEXPLAINED_DEPTH_MARGIN, PointMemory
from mirage_cli.memory.state import check_state, save_state
from mirage_cli.memory.view import MemoryView

FORMAT = "mirage.latent_memory.v1"
EDGE_THRESHOLD = 0.05
# A reasonable ``occlusion_threshold`` for ``query`` when the spec turns the filter on: on the
# synthetic room it only removes one-cell gaps between objects (1.3% of a same-view query).
OCCLUSION_THRESHOLD = 0.25
_LATENT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class LatentSpatialMemory(PointMemory):
    """A bounded, voxel-fused cache of latent points that warps them into any camera.

    Args:
        channels: latent channels C (48 for Wan2.2).
        stride: pixels per latent cell side (16 for Wan2.2).
        device: where the cache lives; inputs are moved there.
        dtype: latent storage dtype (float16 or bfloat16; float32 allowed for tests).
        voxel_size: fusion voxel size in world units, or None to size voxels from each point's
            cell footprint (see ``memory/voxel.py``).
        capacity: maximum number of points, or None; beyond it the least recently seen go first.
    """

    _FEATURES = "latents"
    _FORMAT = FORMAT

    def __init__(
        self,
        channels: int = 48,
        stride: int = 16,
        device="cpu",
        dtype: torch.dtype = torch.float16,
        voxel_size: float | None = None,
        capacity: int | None = None,
    ):
        if channels < 1:
            raise ValueError(f"channels: expected >= 1, got {channels}")
        if stride < 2:
            raise ValueError(f"stride: expected >= 2, got {stride}")
        self.channels = int(channels)
        self.stride = int(stride)
        super().__init__(self.channels, device, dtype, _LATENT_DTYPES, voxel_size, capacity, extras=(("confidence", torch.float16),))

    def __repr__(self) -> str:
        return (f"LatentSpatialMemory(points={self.num_points}, channels={self.channels}, dtype={self.dtype}, "
                f"device={self.device}, nbytes={self.nbytes})")

    # --- insert ----------------------------------------------------------------------------------

    def insert(
        self,
        latents: Tensor,
        depth: Tensor,
        K: Tensor,
        world_from_cam: Tensor,
        keep: Tensor | None = None,
        frame_index=None,
        edge_threshold: float = EDGE_THRESHOLD,
    ) -> int:
        """Lift latent cells to world points and add those whose voxel is free.

        Args:
            latents: float [C, h, w] or [T, C, h, w].
            depth: float [H, W] or [T, H, W] z-depth at pixel resolution, H = stride*h, W = stride*w.
            K: float [3, 3] or [T, 3, 3] pixel intrinsics at H x W.
            world_from_cam: float [4, 4] or [T, 4, 4] OpenCV camera-to-world.
            keep: optional bool [h, w] or [T, h, w]: only these cells are inserted (the rollout passes
                the cells its query left empty).
            frame_index: optional int (all frames) or int [T]: source frame index stored per point.
            edge_threshold: cells with ``depth_edge_score`` above this get confidence 0.

        Returns:
            The number of points added.
        """
        lat, dep, Kt, wfc, kp = self._inputs(latents, depth, K, world_from_cam, keep, self.stride)
        z = geometry.cell_centre_depth(dep, self.stride)  # [T, h, w]
        return self._insert_checked(lat, z, dep, Kt, wfc, kp, frame_index, edge_threshold=edge_threshold)

    def _insert_checked(self, lat, z, dep, Kt, wfc, kp, frame_index, edge_threshold: float = EDGE_THRESHOLD) -> int:
        cells = self._elements(z, kp)  # (t, v, u) of the cells that go in
        # the plane fit reads each cell's 16x16 block: only for the cells that are inserted
        confidence = (geometry.depth_edge_score_at(dep, self.stride, cells) <= edge_threshold).to(torch.float16)  # [M]
        K_lat = geometry.latent_intrinsics(Kt, self.stride)  # [T, 3, 3]
        return self._add(lat, z, K_lat, wfc, cells, frame_index, extras={"confidence": confidence})

    def insert_unexplained(
        self,
        latents: Tensor,
        depth: Tensor,
        K: Tensor,
        world_from_cam: Tensor,
        keep: Tensor | None = None,
        frame_index=None,
        depth_margin: float = UNEXPLAINED_DEPTH_MARGIN,
        edge_threshold: float = EDGE_THRESHOLD,
    ) -> int:
        """Insert the frames' cells that neither the memory nor a neighbouring frame explains.

        The frames are a stretch of path (taken in ``frame_index`` order). A cell is explained when
        a query of the memory as it was before the call (one batched query at every camera) fills it
        with a point no farther than ``depth_margin`` (relative) in front of the new depth and no more
        than ``COARSER_HELD`` (2) times coarser, or when frame t - 1 or t + 1 saw the same surface (the cell
        projected there lands on a depth within ``depth_margin``) at least as finely: the later
        frame keeps a surface two frames see at the same level, the finer one otherwise
        (``memory.points.outranked_by_neighbours``). So the cache keeps each explored surface once,
        from its finest and latest view, whatever order the frames are given in; a cell whose new
        depth is clearly nearer than the rendered one, or that no neighbour sees (a disocclusion), is
        new surface and is inserted. Queries made here do not mark points seen. Arguments as ``insert``.

        Returns:
            The number of points added.
        """
        lat, dep, Kt, wfc, kp = self._inputs(latents, depth, K, world_from_cam, keep, self.stride)
        z = geometry.cell_centre_depth(dep, self.stride)  # [T, h, w]
        return self._insert_unexplained(lat, z, dep, Kt, wfc, kp, frame_index, depth_margin, edge_threshold=edge_threshold)

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
        projection: Projection = Projection.FOOTPRINT,
    ) -> MemoryView:
        """Warp the cache into T target cameras.

        Args:
            K: float [3, 3] or [T, 3, 3] pixel intrinsics at ``size``.
            world_from_cam: float [4, 4] or [T, 4, 4].
            size: (H, W) in pixels, multiples of ``stride``.
            depth_tolerance: relative depth band treated as one surface by the z-buffer (0 = plain
                nearest-depth z-buffer).
            max_half_size: cap on the footprint half-size, in cells.
            occlusion_threshold: if set, drop cells farther than (1 + threshold) times their 3x3
                neighbourhood's nearest depth (``splatting.occlusion_filter``).
            mark_seen: record the winners as seen now (eviction order).
            projection: ``footprint`` splats each point over its footprint (``depth_tolerance`` and
                ``max_half_size`` apply); ``nearest`` puts it in its nearest cell only, the official
                Mirage ``LatentPointCloud.project`` (``splatting.nearest_cell``), holes left empty.

        Returns:
            ``MemoryView`` with latents [T, C, h, w], mask/depth/confidence [T, h, w].
        """
        H, W = (int(s) for s in size)
        if H % self.stride or W % self.stride or H <= 0 or W <= 0:
            raise ValueError(f"size: expected (H, W) positive multiples of {self.stride}, got {tuple(size)}")
        h, w = H // self.stride, W // self.stride
        Kt, wfc = self._cameras(K, world_from_cam)
        K_lat = geometry.latent_intrinsics(Kt, self.stride)  # [T, 3, 3]
        # [T, h, w] each
        winner, mask, depth = self._render(K_lat, wfc, (h, w), depth_tolerance, max_half_size, occlusion_threshold, mark_seen,
                                           nearest=Projection(projection) == Projection.NEAREST)
        latents = gather_rows(self.cache.features, winner).permute(0, 3, 1, 2).contiguous()  # [T, C, h, w]
        conf = gather_rows(self.cache.extras["confidence"][:, None], winner)[..., 0].to(torch.float32)  # [T, h, w]
        zero = torch.zeros((), dtype=torch.float32, device=self.device)
        return MemoryView(latents=latents, mask=mask, depth=depth, confidence=torch.where(mask, conf, zero))

    # --- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Every array and setting as tensors (what ``save`` writes and checkpoints store)."""
        return self._state({"stride": torch.tensor(self.stride, dtype=torch.int64)})

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], device="cpu") -> LatentSpatialMemory:
        """Rebuild a memory from ``state_dict()``'s output.

        Raises:
            ValueError: missing or unexpected keys, wrong dtypes or shapes (all listed).
        """
        schema = cls._schema(
            _LATENT_DTYPES,
            "C",
            extras={"confidence": ((torch.float16,), ("N",))},
            settings={"stride": ((torch.int64,), ())},
        )
        dims = check_state(state, schema, "LatentSpatialMemory")
        mem = cls(channels=dims["C"], stride=int(state["stride"]), device=device, dtype=state["latents"].dtype, **cls._limits(state))
        mem._restore(state)
        return mem

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory to a safetensors file, atomically."""
        save_state(path, self.state_dict(), FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> LatentSpatialMemory:
        """Read a file written by ``save``; ValueError names the file and what is wrong."""
        return cls._load(path, device)

    def export_ply(self, path: str | os.PathLike) -> int:
        """Write the cache as a binary PLY point cloud (xyz + colour from the latents' first 3
        principal components), atomically; returns the number of points written."""
        return write_point_cloud(path, self.cache.xyz, pca_colours(self.cache.features))
