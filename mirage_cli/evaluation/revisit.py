"""Revisits: frames whose camera comes back to where an earlier frame's camera was (closed loops,
return paths), compared by PSNR and SSIM: the closed-loop measure of the Mirage paper (RealEstate10K
PSNR_C / SSIM_C), here for any path.

A later frame j revisits frame i when j - i >= ``MIN_GAP`` frames, their camera centres are within
``POSITION_SHARE`` of the path's extent (bounding-box diagonal) and their viewing directions within
``ANGLE_DEG``; each revisiting frame is paired with its closest earlier pose (position distance
over the extent plus angle over ``ANGLE_DEG``).
"""

from __future__ import annotations

import math

import numpy as np

from mirage_cli.evaluation.frames import psnr, ssim

MIN_GAP = 8
POSITION_SHARE = 0.05
ANGLE_DEG = 5.0


def revisit_pairs(world_from_cam: np.ndarray) -> list[tuple[int, int, float, float]]:
    """(i, j, position distance, angle in degrees) for every revisiting frame j and its closest i."""
    pos = world_from_cam[:, :3, 3]
    fwd = world_from_cam[:, :3, 2]
    extent = float(np.linalg.norm(np.ptp(pos, axis=0))) or 1.0
    out = []
    for j in range(MIN_GAP, len(pos)):
        earlier = np.arange(0, j - MIN_GAP + 1)
        dist = np.linalg.norm(pos[earlier] - pos[j], axis=1)
        cos = np.clip(fwd[earlier] @ fwd[j] / (np.linalg.norm(fwd[earlier], axis=1) * np.linalg.norm(fwd[j])), -1.0, 1.0)
        angle = np.degrees(np.arccos(cos))
        ok = (dist <= POSITION_SHARE * extent) & (angle <= ANGLE_DEG)
        if ok.any():
            score = dist / extent / POSITION_SHARE + angle / ANGLE_DEG
            k = int(earlier[ok][np.argmin(score[ok])])
            out.append((k, j, float(dist[k]), float(angle[k])))
    return out


def revisits(frames: np.ndarray, world_from_cam: np.ndarray) -> list[dict]:
    """PSNR (dB) and SSIM of every revisit pair."""
    return [{"i": i, "j": j, "distance": d, "angle_deg": a, "psnr_db": psnr(frames[i], frames[j]), "ssim": ssim(frames[i], frames[j])}
            for i, j, d, a in revisit_pairs(world_from_cam)]


def finite_median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else None
