"""Pinhole intrinsics K in pixels, pixel centres at integer coordinates (docs/CONVENTIONS.md): built
from a field of view or from fx/fy/cx/cy, from the spec's ``intrinsics`` mapping (``intrinsics_override``),
checked, rescaled and cropped with an image. The latent grid's K is ``mirage_cli.geometry.projection.latent_intrinsics``;
``intrinsics: auto`` is estimated by ``mirage_cli.depth.field_of_view``.

Sources that put the origin at the image corner (COLMAP, nerfstudio, RealEstate10K) are converted
with cx = cx_corner - 0.5 (``from_corner_origin``).
"""

from __future__ import annotations

import math

import numpy as np

from mirage_cli.base.errors import ProblemList
from mirage_cli.base.values import as_number, unknown_keys

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


def intrinsics_override(intrinsics: dict | None, width: int, height: int, problems: ProblemList) -> np.ndarray | None:
    """K (float64 [3, 3], pixels at width x height) from the spec's ``intrinsics`` mapping, or None.

    ``{fov: vertical degrees}`` or ``{fx, fy, cx, cy}`` (pixels, integer pixel centres).
    Problems are named ``intrinsics.<key>`` in ``problems`` (whose prefix must be "").
    """
    if intrinsics is None:
        return None
    if not isinstance(intrinsics, dict):
        problems.add("intrinsics", "expected a mapping: {fov: degrees} or {fx, fy, cx, cy} in pixels, or auto")
        return None
    valid = ("fov", "fx", "fy", "cx", "cy")
    start = len(problems.items)
    unknown_keys(intrinsics, valid, problems, "intrinsics")
    pixel_keys = [k for k in ("fx", "fy", "cx", "cy") if k in intrinsics]
    if "fov" in intrinsics and pixel_keys:
        problems.add("intrinsics", "give either fov or fx/fy/cx/cy, not both")
    if "fov" in intrinsics:
        why = fov_problem(intrinsics["fov"])
        if why:
            problems.add("intrinsics.fov", why)
    if pixel_keys and "fov" not in intrinsics:
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in intrinsics]
        if missing:
            problems.add("intrinsics", f"missing {', '.join(missing)} (give all of fx, fy, cx, cy in pixels)")
        for k in pixel_keys:
            _, why = as_number(intrinsics[k])
            if why:
                problems.add(f"intrinsics.{k}", why)
    if not pixel_keys and "fov" not in intrinsics and len(problems.items) == start:
        problems.add("intrinsics", "expected {fov: degrees} or {fx, fy, cx, cy} in pixels")
    if len(problems.items) > start:
        return None
    if "fov" in intrinsics:
        return K_from_vertical_fov(float(intrinsics["fov"]), width, height)
    K = K_from_params(*(float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy")))
    why = K_problem(K)
    if why:
        problems.add("intrinsics", why)
        return None
    return K
