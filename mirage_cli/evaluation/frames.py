"""Frame-level measures: PSNR and SSIM of two frames, temporal stability and seams of a video.

- PSNR in dB of uint8 RGB frames (peak 255); SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5,
  K1 0.01, K2 0.03) on the luma, mean over the image.
- Temporal stability: for consecutive frames, the share of pixels whose DIS flow is forward-backward
  consistent within ``flow.FB_THRESHOLD_PX`` (WorldScore's photometric consistency is built on the
  same forward-backward flow error, there with SEA-RAFT).
- Seams: at each chunk boundary, the mean absolute change between the boundary frame and the next
  (the first frame the new chunk generated), divided by the median change between consecutive frames
  inside chunks: about 1 when the seam cannot be told from ordinary motion.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mirage_cli.evaluation.camera_following import spread
from mirage_cli.evaluation.flow import FB_THRESHOLD_PX, flow_pair, forward_backward_error

MAX_STABILITY_PAIRS = 60
PSNR_CAP_DB = 100.0
"""PSNR of identical frames (infinite), capped so that summaries and JSON stay finite."""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 frames, at most ``PSNR_CAP_DB``."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def _luma(frame: np.ndarray) -> torch.Tensor:
    rgb = torch.from_numpy(frame.astype(np.float64) / 255.0)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])[None, None]  # [1, 1, H, W]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of the luma of two uint8 RGB frames (see the module docstring)."""
    x, y = _luma(a), _luma(b)
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]

    def blur(t):
        return F.conv2d(t, window)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(value.mean())


def temporal_stability(frames: np.ndarray, max_pairs: int = MAX_STABILITY_PAIRS) -> list[dict]:
    """Per consecutive pair (at most ``max_pairs``, spread evenly): the share of pixels whose flow is
    forward-backward consistent, and the median forward-backward error in pixels."""
    out = []
    for i in spread(list(range(len(frames) - 1)), max_pairs):
        error, inside = forward_backward_error(*flow_pair(frames[i], frames[i + 1]))
        out.append({"i": i, "j": i + 1, "consistent_share": float(np.mean((error < FB_THRESHOLD_PX) & inside)),
                    "median_error_px": float(np.median(error[inside])) if inside.any() else None})
    return out


def seams(frames: np.ndarray, boundaries: list[int]) -> dict:
    """The change at each chunk boundary frame b (between frames b and b + 1) against the median
    change between consecutive frames elsewhere (mean absolute difference in 0..255)."""
    change = [float(np.mean(np.abs(frames[i + 1].astype(np.int16) - frames[i].astype(np.int16)))) for i in range(len(frames) - 1)]
    inside = [c for i, c in enumerate(change) if i not in set(boundaries)]
    typical = float(np.median(inside)) if inside else None
    rows = []
    for b in boundaries:
        if 0 <= b < len(change):
            ratio = None if not typical else change[b] / typical
            rows.append({"i": b, "j": b + 1, "change": change[b], "ratio": ratio})
    return {"typical_change": typical, "boundaries": rows}
