"""Dense optical flow between frames (OpenCV's DIS, medium preset) and its forward-backward check."""

from __future__ import annotations

import numpy as np

FB_THRESHOLD_PX = 1.0
"""A pixel's flow is consistent when following it forward then backward returns within this distance."""


def gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def flow_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(forward a->b, backward b->a) float32 [H, W, 2] DIS flow of two uint8 RGB frames."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    ga, gb = gray(a), gray(b)
    return dis.calc(ga, gb, None), dis.calc(gb, ga, None)


def forward_backward_error(forward: np.ndarray, backward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(error px [H, W], inside bool [H, W]): |f(x) + b(x + f(x))| at every pixel whose forward flow
    lands inside the frame (nearest pixel lookup)."""
    H, W = forward.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W]
    tx, ty = xs + forward[..., 0], ys + forward[..., 1]
    inside = (tx >= -0.5) & (tx < W - 0.5) & (ty >= -0.5) & (ty < H - 0.5)
    bx = np.clip(np.rint(tx).astype(int), 0, W - 1)
    by = np.clip(np.rint(ty).astype(int), 0, H - 1)
    error = np.linalg.norm(forward + backward[by, bx], axis=-1)
    return error, inside


def correspondences(a: np.ndarray, b: np.ndarray, step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(points in a [M, 2], their matches in b [M, 2]) on a grid of ``step`` pixels, kept where the
    flow is forward-backward consistent within half a pixel."""
    forward, backward = flow_pair(a, b)
    error, inside = forward_backward_error(forward, backward)
    H, W = a.shape[:2]
    ys, xs = np.mgrid[step // 2 : H : step, step // 2 : W : step]
    keep = (error[ys, xs] < 0.5) & inside[ys, xs]
    pa = np.stack([xs[keep], ys[keep]], axis=1).astype(np.float64)
    return pa, pa + forward[ys[keep], xs[keep]].astype(np.float64)
