"""A synthetic scene with exact geometry: a procedural room of textured boxes, ray-cast.

Used by the memory tests, the memory benchmark and the example generator (examples/room). Any
OpenCV camera (``K`` in pixels, ``world_from_cam``, ``height`` x ``width``) gets RGB in [0, 1] and
exact z-depth. The default room contains the camera at the world origin looking down +z (y down):
walls 3 m left and right, the back wall 5 m ahead, floor 1.6 m below and ceiling 1.4 m above,
several boxes in view and a panel standing in front of the back wall (the occlusion case).
Textures vary over ~1-2 m, i.e. a few 16-pixel latent cells at 256x448 and 60 degrees, so a
warp that misplaces latents by a cell shows up in the error.

``linear_encoder`` is the stand-in for the VAE: 16x16 average pooling, then a fixed seeded
3 -> 48 matrix. (Relative errors of its latents include the mean colour in the norm, as a VAE's
latents would; measured against a mean-removed encoding they are about 3x larger.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Box",
    "Room",
    "default_room",
    "detailed_room",
    "intrinsics",
    "look_at",
    "rotation_yaw_pitch",
    "world_from_cam",
    "render",
    "render_views",
    "linear_encoder",
    "scenarios",
    "Scenario",
]

HEIGHT, WIDTH, VFOV_DEG = 256, 448, 60.0


@dataclass(frozen=True)
class Box:
    """An axis-aligned box [lo, hi] (metres, world frame) with a procedural texture.

    The texture blends ``colour_a`` and ``colour_b`` by a sum of sinusoids over world space with
    wavelengths ``wavelength`` (metres) and a phase offset ``phase``.
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    wavelength: tuple[float, float] = (0.9, 0.7)
    phase: float = 0.0
    detail: float = 0.0
    """Amplitude of a fine, non-repeating value noise over the blend (``detailed_room``: features a
    structure-from-motion tool can match; 0: the smooth texture alone)."""


@dataclass(frozen=True)
class Room:
    """The inside of ``walls`` (seen from within) plus solid ``boxes`` (seen from outside)."""

    walls: Box
    boxes: tuple[Box, ...] = field(default_factory=tuple)


def default_room() -> Room:
    """The standard test room (see the module docstring)."""
    walls = Box((-3.0, -1.4, -2.5), (3.0, 1.6, 5.0), (0.85, 0.80, 0.70), (0.30, 0.42, 0.62), (2.2, 1.7), 0.3)
    boxes = (
        Box((-2.2, 0.6, 2.5), (-1.0, 1.6, 3.5), (0.85, 0.20, 0.15), (0.95, 0.80, 0.30), (1.3, 1.1), 1.0),
        Box((0.8, 0.2, 3.0), (2.0, 1.6, 4.2), (0.15, 0.30, 0.85), (0.35, 0.85, 0.90), (1.4, 1.2), 2.0),
        Box((-0.45, -0.6, 3.6), (0.45, 1.6, 3.9), (0.95, 0.95, 0.90), (0.20, 0.20, 0.25), (1.0, 1.2), 0.5),
        Box((-1.9, -1.1, 3.6), (-1.1, -0.5, 4.3), (0.15, 0.75, 0.25), (0.90, 0.90, 0.30), (0.9, 0.8), 1.5),
        Box((1.5, 0.9, 1.6), (2.3, 1.6, 2.3), (0.70, 0.25, 0.75), (0.30, 0.15, 0.35), (1.0, 0.9), 2.5),
    )
    return Room(walls, boxes)


DETAIL_CELL = 0.04
"""Metres between the lattice points of the detail noise."""


def detailed_room(detail: float = 0.35) -> Room:
    """``default_room`` with the fine noise of ``Box.detail`` on every surface: the same geometry and
    colours, with texture that matches unambiguously between views (the clips camera paths are
    estimated from)."""
    base = default_room()
    return Room(replace(base.walls, detail=detail), tuple(replace(b, detail=detail) for b in base.boxes))


def _value_noise(points: Tensor) -> Tensor:
    """[P] in [-0.5, 0.5]: trilinear value noise over a ``DETAIL_CELL`` lattice, each lattice point's
    value a hash of its integer coordinates (no period within the room), in two octaves."""
    out = torch.zeros(points.shape[0], dtype=points.dtype)
    for octave, weight in ((1.0, 0.65), (2.3, 0.35)):
        q = points / (DETAIL_CELL / octave)
        base = torch.floor(q)
        frac = q - base
        smooth = frac * frac * (3 - 2 * frac)  # [P, 3]
        value = torch.zeros_like(out)
        for corner in range(8):
            offset = torch.tensor([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1], dtype=points.dtype)
            lattice = base + offset  # [P, 3]
            h = torch.sin(lattice @ torch.tensor([127.1, 311.7, 74.7], dtype=points.dtype)) * 43758.5453
            noise = h - torch.floor(h) - 0.5  # [P]
            w = torch.where(offset.bool(), smooth, 1 - smooth).prod(dim=1)  # [P]
            value = value + w * noise
        out = out + weight * value
    return out


# --- cameras ---------------------------------------------------------------------------------------


def intrinsics(height: int = HEIGHT, width: int = WIDTH, vfov_deg: float = VFOV_DEG) -> np.ndarray:
    """float64 [3, 3] pinhole K with square pixels, given vertical field of view, centred principal point.

    Pixel centres sit at integer coordinates, so the image spans [-0.5, W-0.5] and cx = (W-1)/2.
    """
    f = (height / 2.0) / math.tan(math.radians(vfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def rotation_yaw_pitch(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """float64 [3, 3] camera-to-world rotation: yaw about world y (positive turns right), then pitch (positive looks up)."""
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    yaw = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    pitch = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return yaw @ pitch


def world_from_cam(position=(0.0, 0.0, 0.0), yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """float64 [4, 4] OpenCV world_from_cam at ``position`` with the given yaw and pitch."""
    m = np.eye(4)
    m[:3, :3] = rotation_yaw_pitch(yaw_deg, pitch_deg)
    m[:3, 3] = position
    return m


def look_at(position, target) -> np.ndarray:
    """float64 [4, 4] OpenCV world_from_cam at ``position`` looking at ``target`` (world y is down)."""
    p, t = np.asarray(position, float), np.asarray(target, float)
    z = t - p
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)  # right = down x forward
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, p
    return m


# --- ray casting -----------------------------------------------------------------------------------


def _slabs(origin: Tensor, dirs: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Per-axis entry and exit distances of rays through the slabs of a box: [P, 3] each."""
    t1 = (lo - origin) / dirs  # [P, 3]
    t2 = (hi - origin) / dirs  # [P, 3]
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _texture(box: Box, points: Tensor) -> Tensor:
    """Colour [P, 3] of world ``points`` [P, 3] on ``box``: a solid (3D) texture, so colour is
    continuous across the box's own edges and only jumps where one object meets another."""
    la, lb = box.wavelength
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    pattern = (
        0.5
        + 0.2 * torch.sin(2 * math.pi * (x + 0.5 * z) / la + box.phase)
        + 0.2 * torch.sin(2 * math.pi * (y - 0.3 * x) / lb + 2.0 * box.phase)
        + 0.1 * torch.sin(2 * math.pi * (z + 0.4 * y) / (0.8 * la) + 3.0 * box.phase)
    )  # [P] in [0, 1]
    if box.detail:
        pattern = (pattern + box.detail * 2 * _value_noise(points)).clamp(0, 1)
    a = torch.tensor(box.colour_a, dtype=points.dtype)
    b = torch.tensor(box.colour_b, dtype=points.dtype)
    return (a * (1 - pattern[:, None]) + b * pattern[:, None]).clamp(0, 1)


def _float64(x) -> Tensor:
    """A float64 CPU copy of a tensor or array-like."""
    if isinstance(x, Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).clone()
    return torch.from_numpy(np.array(x, dtype=np.float64))


# Direction towards the light: above (-y), in front of the room (-z), a little left (-x).
_LIGHT = (-0.324, -0.811, -0.487)


def _shade(dirs: Tensor, axis: Tensor) -> Tensor:
    """Lambert factor [P] in [0.55, 1] of the face each ray hit, so creases and box edges read.

    The hit face's normal, facing the camera, is ``-sign(ray[axis]) * e_axis`` for the room's inner
    walls and the boxes' outer faces alike.
    """
    along = dirs.gather(1, axis[:, None])[:, 0]  # [P]
    light = torch.tensor(_LIGHT, dtype=dirs.dtype)[axis]  # [P]
    return 0.55 + 0.45 * (-torch.sign(along) * light).clamp(min=0)


def render(K, world_from_cam, height: int, width: int, room: Room | None = None) -> tuple[Tensor, Tensor]:
    """Ray-cast one view of ``room``.

    Args:
        K: float [3, 3] pixel intrinsics (array-like).
        world_from_cam: float [4, 4] OpenCV camera-to-world (array-like).
        height, width: image size.
        room: the scene (default: ``default_room()``); the camera must be inside its walls.

    Returns:
        rgb: float32 [3, H, W] in [0, 1].
        depth: float32 [H, W] exact z-depth.
    """
    room = room or default_room()
    K = _float64(K)
    wfc = _float64(world_from_cam)
    if K.shape != (3, 3):
        raise ValueError(f"K: expected shape [3, 3], got {list(K.shape)}")
    if wfc.shape != (4, 4):
        raise ValueError(f"world_from_cam: expected shape [4, 4], got {list(wfc.shape)}")
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)  # [P, 3]
    rays_cam = pix @ torch.linalg.inv(K).T  # [P, 3] with z = 1, so ray distance t is z-depth
    dirs = rays_cam @ wfc[:3, :3].T  # [P, 3]
    dirs = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    origin = wfc[:3, 3]  # [3]

    walls = room.walls
    near, far = _slabs(origin, dirs, torch.tensor(walls.lo, dtype=torch.float64), torch.tensor(walls.hi, dtype=torch.float64))
    best_t, best_axis = far.min(dim=1)  # [P], [P] the wall the ray leaves through
    best_id = torch.zeros_like(best_axis)  # 0 = walls, k = box k-1
    for k, box in enumerate(room.boxes, start=1):
        near, far = _slabs(origin, dirs, torch.tensor(box.lo, dtype=torch.float64), torch.tensor(box.hi, dtype=torch.float64))
        t_in, axis = near.max(dim=1)  # [P]
        hit = (t_in <= far.min(dim=1).values) & (t_in > 1e-9) & (t_in < best_t)
        best_t = torch.where(hit, t_in, best_t)
        best_axis = torch.where(hit, axis, best_axis)
        best_id = torch.where(hit, torch.full_like(best_id, k), best_id)

    points = origin + best_t[:, None] * dirs  # [P, 3]
    rgb = torch.zeros(points.shape[0], 3, dtype=torch.float64)
    for k, box in enumerate((walls,) + tuple(room.boxes)):
        sel = best_id == k
        if bool(sel.any()):
            rgb[sel] = _texture(box, points[sel])
    rgb = rgb * _shade(dirs, best_axis)[:, None]
    rgb = rgb.T.reshape(3, height, width).float()
    depth = best_t.reshape(height, width).float()
    return rgb, depth


def render_views(K, world_from_cam, height: int, width: int, room: Room | None = None) -> tuple[Tensor, Tensor]:
    """``render`` for T cameras: K [T, 3, 3] or [3, 3], world_from_cam [T, 4, 4] -> rgb [T, 3, H, W], depth [T, H, W]."""
    wfc = np.asarray(world_from_cam, dtype=np.float64)
    if wfc.ndim != 3 or wfc.shape[1:] != (4, 4):
        raise ValueError(f"world_from_cam: expected shape [T, 4, 4], got {list(wfc.shape)}")
    Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), (wfc.shape[0], 3, 3))
    views = [render(Ks[t], wfc[t], height, width, room) for t in range(wfc.shape[0])]
    return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])


# --- encoder ---------------------------------------------------------------------------------------


def encoder_matrix(channels: int = 48, seed: int = 0) -> Tensor:
    """float32 [channels, 3], fixed by ``seed`` (explicit generator, no global RNG)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(channels, 3, generator=g)


def linear_encoder(rgb: Tensor, channels: int = 48, stride: int = 16) -> Tensor:
    """The VAE stand-in: ``matrix @ avg_pool_16(rgb)`` with ``matrix = encoder_matrix(channels)``.

    Args:
        rgb: float [3, H, W] or [T, 3, H, W] in [0, 1], H and W multiples of ``stride``.

    Returns:
        float32 [channels, h, w] or [T, channels, h, w].
    """
    single = rgb.ndim == 3
    x = rgb[None] if single else rgb
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % stride or x.shape[3] % stride:
        raise ValueError(f"rgb: expected [3, H, W] or [T, 3, H, W] with H, W multiples of {stride}, got {list(rgb.shape)}")
    pooled = torch.nn.functional.avg_pool2d(x.float(), stride)  # [T, 3, h, w]
    out = torch.einsum("ck,tkhw->tchw", encoder_matrix(channels).to(pooled.device), pooled)  # [T, C, h, w]
    return out[0] if single else out


# --- measurement scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A source camera whose view fills the memory and a target camera the memory is queried at."""

    name: str
    source: np.ndarray  # float64 [4, 4] world_from_cam
    target: np.ndarray  # float64 [4, 4] world_from_cam


def scenarios() -> list[Scenario]:
    """The standard source -> target moves of issue 3, all inside ``default_room()``.

    - same view;
    - small move: 0.15 m right, 0.05 m up, 0.2 m forward, 4 deg yaw, 2 deg pitch;
    - rotation: pure 10 deg yaw;
    - dolly-in: 1.2 m forward, 1/3 of the 3.6 m depth at the image centre;
    - orbit: 25 deg around the point 3.6 m ahead, still looking at it.
    """
    origin = world_from_cam()
    pivot = np.array([0.0, 0.0, 3.6])
    a = math.radians(25.0)
    orbit_pos = pivot + np.array([-3.6 * math.sin(a), 0.0, -3.6 * math.cos(a)])
    return [
        Scenario("same view", origin, origin),
        Scenario("small move", origin, world_from_cam((0.15, -0.05, 0.2), 4.0, 2.0)),
        Scenario("rotate 10deg", origin, world_from_cam((0, 0, 0), 10.0)),
        Scenario("dolly-in 1/3", origin, world_from_cam((0, 0, 1.2))),
        Scenario("orbit 25deg", origin, look_at(orbit_pos, pivot)),
    ]
