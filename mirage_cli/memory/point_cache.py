"""The structure-of-arrays point cache both memories are built on.

Per point: ``xyz`` float32 [N, 3] (world), ``features`` [N, C] (latents in float16/bfloat16, or
colour), ``radius`` float32 [N] (world-space half-size of the cell or pixel it came from,
``splatting.footprint_radius``), ``frame_index`` int32 [N] (source frame, -1 if
unknown) and ``last_seen`` int64 [N] (the memory clock when the point last won a cell in a query,
or was inserted). ``extras`` holds optional per-point arrays (the latent memory's confidence).

Adding points fuses them on a voxel grid (``memory/voxel.py``); ``evict`` drops the least recently
seen points down to a capacity; ``render`` projects everything into T cameras and splats it with
``splatting.splat``, batched over frames with no loop over points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mirage_cli.geometry import projection as geometry
from mirage_cli.geometry import splatting
from mirage_cli.memory import voxel

# Points projected per batch of target frames in ``render`` (bounds peak memory, not results).
POINTS_PER_BATCH = 1 << 23
# Footprints are grown by this factor so that rounding and mild foreshortening leave no cracks;
# overlaps cost nothing because the z-buffer then prefers the point nearest the cell centre.
FOOTPRINT_MARGIN = 1.1


class PointCache:
    """Growable per-point arrays on one device. Not thread-safe."""

    def __init__(
        self, channels: int, feature_dtype: torch.dtype, device, voxel_size: float | None = None,
        extras: tuple[tuple[str, torch.dtype], ...] = (),
    ):
        self.device = torch.device(device)
        self.voxel_size = voxel_size
        self.clock = 0
        self.xyz = torch.zeros(0, 3, dtype=torch.float32, device=self.device)
        self.features = torch.zeros(0, channels, dtype=feature_dtype, device=self.device)
        self.radius = torch.zeros(0, dtype=torch.float32, device=self.device)
        self.frame_index = torch.zeros(0, dtype=torch.int32, device=self.device)
        self.last_seen = torch.zeros(0, dtype=torch.int64, device=self.device)
        self.extras: dict[str, Tensor] = {name: torch.zeros(0, dtype=dt, device=self.device) for name, dt in extras}
        self._keys: tuple[Tensor, Tensor, Tensor] | None = None  # (xyz, radius, their voxel keys), see held_keys

    # --- size ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def arrays(self) -> dict[str, Tensor]:
        """Every per-point array by name (features under ``features``)."""
        out = {
            "xyz": self.xyz, "features": self.features, "radius": self.radius,
            "frame_index": self.frame_index, "last_seen": self.last_seen,
        }
        out.update(self.extras)
        return out

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.arrays().values())

    # --- mutation --------------------------------------------------------------------------------

    def _take(self, keep: Tensor) -> None:
        self.xyz, self.features, self.radius = self.xyz[keep], self.features[keep], self.radius[keep]
        self.frame_index, self.last_seen = self.frame_index[keep], self.last_seen[keep]
        self.extras = {k: v[keep] for k, v in self.extras.items()}

    def add(self, xyz: Tensor, features: Tensor, radius: Tensor, frame_index: Tensor, extras: dict[str, Tensor] | None = None) -> int:
        """Append the points whose voxel is still free (keyed as held: in the cache's dtypes); returns how many were added.

        Args:
            xyz: float [M, 3]; features: [M, C]; radius: float [M]; frame_index: int [M];
            extras: name -> [M] for every extra array.
        """
        self.clock += 1
        extras = extras or {}
        xyz, radius = xyz.to(self.xyz.dtype), radius.to(self.radius.dtype)  # as they will be held: their keys stay valid
        new_keys = voxel.voxel_keys(xyz, radius, self.voxel_size)  # [M]
        old_keys = self.held_keys()  # [N]
        keep = voxel.novel(new_keys, old_keys)  # [M]
        added = int(keep.sum())
        if added == 0:
            return 0
        self.xyz = torch.cat([self.xyz, xyz[keep]])
        self.features = torch.cat([self.features, features[keep].to(self.features.dtype)])
        self.radius = torch.cat([self.radius, radius[keep]])
        self.frame_index = torch.cat([self.frame_index, frame_index[keep].to(self.frame_index.dtype)])
        self.last_seen = torch.cat([self.last_seen, torch.full((added,), self.clock, dtype=torch.int64, device=self.device)])
        for k, v in self.extras.items():
            self.extras[k] = torch.cat([v, extras[k][keep].to(v.dtype)])
        self._keys = (self.xyz, self.radius, torch.cat([old_keys, new_keys[keep]]))
        return added

    def held_keys(self) -> Tensor:
        """int64 [N] the voxel keys of the points held, computed once per change of ``xyz`` /
        ``radius`` (an assignment of either, checked by identity, makes them computed again)."""
        if self._keys is None or self._keys[0] is not self.xyz or self._keys[1] is not self.radius:
            self._keys = (self.xyz, self.radius, voxel.voxel_keys(self.xyz, self.radius, self.voxel_size))
        return self._keys[2]

    def evict(self, capacity: int) -> int:
        """Drop the least recently seen points (ties: earliest inserted first) down to ``capacity``; returns how many."""
        excess = len(self) - capacity
        if excess <= 0:
            return 0
        order = torch.sort(self.last_seen, stable=True).indices  # [N] oldest first, ties in index order
        keep = torch.ones(len(self), dtype=torch.bool, device=self.device)
        keep[order[:excess]] = False
        self._take(keep)
        return excess

    def mark_seen(self, winner: Tensor) -> None:
        """Set ``last_seen`` to a new clock tick for every point index in ``winner`` (-1 ignored)."""
        self.clock += 1
        idx = winner[winner >= 0]
        self.last_seen[idx] = self.clock

    # --- rendering -------------------------------------------------------------------------------

    def render(
        self,
        K_grid: Tensor,
        world_from_cam: Tensor,
        size: tuple[int, int],
        depth_tolerance: float,
        max_half_size: float,
        nearest: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Splat every point into T cameras.

        Args:
            K_grid: float [T, 3, 3] intrinsics of the target grid (cells or pixels).
            world_from_cam: float [T, 4, 4].
            size: (h, w) of the grid.
            nearest: each point to its nearest cell only (``splatting.nearest_cell``; the footprint
                arguments are not used), else footprint splatting (``splatting.splat``).

        Returns:
            winner: long [T, h, w] point index (-1 empty); depth: float32 [T, h, w] (+inf empty).
        """
        T = K_grid.shape[0]
        h, w = size
        N = len(self)
        if N == 0:
            return (
                torch.full((T, h, w), -1, dtype=torch.long, device=self.device),
                torch.full((T, h, w), float("inf"), dtype=torch.float32, device=self.device),
            )
        cam_from_world = geometry.invert_rigid(world_from_cam.to(torch.float64)).to(torch.float32)  # [T, 4, 4]
        K32 = K_grid.to(torch.float32)
        focal = torch.sqrt(K32[:, 0, 0] * K32[:, 1, 1])  # [T]
        tie_keys = torch.cat([self.xyz, self.radius[:, None]], dim=1)  # [N, 4] intrinsic tie-break
        per_batch = max(1, POINTS_PER_BATCH // N)
        winners, depths = [], []
        for t0 in range(0, T, per_batch):
            sl = slice(t0, min(T, t0 + per_batch))
            pts = geometry.transform_points(cam_from_world[sl], self.xyz)  # [Tb, N, 3]
            uv, z = geometry.project(pts, K32[sl])  # [Tb, N, 2], [Tb, N]
            if nearest:
                wn, dp = splatting.nearest_cell(uv, z, torch.ones_like(z, dtype=torch.bool), size)
                winners.append(wn)
                depths.append(dp)
                continue
            valid = z > 1e-6
            zc = z.clamp(min=1e-6)
            half = splatting.footprint_half_size(self.radius[None, :], zc, pts.norm(dim=-1), focal[sl, None])  # [Tb, N] cells
            half = FOOTPRINT_MARGIN * half
            wn, dp = splatting.splat(uv, z, half, valid, size, max_half_size, depth_tolerance, tie_keys)
            winners.append(wn)
            depths.append(dp)
        return torch.cat(winners), torch.cat(depths)


def gather_rows(values: Tensor, winner: Tensor) -> Tensor:
    """Per-cell rows of ``values`` [N, C] picked by ``winner`` [T, h, w] (-1 = empty -> zeros): [T, h, w, C]."""
    out = torch.zeros(*winner.shape, values.shape[1], dtype=values.dtype, device=values.device)
    has = winner >= 0
    out[has] = values[winner[has]]
    return out
