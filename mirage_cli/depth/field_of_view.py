"""``intrinsics: auto``: the start image's focal length estimated by a depth model that predicts its
field of view (DepthPro, whose FoV head estimates the horizontal field of view from the image alone),
so one K serves the depth, the memory and the camera path.

The model runs once per (image, model): the result is kept in ``$XDG_CACHE_HOME/mirage/fov`` (JSON,
written atomically), so ``mirage validate``, the render and a resume read the same number and the run
fingerprint (which holds the cameras) stays the same. The horizontal FoV is about the whole image; the
render centre-crops the image to its aspect and resizes it, so the focal length in render pixels is
``0.5 * W_image / tan(fov / 2)`` times the crop's resize factor, with the principal point at the
centre. An estimate outside ``FOV_RANGE_DEG`` is refused (exit 2): the model does not see a camera.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from mirage_cli.base.atomic import atomic_write_text
from mirage_cli.base.errors import InputError
from mirage_cli.base.files import cache_folder
from mirage_cli.camera.intrinsics import center_crop_box

DEFAULT_FOV_MODEL = "apple/DepthPro-hf"
FOV_RANGE_DEG = (10.0, 150.0)


def _model_key(model: str) -> str:
    """The model's name, and for a local folder the size and time of every file (a replaced model is another key)."""
    local = Path(os.path.expanduser(model))
    if not local.is_dir():
        return model
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in local.iterdir() if p.is_file())
    return json.dumps([str(local.resolve()), stats])


def horizontal_fov(image_path: Path, model: str) -> float:
    """The horizontal field of view (degrees) the model estimates for the image (cached)."""
    import numpy as np

    data = image_path.read_bytes()
    key = hashlib.sha256(data + b"\0" + _model_key(model).encode()).hexdigest()
    cached = cache_folder("fov") / f"{key}.json"
    if cached.is_file():
        try:
            return float(json.loads(cached.read_text())["horizontal_fov_deg"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry: estimate again
    import torch
    from PIL import Image
    from transformers import DepthProForDepthEstimation
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr holds our lines, not a loading bar
    local = Path(os.path.expanduser(model)).is_dir()
    try:
        net = DepthProForDepthEstimation.from_pretrained(model, local_files_only=local, use_fov_model=True).eval()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the field-of-view model {model!r} ({str(exc)[:160]}): download it first "
                         f"(`hf download {model}`), pass a local folder, or give intrinsics ({{fov}} or {{fx, fy, cx, cy}})",
                         field="intrinsics") from None
    with Image.open(image_path) as im:
        rgb = np.asarray(im.convert("RGB"))
    with torch.no_grad():
        fov = float(net(pixel_values=_pixels(rgb, net.config)).field_of_view.flatten()[0])

    atomic_write_text(cached, json.dumps({"horizontal_fov_deg": fov, "model": model, "image": str(image_path)}) + "\n")
    return fov


def _pixels(rgb, config):
    """DepthPro's input, as its image processor makes it (which needs torchvision): the image resized
    to a square of ``patch_size / min(scaled_images_ratios)`` (1536 for the released model), bilinear,
    scaled to [-1, 1] (mean and std 0.5). float32 [1, 3, S, S]."""
    import torch
    import torch.nn.functional as F

    side = round(config.patch_size / min(config.scaled_images_ratios))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return (x - 0.5) / 0.5


def estimated_intrinsics(image_path: Path, model: str, width: int, height: int) -> tuple[dict, dict]:
    """(the spec's ``intrinsics`` mapping ``{fx, fy, cx, cy}`` at the render size, a record of the
    estimate for validate and the report); InputError when the estimate is not a camera's."""
    from PIL import Image

    fov = horizontal_fov(image_path, model)
    if not (math.isfinite(fov) and FOV_RANGE_DEG[0] <= fov <= FOV_RANGE_DEG[1]):
        raise InputError(f"{model} estimates a horizontal field of view of {fov:.1f} degrees for {image_path.name}, outside "
                         f"{FOV_RANGE_DEG[0]:g}-{FOV_RANGE_DEG[1]:g}: give the intrinsics ({{fov}} or {{fx, fy, cx, cy}})",
                         field="intrinsics")
    with Image.open(image_path) as im:
        src_w, src_h = im.size
    left, _, right, _ = center_crop_box(src_w, src_h, width, height)
    focal = 0.5 * src_w / math.tan(math.radians(fov) / 2) * width / (right - left)
    vertical = math.degrees(2 * math.atan(0.5 * height / focal))
    mapping = {"fx": focal, "fy": focal, "cx": (width - 1) / 2, "cy": (height - 1) / 2}
    record = {"model": model, "horizontal_fov_deg": fov, "focal_px": focal, "vertical_fov_deg": vertical}
    return mapping, record
