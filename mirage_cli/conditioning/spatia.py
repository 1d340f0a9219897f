"""Spatia's recipe for its VACE weights, piece by piece (facts of Spatia's inference, ZhaoJingjing713/Spatia
5dd3457: ``inference.py``, ``wan/wan_video_new.py``, ``utils/frustum_culling.py``, ``utils/render_point.py``;
the code is ours). ``SpatiaRecipe`` (``mirage_cli.conditioning.recipes``) puts them together.

- Rounds: the first renders 121 frames from the start image (no history, no references, the LoRA off);
  each later one renders 81 frames whose first 9 are the last 9 generated frames (the "history"), so it
  adds 72. Here a later chunk is the 73 frames from the previous chunk's last one, and its *window* is
  the chunk with the 8 frames before it. A window shorter than the round (the video's end) takes the
  last camera for the missing frames and drops what they render, as Spatia pads its cameras.
- Control (``control_videos``): the RGB memory rendered into every window frame on a **black**
  background, quantized to 8 bits, in [-1, 1]; beside it a "score" video: 255 minus the 8-bit coverage
  of the render, in [0, 1] (1 = hole, 0 = covered). Both are VAE-encoded (96 channels with the 48 and 48).
- History (``history_length``): the last 9 generated pixel frames (8-bit), VAE-encoded again into 3
  latent frames at the start of the target sequence, held at timestep 0 and set again after every step.
- References (``frontmost_visible``, ``match_references``): candidates are the generated frames before
  the window, every ``round(fps / 6)``-th from frame 0; the window's cameras every ``round(fps / 2)``-th
  are matched one to one to candidates by the Hungarian method on the count of memory points both see
  as the frontmost point of their pixel (z-buffer; counts rounded to bfloat16, as their matrix product
  is); up to 7, in the order of the window cameras. Each chosen frame (8-bit pixels) is encoded alone
  into one latent frame; they sit before the sequence (timestep 0, rotary as the official DiT's).
- Pixel coordinates: Spatia's intrinsics put the origin at the image corner, so a point's pixel is
  ``floor``-like ``long()`` of ``u_center + 0.5`` (``u_center`` in this project's centre-origin K).
- 8-bit frames (``to_uint8``, ``from_uint8``): Spatia keeps generated frames as images: ``(x + 1) *
  127.5`` clipped to [0, 255] and truncated; read back as ``x * 2 / 255 - 1``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

HISTORY_FRAMES = 9
"""Generated pixel frames a later round starts from (3 latent frames)."""
MAX_REFERENCES = 7
"""Spatia's ``ref_num``."""
REFERENCE_CAMERA_RATE = 2.0
"""Window cameras matched per second of video (``ref_fps``): every ``round(fps / 2)``-th."""
CANDIDATE_RATE = 6.0
"""Candidate frames per second (``ref_hist_fps``): every ``round(fps / 6)``-th generated frame."""
FRONTMOST_TOLERANCE = 1e-6
"""A point is frontmost at its pixel when its depth is within this of the pixel's nearest."""


def frame_stride(fps: float, rate: float) -> int:
    """Every how many frames a ``rate``-per-second sampling of ``fps`` video takes one (at least 1)."""
    return max(1, int(round(fps / rate)))


def to_uint8(pixels: Tensor) -> Tensor:
    """uint8 of ``pixels`` in [-1, 1] (any shape) as Spatia keeps frames: ``(x + 1) * 127.5`` clipped, truncated."""
    return ((pixels.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8)


def from_uint8(frames: Tensor, low: float = -1.0, high: float = 1.0) -> Tensor:
    """float32 of 8-bit ``frames`` scaled to [low, high] (``x * (high - low) / 255 + low``)."""
    return frames.to(torch.float32) * ((high - low) / 255) + low


def control_videos(rgb: Tensor, coverage: Tensor) -> tuple[Tensor, Tensor]:
    """The two videos Spatia's VACE branch reads, from a render of the memory.

    Args:
        rgb: float [F, 3, H, W] in [0, 1], the render (what holes hold does not matter).
        coverage: float or bool [F, H, W] in [0, 1], how much of each pixel the render covers.

    Returns:
        control [1, 3, F, H, W] in [-1, 1]: the render on black, 8-bit; score [1, 3, F, H, W] in [0, 1]:
        ``(255 - 8-bit coverage) / 255``, 1 where nothing was rendered.
    """
    if rgb.ndim != 4 or rgb.shape[1] != 3 or coverage.shape != (rgb.shape[0], *rgb.shape[2:]):
        raise ValueError(f"rgb, coverage: expected [F, 3, H, W] and [F, H, W], got {list(rgb.shape)} and {list(coverage.shape)}")
    cover = coverage.to(torch.float32).clamp(0, 1)
    on_black = rgb.to(torch.float32).clamp(0, 1) * cover.unsqueeze(1)  # [F, 3, H, W]
    render8 = (on_black * 255).to(torch.uint8)  # truncated, as their (x * 255).astype(uint8)
    score8 = 255 - (cover * 255).to(torch.uint8).unsqueeze(1).expand(-1, 3, -1, -1)  # [F, 3, H, W]
    control = from_uint8(render8).permute(1, 0, 2, 3).unsqueeze(0)
    score = from_uint8(score8, 0.0, 1.0).permute(1, 0, 2, 3).unsqueeze(0)
    return control, score


def encode_frames(backbone, frames: Tensor) -> Tensor:
    """float32 [C, T, h, w]: 8-bit ``frames`` uint8 [3, F, H, W] read back to [-1, 1] and encoded as one video."""
    return backbone.encode_video(from_uint8(frames).unsqueeze(0).to(backbone.device))[0]


def reference_latents(backbone, frames: list[Tensor]) -> Tensor:
    """[1, C, R, h, w]: each 8-bit reference frame (uint8 [3, H, W]) encoded alone into one latent frame."""
    return torch.cat([encode_frames(backbone, frame.unsqueeze(1)) for frame in frames], dim=1).unsqueeze(0)


def history_target(history: Tensor, noise: Tensor) -> Tensor:
    """[1, C, n + L - 1, h, w]: a later chunk's target sequence, the history's latent frames ``history``
    [C, n, h, w] then the chunk's new latent frames' noise (``noise`` [1, C, L, h, w] without its frame 0,
    which the history's last frame stands for)."""
    return torch.cat([history.unsqueeze(0).to(noise), noise[:, :, 1:]], dim=2)


def history_length(chunk_start: int) -> int:
    """Generated frames a chunk starting at frame ``chunk_start`` takes as history: the last
    ``HISTORY_FRAMES`` of frames 0..chunk_start (fewer early on; always 4k+1)."""
    return min(HISTORY_FRAMES, chunk_start + 1)


def window_frames(first: int, count: int, last_frame: int) -> list[int]:
    """The video frame of each of ``count`` window frames from ``first``, the last camera repeated past
    ``last_frame`` (Spatia pads a short round with its last camera)."""
    return [min(first + i, last_frame) for i in range(count)]


def reference_candidates(window_start: int, stride: int) -> list[int]:
    """The generated frames before the window that may become references: every ``stride``-th from 0."""
    return list(range(0, window_start, stride))


def frontmost_visible(xyz: Tensor, cam_from_world: Tensor, K: Tensor, size: tuple[int, int]) -> Tensor:
    """bool [T, N]: whether point n of ``xyz`` [N, 3] is the nearest point of its pixel in camera t.

    Cameras: ``cam_from_world`` [T, 4, 4] (OpenCV) and ``K`` [T, 3, 3] pixel intrinsics at ``size``
    (H, W), principal point with the origin at the centre of pixel (0, 0) (docs/CONVENTIONS.md).
    Spatia's rule, in float32: a point in front of the camera (z > 0) falls in pixel
    ``(long(u), long(v))`` with corner-origin ``u = fx x / z + cx + 0.5`` (truncated toward zero, so
    (-1, 0) lands in column 0); it is visible when that pixel is in the image and its depth is within
    ``FRONTMOST_TOLERANCE`` of the smallest depth landing there. No footprints, no occlusion by
    anything but other points.
    """
    if xyz.ndim != 2 or xyz.shape[1] != 3 or cam_from_world.shape[1:] != (4, 4) or K.shape != (cam_from_world.shape[0], 3, 3):
        raise ValueError(f"xyz, cam_from_world, K: expected [N, 3], [T, 4, 4], [T, 3, 3], got {list(xyz.shape)}, "
                         f"{list(cam_from_world.shape)}, {list(K.shape)}")
    H, W = size
    T, N, device = cam_from_world.shape[0], xyz.shape[0], xyz.device
    points = torch.cat([xyz.to(torch.float32), torch.ones(N, 1, device=device)], dim=1)  # [N, 4]
    cam = (cam_from_world.to(device=device, dtype=torch.float32) @ points.T).transpose(1, 2)  # [T, N, 4]
    K = K.to(device)
    X, Y, Z = cam[..., 0], cam[..., 1], cam[..., 2]
    fx, fy = K[:, 0, 0:1].to(torch.float32), K[:, 1, 1:2].to(torch.float32)
    cx, cy = (K[:, 0, 2:3].double() + 0.5).to(torch.float32), (K[:, 1, 2:3].double() + 0.5).to(torch.float32)
    z = Z.clamp(min=torch.finfo(torch.float32).eps)
    u = (fx * (X / z) + cx).long()  # truncation toward zero, as theirs
    v = (fy * (Y / z) + cy).long()
    valid = (Z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    pixel = (v * W + u).clamp(0, H * W - 1)  # [T, N]
    far = torch.full_like(Z, 1e9)
    depth = torch.where(valid, Z, far)
    nearest = torch.full((T, H * W), 1e9, dtype=torch.float32, device=device).scatter_reduce(1, pixel, depth, reduce="amin")
    return valid & (Z <= nearest.gather(1, pixel) + FRONTMOST_TOLERANCE)


def match_references(candidates: Tensor, targets: Tensor, max_refs: int = MAX_REFERENCES) -> list[int]:
    """The candidates chosen for the targets: rows of ``candidates`` bool [M, N] (points each candidate
    frame sees), matched one to one to the rows of ``targets`` bool [K, N] (the window's cameras) by the
    Hungarian method (scipy's ``linear_sum_assignment``) on the shared point counts, which are rounded to
    bfloat16 first as Spatia's bfloat16 matrix product rounds them. In target order, at most
    ``max_refs``; a pair is chosen even when it shares no point (Spatia's rule). With more targets than
    candidates (Spatia refuses that) every candidate is matched to one target."""
    if candidates.ndim != 2 or targets.ndim != 2 or candidates.shape[1] != targets.shape[1]:
        raise ValueError(f"candidates, targets: expected [M, N] and [K, N], got {list(candidates.shape)} and {list(targets.shape)}")
    if candidates.shape[0] == 0 or targets.shape[0] == 0 or max_refs <= 0:
        return []
    shared = targets.to(torch.float64) @ candidates.to(torch.float64).T  # [K, M] exact counts
    shared = shared.to(torch.float32).to(torch.bfloat16).to(torch.float32).cpu()
    rows, cols = linear_sum_assignment(-shared.numpy().astype(np.float32))
    chosen = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    return [chosen[k] for k in range(targets.shape[0]) if k in chosen][:max_refs]
