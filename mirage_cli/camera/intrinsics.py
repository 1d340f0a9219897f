"""Pinhole intrinsics K in pixels, pixel centres at integer coordinates (docs/CONVENTIONS.md).

Sources that put the origin at the image corner (COLMAP, nerfstudio, RealEstate10K) are converted
with cx = cx_corner - 0.5 (``from_corner_origin``).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_VERTICAL_FOV_DEG = 60.0


def K_from_params(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (float64 [3, 3])."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def K_from_vertical_fov(fov_deg: float, width: int, height: int) -> np.ndarray:
    """K of a centred pinhole camera with square pixels and vertical field of view ``fov_deg``.

    fy = (height / 2) / tan(fov / 2), fx = fy, cx = (width - 1) / 2, cy = (height - 1) / 2.

    Returns:
        float64 [3, 3].
    """
    f = (height / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return K_from_params(f, f, (width - 1) / 2.0, (height - 1) / 2.0)


def vertical_fov_deg(K: np.ndarray, height: int) -> float:
    """Vertical field of view in degrees: 2 atan((height / 2) / fy). ``K``: float [3, 3]."""
    return math.degrees(2.0 * math.atan((height / 2.0) / float(np.asarray(K)[1, 1])))


def rescale_K(K: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """K of the same camera when its image is resized from ``src_size`` to ``dst_size`` (W, H).

    sx = W_dst / W_src, sy = H_dst / H_src; fx' = fx sx, fy' = fy sy and, under the
    integer-pixel-centre convention, cx' = (cx + 0.5) sx - 0.5, cy' = (cy + 0.5) sy - 0.5.

    Args:
        K: float [..., 3, 3].
    Returns:
        float64 [..., 3, 3].
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K: expected shape [..., 3, 3], got {list(K.shape)}")
    sx = dst_size[0] / src_size[0]
    sy = dst_size[1] / src_size[1]
    out = K.copy()
    out[..., 0, 0] *= sx
    out[..., 0, 1] *= sx
    out[..., 1, 1] *= sy
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def from_corner_origin(K: np.ndarray) -> np.ndarray:
    """K with the principal point in corner-origin pixels (COLMAP, nerfstudio) -> ours: c - 0.5.

    Args:
        K: float [..., 3, 3].
    Returns:
        float64 [..., 3, 3].
    """
    out = np.array(K, dtype=np.float64)
    out[..., 0, 2] -= 0.5
    out[..., 1, 2] -= 0.5
    return out


def to_corner_origin(K: np.ndarray) -> np.ndarray:
    """Inverse of ``from_corner_origin``: c + 0.5. ``K``: float [..., 3, 3] -> float64 [..., 3, 3]."""
    out = np.array(K, dtype=np.float64)
    out[..., 0, 2] += 0.5
    out[..., 1, 2] += 0.5
    return out


def K_problem(K: np.ndarray) -> str | None:
    """Why ``K`` (float [3, 3]) is not usable pinhole intrinsics, or None when it is."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        return f"K must be 3x3, got shape {list(K.shape)}"
    if not np.all(np.isfinite(K)):
        return "intrinsics contain NaN or inf"
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        return f"focal lengths must be > 0, got fx={K[0, 0]:g}, fy={K[1, 1]:g}"
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        return "K must have the form [[fx, s, cx], [0, fy, cy], [0, 0, 1]]"
    return None


def fov_problem(fov) -> str | None:
    """Why ``fov`` is not a usable vertical field of view in degrees, or None."""
    if isinstance(fov, bool) or not isinstance(fov, (int, float)):
        return f"fov must be a number of degrees, got {type(fov).__name__}"
    if not math.isfinite(fov):
        return "fov is NaN or inf"
    if not 0.0 < fov < 180.0:
        return f"fov must be between 0 and 180 degrees (vertical), got {fov:g}"
    return None


def center_crop_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the largest centred crop of ``src`` with ``dst``'s aspect."""
    src_aspect, dst_aspect = src_w / src_h, dst_w / dst_h
    if abs(src_aspect - dst_aspect) < 1e-6:
        return 0, 0, src_w, src_h
    if src_aspect > dst_aspect:  # too wide: crop the sides
        w = max(1, round(src_h * dst_aspect))
        left = (src_w - w) // 2
        return left, 0, left + w, src_h
    h = max(1, round(src_w / dst_aspect))
    top = (src_h - h) // 2
    return 0, top, src_w, top + h
