"""The start frame: the image, its depth and its mask, read in full and checked (the pre-flight).

``preflight(plan)`` is what ``mirage validate`` and the render (before any weights load) both run,
so that validate refuses everything the render would refuse about its inputs, with the same
message. It decodes the image completely (a truncated file fails here, not mid-render), checks that
the depth map and the mask have the image's size, that the depth holds usable values, that a depth
is available when the memory needs one, and that the depth model can be found.

A start image whose aspect ratio differs from the render's is centre-cropped to the render's
aspect, then resized (the usual way to feed a 16:9 photo to Wan2.2's 1280x704; documented, and
``mirage validate`` prints the render size). Depth and mask go through the same crop with
nearest-neighbour resizing, so no depth value is ever invented at an edge. The spec's intrinsics
are in pixels of the render size, i.e. of the cropped, resized image.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mirage_cli.base.errors import InputError, ProblemList
from mirage_cli.base.files import read_bytes
from mirage_cli.base.limits import MAX_DEPTH, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MIN_DEPTH, MIN_VALID_DEPTH_SHARE
from mirage_cli.base.npy import read_npy_data, read_npy_header
from mirage_cli.camera.intrinsics import center_crop_box
from mirage_cli.conditioning.conditioners import CONDITIONERS
from mirage_cli.depth.providers import depth_model_problem, is_no_model

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's own decompression-bomb guard, at our limit
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
"""The image formats read (by content, whatever the suffix): Pillow's other decoders are never reached."""


@dataclass
class StartInputs:
    """The start frame at the render size: image float32 [3, H, W] in [0, 1], depth float32 [H, W]
    (0 where invalid) or None, keep_out bool [H, W] (the spec's ``mask``) or None."""

    image: torch.Tensor
    depth: torch.Tensor | None
    keep_out: torch.Tensor | None


def _fit(image: Image.Image, width: int, height: int, resample) -> Image.Image:
    box = center_crop_box(image.width, image.height, width, height)
    if box != (0, 0, image.width, image.height):
        image = image.crop(box)
    if image.size != (width, height):
        image = image.resize((width, height), resample=resample)
    return image


def _open_image(path: Path, field: str) -> Image.Image:
    """The image at ``path`` decoded completely (size checked before decoding)."""
    import io

    data = read_bytes(path, MAX_IMAGE_BYTES, field=field)
    if not data:
        raise InputError("is an empty file (0 bytes)", file=str(path), field=field)
    try:
        with warnings.catch_warnings():  # Pillow warns between 1x and 2x its limit; the size check below says it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        w, h = im.size
        if w < 1 or h < 1:
            raise InputError(f"is {w}x{h} pixels: empty", file=str(path), field=field)
        if w * h > MAX_IMAGE_PIXELS:
            raise InputError(f"{w}x{h} pixels: beyond the limit of {MAX_IMAGE_PIXELS:,} pixels", file=str(path), field=field)
        im.load()  # decode every pixel now: a truncated or corrupt file fails here
        return im
    except InputError:
        raise
    except Image.DecompressionBombError as e:  # Pillow refuses twice its MAX_IMAGE_PIXELS before reading the size out
        stated = re.search(r"\((\d+) pixels\)", str(e))
        count = f"{int(stated.group(1)):,} pixels" if stated else "its size"
        raise InputError(f"{count}: beyond the limit of {MAX_IMAGE_PIXELS:,} pixels", file=str(path), field=field) from None
    except Image.UnidentifiedImageError:
        raise InputError("not an image this tool reads (PNG, JPEG, WebP, BMP), or its header is damaged",
                         file=str(path), field=field) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # Pillow's ways of saying "broken"
        raise InputError(f"cannot read image: {' '.join(str(e).split())[:200]}", file=str(path), field=field) from None


def image_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """A decoded image as RGB float32 [3, H, W] in [0, 1] at ``width`` x ``height`` (centre crop, Lanczos)."""
    rgb = _fit(image.convert("RGB"), width, height, Image.Resampling.LANCZOS)
    arr = np.asarray(rgb, dtype=np.float32) / 255.0  # [H, W, 3]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def load_image(path: Path, width: int, height: int) -> torch.Tensor:
    """The RGB image at ``path`` as float32 [3, H, W] in [0, 1] at ``width`` x ``height``."""
    with _open_image(path, "image") as im:
        return image_tensor(im, width, height)


def _read_depth_array(path: Path, depth_scale: float) -> np.ndarray:
    """The raw z-depth map, float32 [H, W] as stored (times ``depth_scale`` for a 16-bit PNG)."""
    if path.suffix.lower() != ".npy":
        im = _open_image(path, "depth")
        if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise InputError(f"expected a 16-bit single-channel PNG (value * depth_scale = scene units), got mode {im.mode}",
                             file=str(path), field="depth")
        return np.asarray(im, dtype=np.float32) * float(depth_scale)
    return read_npy_depth(path)


def read_npy_depth(path: Path) -> np.ndarray:
    """A ``.npy`` z-depth map as float32 [H, W]: the header (shape, dtype, byte count) is checked
    before any array memory is allocated, and nothing is unpickled (``mirage_cli.base.npy``)."""

    def refuse(message: str) -> InputError:
        return InputError(message, file=str(path), field="depth")

    header = read_npy_header(path, field="depth", max_bytes=MAX_IMAGE_BYTES)
    shape = header.shape
    if len(shape) != 2 or 0 in shape:
        raise refuse(f"expected a non-empty 2-D z-depth array [H, W], got shape {list(shape)}")
    if header.count > MAX_IMAGE_PIXELS:
        raise refuse(f"shape {list(shape)} is beyond the limit of {MAX_IMAGE_PIXELS:,} pixels")
    if not np.issubdtype(header.dtype, np.floating):
        raise refuse(f"expected float z-depth (float16/32/64), got dtype {header.dtype}")
    return read_npy_data(path, header, field="depth").astype(np.float32)


def load_depth(path: Path, width: int, height: int, depth_scale: float = 0.001, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """A z-depth map as float32 [H, W] at the render size; invalid values (outside
    [MIN_DEPTH, MAX_DEPTH], NaN, inf) become 0.

    ``.npy``: float z-depth in the camera path's units. ``.png``: 16-bit values times ``depth_scale``.
    ``image_size`` (W, H): the start image's stored size, which the map must have.

    Raises:
        InputError: unreadable, wrong shape, or too few usable values (``MIN_VALID_DEPTH_SHARE``).
    """
    arr = _read_depth_array(path, depth_scale)
    if image_size is not None and (arr.shape[1], arr.shape[0]) != tuple(image_size):
        raise InputError(f"is {arr.shape[1]}x{arr.shape[0]} but the start image is {image_size[0]}x{image_size[1]}; "
                         "a depth map must have the image's size", file=str(path), field="depth")
    usable = np.isfinite(arr) & (arr >= MIN_DEPTH) & (arr <= MAX_DEPTH)
    share = float(usable.mean())
    if share < MIN_VALID_DEPTH_SHARE:
        raise InputError(f"has usable depth (finite, between {MIN_DEPTH:g} and {MAX_DEPTH:g} scene units) at {100 * share:.1f}% "
                         f"of its pixels; at least {100 * MIN_VALID_DEPTH_SHARE:g}% is needed", file=str(path), field="depth")
    arr = np.where(usable, arr, 0.0).astype(np.float32)
    img = _fit(Image.fromarray(arr, mode="F"), width, height, Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy())


def load_mask(path: Path, width: int, height: int, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """A mask as bool [H, W] at the render size: True where the image is to be kept out of memory.

    ``image_size`` (W, H): the start image's stored size, which the mask must have.
    """
    im = _open_image(path, "mask")
    if image_size is not None and im.size != tuple(image_size):
        raise InputError(f"is {im.size[0]}x{im.size[1]} but the start image is {image_size[0]}x{image_size[1]}; "
                         "a mask must have the image's size", file=str(path), field="mask")
    m = _fit(im.convert("L"), width, height, Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(m) > 0)


def preflight(plan, render: bool = True, models: bool = True) -> StartInputs:
    """Read and check the start frame of ``plan`` (module docstring); every problem at once.

    ``render=False`` (``mirage preview``) checks the files only, not what a render needs besides
    (a start depth or a depth model, and that model). ``models=False`` (``mirage validate``) checks
    the depth model's name but not whether it is on this machine (validate warns about that).

    Raises:
        InputError: naming the file (the spec, or the image/depth/mask file) and the field.
    """
    problems = ProblemList(str(plan.spec_path), "", plan.line_of)
    image = depth = keep_out = None
    image_size = None
    try:
        with _open_image(plan.image_path, "image") as im:
            image_size = im.size
            image = image_tensor(im, plan.width, plan.height)
    except InputError as e:
        problems.extend(e.problems)
    for name, path, load in (
        ("depth", plan.depth_path, lambda p: load_depth(p, plan.width, plan.height, plan.depth_scale, image_size)),
        ("mask", plan.mask_path, lambda p: load_mask(p, plan.width, plan.height, image_size)),
    ):
        if path is None:
            continue
        try:
            loaded = load(path)
        except InputError as e:
            problems.extend(e.problems)
            continue
        if name == "depth":
            depth = loaded
        else:
            keep_out = loaded
    remembers = render and CONDITIONERS[plan.memory.mode].stores_frames
    if remembers and plan.depth_path is None and is_no_model(plan.depth_model):
        problems.add("depth", "no depth for the start image: give `depth:` in the spec or use a depth model (depth_model / --depth-model)")
    why = depth_model_problem(plan.depth_model, on_machine=models) if remembers else None
    if why is not None:
        problems.add("depth_model", why)
    problems.raise_if_any()
    return StartInputs(image, depth, keep_out)


def load_start_image(plan) -> torch.Tensor:
    """The plan's start image, float32 [3, H, W] in [0, 1]."""
    return load_image(plan.image_path, plan.width, plan.height)


def load_start_depth(plan) -> torch.Tensor | None:
    """The plan's start-image z-depth, float32 [H, W], or None when the spec gives none."""
    if plan.depth_path is None:
        return None
    with _open_image(plan.image_path, "image") as im:
        size = im.size
    return load_depth(plan.depth_path, plan.width, plan.height, plan.depth_scale, size)
