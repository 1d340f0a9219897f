"""Load the start image, its depth and its mask at the render size.

A start image whose aspect ratio differs from the render's is centre-cropped to the render's
aspect, then resized (the usual way to feed a 16:9 photo to Wan2.2's 1280x704). Depth and mask
go through the same crop with nearest-neighbour resizing, so no depth value is ever invented at
an edge. The spec's intrinsics are in pixels of the render size, i.e. of the cropped, resized image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mirage_cli.errors import InputError


def center_crop_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the largest centred crop of ``src`` with ``dst``'s aspect."""
    src_aspect, dst_aspect = src_w / src_h, dst_w / dst_h
    if abs(src_aspect - dst_aspect) < 1e-6:
        return 0, 0, src_w, src_h
    if src_aspect > dst_aspect:  # too wide: crop the sides
        w = round(src_h * dst_aspect)
        left = (src_w - w) // 2
        return left, 0, left + w, src_h
    h = round(src_w / dst_aspect)
    top = (src_h - h) // 2
    return 0, top, src_w, top + h


def _fit(image: Image.Image, width: int, height: int, resample) -> Image.Image:
    box = center_crop_box(image.width, image.height, width, height)
    if box != (0, 0, image.width, image.height):
        image = image.crop(box)
    if image.size != (width, height):
        image = image.resize((width, height), resample=resample)
    return image


def load_image(path: Path, width: int, height: int) -> torch.Tensor:
    """An RGB image as float32 [3, H, W] in [0, 1] at ``width`` x ``height``."""
    try:
        with Image.open(path) as im:
            rgb = _fit(im.convert("RGB"), width, height, Image.Resampling.LANCZOS)
    except OSError as e:
        raise InputError(f"cannot read image: {e}", file=str(path), field="image") from None
    arr = np.asarray(rgb, dtype=np.float32) / 255.0  # [H, W, 3]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def load_depth(path: Path, width: int, height: int, depth_scale: float = 0.001) -> torch.Tensor:
    """A z-depth map as float32 [H, W] at the render size; invalid values (<= 0, nan, inf) become 0.

    ``.npy``: float z-depth in the camera path's units. ``.png``: 16-bit values times ``depth_scale``.
    """
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            with Image.open(path) as im:
                arr = np.asarray(im, dtype=np.float32) * float(depth_scale)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read depth: {e}", file=str(path), field="depth") from None
    if arr.ndim != 2:
        raise InputError(f"expected a 2-D depth map [H, W], got shape {list(arr.shape)}", file=str(path), field="depth")
    arr = np.where(np.isfinite(arr) & (arr > 0), arr, 0.0).astype(np.float32)
    img = _fit(Image.fromarray(arr, mode="F"), width, height, Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy())


def load_mask(path: Path, width: int, height: int) -> torch.Tensor:
    """A mask as bool [H, W] at the render size: True where the image is to be kept out of memory."""
    try:
        with Image.open(path) as im:
            m = _fit(im.convert("L"), width, height, Image.Resampling.NEAREST)
    except OSError as e:
        raise InputError(f"cannot read mask: {e}", file=str(path), field="mask") from None
    return torch.from_numpy(np.asarray(m) > 0)


def load_start_image(plan) -> torch.Tensor:
    """The plan's start image, float32 [3, H, W] in [0, 1]."""
    return load_image(plan.image_path, plan.width, plan.height)


def load_start_depth(plan) -> torch.Tensor | None:
    """The plan's start-image z-depth, float32 [H, W], or None when the spec gives none."""
    if plan.depth_path is None:
        return None
    return load_depth(plan.depth_path, plan.width, plan.height, plan.depth_scale)


def load_start_mask(plan) -> torch.Tensor | None:
    """The plan's keep-out mask, bool [H, W], or None."""
    if plan.mask_path is None:
        return None
    return load_mask(plan.mask_path, plan.width, plan.height)
