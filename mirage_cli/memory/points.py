"""What the latent memory and the RGB point memory share: a ``PointCache`` and the plumbing around it.

``LatentSpatialMemory`` (``memory/latent.py``) and ``RGBPointMemory`` (``memory/rgb.py``) differ in
what a point carries (a latent cell with a confidence, or a pixel's colour) and in the grid they
lift from and render to (latent cells of ``stride`` x ``stride`` pixels, or pixels). The rest is
written once here: the settings checks, the per-frame argument checks, lifting a grid of depths to
voxel-fused points, the insert-only-what-is-unexplained rule, the z-buffer render behind ``query``,
and the state dict with its file.

State dict layout (both memories): ``xyz``, the features (under the subclass's ``_FEATURES``
name), ``radius``, the cache's extras, ``frame_index``, ``last_seen``, the subclass's own
settings, then ``voxel_size`` (nan = None), ``capacity`` (-1 = None) and ``clock``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from mirage_cli.geometry import projection as geometry
from mirage_cli.geometry import splatting
from mirage_cli.memory import checks, voxel
from mirage_cli.memory.point_cache import PointCache
from mirage_cli.memory.state import Schema, load_state

GRID_ELEMENTS_PER_GROUP = 1 << 22
"""Grid elements decided and inserted together by ``insert_unexplained`` (bounds its transient memory:
all 31 latent frames of a 121-frame chunk at 1280x704 are one group, its pixel frames 4 at a time)."""
DEPTH_TOLERANCE = 0.05
"""Relative depth band a query's z-buffer treats as one surface."""
MAX_HALF_SIZE = 2.0
"""Cap on a point's footprint half-size in a query, in grid elements."""
UNEXPLAINED_DEPTH_MARGIN = 0.1
"""Relative depth difference within which ``insert_unexplained`` calls two depths one surface."""
NEIGHBOUR_ELEMENTS_PER_BATCH = 1 << 17
"""Grid elements of source frames ``outranked_by_neighbours`` projects at once, in whole frame pairs
(bounds its temporaries, not its result): a chunk's 31 latent frames at 1280x704 in one batch, pixel
frames one pair at a time."""
COARSER_HELD = 2.0
"""``insert_unexplained`` takes a surface the memory holds again when the new view's points are
more than this many times finer (world half-size) than the held point: getting twice as close
refines the memory, passing by at about the same distance adds nothing."""


def element_radius(z: Tensor, K_grid: Tensor) -> Tensor:
    """float32 [T, h, w]: the world half-size of the point each grid element lifts to
    (``splatting.footprint_radius``, the radius an insert stores), computed on the grid.

    Args:
        z: float [T, h, w] z-depth per grid element (invalid values give meaningless radii).
        K_grid: float [T, 3, 3] intrinsics of the grid.
    """
    h, w = z.shape[-2:]
    uv1 = torch.cat([geometry.pixel_grid(h, w, torch.float32, z.device), torch.ones(h, w, 1, device=z.device)], -1)  # [h, w, 3]
    shared = bool((K_grid == K_grid[:1]).all())  # one camera model for every frame (the rollout's case): one grid of rays
    K_inv = torch.linalg.inv(K_grid[:1] if shared else K_grid).to(torch.float32)
    rays = torch.einsum("tij,hwj->thwi", K_inv, uv1)  # [T or 1, h, w, 3], z = 1
    ray_length = rays.square().sum(-1).sqrt()  # [T or 1, h, w] per unit of z
    focal = torch.sqrt(K_grid[:, 0, 0] * K_grid[:, 1, 1]).to(torch.float32)[:, None, None]  # [T, 1, 1]
    zf = z.to(torch.float32)
    return splatting.footprint_radius(zf, zf * ray_length, focal)


def outranked_by_neighbours(z: Tensor, K_grid: Tensor, world_from_cam: Tensor, level: Tensor, margin: float) -> Tensor:
    """bool [T, h, w]: grid element (v, u) of frame t lies on a surface that a neighbouring frame saw
    at least as finely, so that frame keeps it.

    Each element of frame t is lifted to the world, projected into cameras t - 1 and t + 1 and
    compared with the depth each holds at the nearest element there: the same surface when the two
    depths differ by at most ``margin`` (relative). Frame t + 1 outranks t there when its element is
    of the same or a finer ``level`` (the later view wins a tie); frame t - 1 when its level is
    strictly finer. Each step from an element to the one outranking it lowers (level, -frame), so
    following them ends at an element that is kept: the finest view of the surface, the latest among
    equals, and dropping the outranked elements leaves every surface in the cache. The rule reads
    both neighbours alike. Elements without valid depth are not outranked.

    Args:
        z: float [T, h, w] z-depth per grid element (invalid: <= 0, nan, inf).
        K_grid: float64 [T, 3, 3] intrinsics of the grid; world_from_cam: float64 [T, 4, 4].
        level: float [T, h, w] voxel level of each element (``voxel.footprint_level`` of its
            ``element_radius``).
        margin: relative depth tolerance.
    """
    T, h, w = z.shape
    valid = geometry.valid_depth(z)
    out = torch.zeros(T, h, w, dtype=torch.bool, device=z.device)
    if T < 2:
        return out
    lifted = torch.where(valid, z, torch.ones_like(z))
    pairs_per_batch = max(1, NEIGHBOUR_ELEMENTS_PER_BATCH // (h * w))
    for start in range(0, T - 1, pairs_per_batch):  # frame pairs (t, t + 1), a batch at a time: bounded temporaries
        stop = min(T - 1, start + pairs_per_batch)
        earlier, later = slice(start, stop), slice(start + 1, stop + 1)
        for src, dst, towards_later in ((earlier, later, True), (later, earlier, False)):
            n = stop - start
            dst_from_src = geometry.invert_rigid(world_from_cam[dst]) @ world_from_cam[src]  # [n, 4, 4]
            uv, depth_there = geometry.reproject(lifted[src], K_grid[src], K_grid[dst], dst_from_src)  # [n, h, w, 2], [n, h, w]
            u, v = uv.round_().unbind(-1)  # [n, h, w] whole numbers (finite: lifted depth is), views of uv
            inside = (depth_there > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            nearest = v.clamp_(0, h - 1).mul_(w).add_(u.clamp_(0, w - 1)).long().flatten(1)  # [n, h*w] (uv reused in place)
            del uv, u, v
            held = z[dst].flatten(1).gather(1, nearest).view(n, h, w)  # what the neighbour saw there
            same = inside & geometry.valid_depth(held) & ((depth_there - held).abs_() <= margin * held)
            del depth_there, held
            held_level = level[dst].flatten(1).gather(1, nearest).view(n, h, w)
            same &= held_level <= level[src] if towards_later else held_level < level[src]  # and seen as finely
            out[src] |= same
    return out & valid


class PointMemory:
    """Base of the two memories: a bounded, voxel-fused ``PointCache`` on one device.

    Subclasses set ``_FEATURES`` (the features' argument name and state-dict key) and
    ``_FORMAT`` (the tag of their safetensors files).
    """

    _FEATURES = "features"
    _FORMAT = ""

    def __init__(
        self, channels: int, device, dtype: torch.dtype, dtypes: tuple[torch.dtype, ...],
        voxel_size: float | None, capacity: int | None, extras: tuple[tuple[str, torch.dtype], ...] = (),
    ):
        # the shared settings checks (``dtype`` must be one of ``dtypes``), then the empty cache
        if dtype not in dtypes:
            raise ValueError(f"dtype: expected one of {list(dtypes)}, got {dtype}")
        if voxel_size is not None and not voxel_size > 0:
            raise ValueError(f"voxel_size: expected > 0 or None, got {voxel_size}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity: expected >= 1 or None, got {capacity}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.capacity = None if capacity is None else int(capacity)
        self.cache = PointCache(channels, dtype, self.device, self.voxel_size, extras=extras)

    # --- size ------------------------------------------------------------------------------------

    @property
    def num_points(self) -> int:
        return len(self.cache)

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-point arrays (xyz, latents or colour, radius, frame index, last seen,
        and the latent memory's confidence)."""
        return self.cache.nbytes

    # --- insert ----------------------------------------------------------------------------------

    def _inputs(self, features, depth, K, world_from_cam, keep, stride: int = 1):
        """Check one insert's arguments and give each a leading frame dim.

        ``features`` is [C, h, w] or [T, C, h, w] on the memory's grid (named by ``_FEATURES``);
        ``stride`` is the grid's pixels per cell side (1: the grid is the pixels). Returns
        features [T, C, h, w], depth float32 [T, H, W], K float64 [T, 3, 3], world_from_cam
        float64 [T, 4, 4] and keep bool [T, h, w] or None, with H, W = stride * (h, w).
        """
        name, C = self._FEATURES, self.cache.features.shape[1]
        dims = "H, W" if stride == 1 else "h, w"  # pixels, or latent cells
        x = checks.tensor(features, name, self.device)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != C:
            raise ValueError(f"{name}: expected shape [T, {C}, {dims}] or [{C}, {dims}], got {list(features.shape)}")
        T, _, h, w = x.shape
        H, W = h * stride, w * stride
        dep = checks.frames_first(checks.tensor(depth, "depth", self.device, torch.float32), (H, W), "depth", T)
        Kt = checks.frames_first(checks.tensor(K, "K", self.device, torch.float64), (3, 3), "K", T)
        wfc = checks.frames_first(checks.tensor(world_from_cam, "world_from_cam", self.device, torch.float64), (4, 4), "world_from_cam", T)
        kp = None
        if keep is not None:
            kp = checks.frames_first(checks.tensor(keep, "keep", self.device, torch.bool), (h, w), "keep", T)
        return x, dep, Kt, wfc, kp

    @staticmethod
    def _elements(z: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(t, v, u), long [M] each: the grid elements an insert lifts, those of ``z`` [T, h, w]
        with valid depth (and ``keep`` [T, h, w], when given)."""
        ok = geometry.valid_depth(z)
        if keep is not None:
            ok &= keep
        return ok.nonzero(as_tuple=True)

    def _add(
        self, features: Tensor, z: Tensor, K_grid: Tensor, world_from_cam: Tensor,
        index: tuple[Tensor, Tensor, Tensor], frame_index, extras: dict[str, Tensor] | None = None,
    ) -> int:
        """Lift the grid elements ``index`` (``_elements``) to world points, add those whose voxel
        is free, then evict down to ``capacity``; returns the number added.

        Args:
            features: [T, C, h, w] in any dtype the cache casts to its own.
            z: float [T, h, w] z-depth per grid element.
            K_grid: float64 [T, 3, 3] intrinsics of the grid.
            world_from_cam: float64 [T, 4, 4].
            index: (t, v, u), long [M] each.
            frame_index: None, an int or int [T] (``checks.frame_indices``).
            extras: name -> [M] for each of the cache's extra arrays, one row per indexed element.
        """
        frames = checks.frame_indices(frame_index, features.shape[0], self.device)  # [T]
        t = index[0]  # [M] frame of each point
        xyz = geometry.backproject_at(z, K_grid, world_from_cam, index)  # [M, 3]
        focal = torch.sqrt(K_grid[:, 0, 0] * K_grid[:, 1, 1]).to(torch.float32)  # [T]
        distance = (xyz - world_from_cam[t, :3, 3].to(xyz.dtype)).norm(dim=-1)  # [M]
        radius = splatting.footprint_radius(z[index], distance, focal[t])  # [M] world half-size of the element
        feats = features.permute(0, 2, 3, 1)[index]  # [M, C]
        added = self.cache.add(xyz, feats, radius, frames[t], extras=extras)
        if self.capacity is not None:
            self.cache.evict(self.capacity)
        return added

    def _insert_checked(self, features: Tensor, z: Tensor, depth: Tensor, K: Tensor, world_from_cam: Tensor,
                        keep: Tensor | None, frame_index, **insert_args) -> int:
        """``insert`` after its argument checks (``_inputs``), with the grid's depth ``z`` [T, h, w]
        already taken from ``depth``; each subclass lifts its own grid."""
        raise NotImplementedError

    def _insert_unexplained(
        self, features: Tensor, z: Tensor, depth: Tensor, K: Tensor, world_from_cam: Tensor,
        keep: Tensor | None, frame_index, depth_margin: float, **insert_args,
    ) -> int:
        """The rule behind both ``insert_unexplained``: a grid element is not inserted when the memory
        as it was before the call explains it, or when a neighbouring frame of the path outranks it.

        The frames are taken in the order of their ``frame_index`` (the path; equal or no indices keep
        the given order). The memory explains an element when a query at its camera (one batched
        query per group, marking nothing seen) fills it with a point no more than ``depth_margin``
        (relative) behind the new depth and at most ``COARSER_HELD`` times coarser than the element: a
        surface seen much coarser before is taken again from the finer view. ``outranked_by_neighbours``
        drops what frame t - 1 or t + 1 saw as finely. What is left is inserted voxel-fused in path
        order, in groups of at most ``GRID_ELEMENTS_PER_GROUP`` elements (a chunk's latent frames are one
        group, its pixel frames 4 at a time): the result depends neither on the grouping nor on the
        order the frames are given in.

        Args:
            features: [T, C, h, w]; z: float [T, h, w] depth per grid element; depth: float
                [T, H, W] pixel depth; K: float64 [T, 3, 3] pixel intrinsics; world_from_cam:
                float64 [T, 4, 4]; keep: bool [T, h, w] or None (as ``_inputs`` returns them).
            insert_args: passed on to ``_insert_checked``.
        """
        T, H, W = depth.shape
        h, w = z.shape[-2:]
        frames = checks.frame_indices(frame_index, T, self.device)  # [T]
        order = torch.sort(frames, stable=True).indices  # [T] the path
        if not torch.equal(order, torch.arange(T, device=self.device)):  # frames given out of order: a copy in order
            features, z, depth, K, world_from_cam, frames = (x[order] for x in (features, z, depth, K, world_from_cam, frames))
            keep = None if keep is None else keep[order]
        K_grid = geometry.latent_intrinsics(K, H // h)  # [T, 3, 3]
        radius = element_radius(z, K_grid)  # [T, h, w]
        level = voxel.footprint_level(radius, torch.float32)  # [T, h, w]
        per_group = max(1, GRID_ELEMENTS_PER_GROUP // (h * w))
        groups = [slice(start, min(T, start + per_group)) for start in range(0, T, per_group)]
        by_memory = torch.zeros(z.shape, dtype=torch.bool, device=self.device)  # [T, h, w]
        if len(self.cache):
            for group in groups:  # all before anything of this call goes in
                winner, mask, rendered = self._render(K_grid[group], world_from_cam[group], (h, w), DEPTH_TOLERANCE, MAX_HALF_SIZE,
                                                      None, False)  # [Tg, h, w] each
                held = self.cache.radius[winner.clamp(min=0)]  # [Tg, h, w] world half-size of each winner
                by_memory[group] = mask & (z[group] >= rendered * (1.0 - depth_margin)) & (held <= COARSER_HELD * radius[group])
        added = 0
        for group in groups:
            around = slice(max(0, group.start - 1), min(T, group.stop + 1))  # with the neighbours
            first = group.start - around.start
            outranked = outranked_by_neighbours(z[around], K_grid[around], world_from_cam[around], level[around],
                                                depth_margin)[first:first + group.stop - group.start]  # [Tg, h, w]
            keep_new = ~(outranked | by_memory[group])
            if keep is not None:
                keep_new &= keep[group]
            added += self._insert_checked(features[group], z[group], depth[group], K[group], world_from_cam[group], keep_new,
                                          frames[group], **insert_args)
        return added

    # --- query -----------------------------------------------------------------------------------

    def _cameras(self, K, world_from_cam) -> tuple[Tensor, Tensor]:
        """Check a query's cameras: K float64 [T, 3, 3] and world_from_cam float64 [T, 4, 4], T
        taken from ``world_from_cam``."""
        wfc = checks.tensor(world_from_cam, "world_from_cam", self.device, torch.float64)
        T = wfc.shape[0] if wfc.ndim == 3 else 1
        wfc = checks.frames_first(wfc, (4, 4), "world_from_cam", T)
        Kt = checks.frames_first(checks.tensor(K, "K", self.device, torch.float64), (3, 3), "K", T)
        return Kt, wfc

    def _render(
        self, K_grid: Tensor, world_from_cam: Tensor, size: tuple[int, int],
        depth_tolerance: float, max_half_size: float, occlusion_threshold: float | None, mark_seen: bool,
        nearest: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Splat the cache into T cameras (``PointCache.render``), apply the optional occlusion
        filter and mark the winners seen.

        Args:
            K_grid: float64 [T, 3, 3] grid intrinsics; world_from_cam: float64 [T, 4, 4];
            size: (h, w) of the grid; nearest: ``PointCache.render``'s; the rest as the public ``query``.

        Returns:
            winner: long [T, h, w] point index (-1 empty); mask: bool [T, h, w];
            depth: float32 [T, h, w] z-depth, 0 where empty.
        """
        winner, depth = self.cache.render(K_grid, world_from_cam, size, depth_tolerance, max_half_size, nearest)  # [T, h, w] x2
        mask = winner >= 0
        if occlusion_threshold is not None:
            mask = splatting.occlusion_filter(depth, mask, occlusion_threshold)
            winner = torch.where(mask, winner, torch.full_like(winner, -1))
        if mark_seen:
            self.cache.mark_seen(winner)
        return winner, mask, torch.where(mask, depth, torch.zeros((), dtype=torch.float32, device=self.device))

    # --- state -----------------------------------------------------------------------------------

    def _state(self, settings: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The state dict (layout in the module docstring), with the subclass's ``settings``."""
        c = self.cache
        return {
            "xyz": c.xyz,
            self._FEATURES: c.features,
            "radius": c.radius,
            **c.extras,
            "frame_index": c.frame_index,
            "last_seen": c.last_seen,
            **(settings or {}),
            "voxel_size": torch.tensor(float("nan") if self.voxel_size is None else self.voxel_size, dtype=torch.float64),
            "capacity": torch.tensor(-1 if self.capacity is None else self.capacity, dtype=torch.int64),
            "clock": torch.tensor(c.clock, dtype=torch.int64),
        }

    @classmethod
    def _schema(cls, feature_dtypes, channels, extras: Schema | None = None, settings: Schema | None = None) -> Schema:
        """``check_state`` schema of ``_state``'s layout; ``channels`` is the features' width
        (an int, or a name such as "C" to read it from the state)."""
        return {
            "xyz": ((torch.float32,), ("N", 3)),
            cls._FEATURES: (feature_dtypes, ("N", channels)),
            "radius": ((torch.float32,), ("N",)),
            **(extras or {}),
            "frame_index": ((torch.int32,), ("N",)),
            "last_seen": ((torch.int64,), ("N",)),
            **(settings or {}),
            "voxel_size": ((torch.float64,), ()),
            "capacity": ((torch.int64,), ()),
            "clock": ((torch.int64,), ()),
        }

    @staticmethod
    def _limits(state: dict[str, Tensor]) -> dict:
        """``voxel_size`` and ``capacity`` constructor arguments from a checked state dict."""
        voxel_size = float(state["voxel_size"])
        capacity = int(state["capacity"])
        return {
            "voxel_size": None if voxel_size != voxel_size else voxel_size,
            "capacity": None if capacity < 0 else capacity,
        }

    def _restore(self, state: dict[str, Tensor]) -> None:
        """Copy a checked state dict's per-point arrays and clock into the (empty) cache."""
        c = self.cache
        c.xyz = state["xyz"].to(self.device).clone()
        c.features = state[self._FEATURES].to(self.device).clone()
        c.radius = state["radius"].to(self.device).clone()
        for name in c.extras:
            c.extras[name] = state[name].to(self.device).clone()
        c.frame_index = state["frame_index"].to(self.device).clone()
        c.last_seen = state["last_seen"].to(self.device).clone()
        c.clock = int(state["clock"])

    @classmethod
    def _load(cls, path: str | os.PathLike, device):
        """``from_state_dict`` of a file written by ``save``; ValueError names the file."""
        state = load_state(path, cls._FORMAT, "cpu")
        try:
            return cls.from_state_dict(state, device=device)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None
