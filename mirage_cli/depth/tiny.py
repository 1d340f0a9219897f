"""The tiny depth model: Depth Anything V2's real architecture (transformers'
``DepthAnythingForDepthEstimation`` on a DINOv2 backbone) at a tiny size with random weights.

It is what ``--preset tiny`` brings for depth (``depth_model: tiny``), so a render or a preview of
one's own image runs offline on a CPU with no depth map made by hand, through the same provider
code as a downloaded model. Like the tiny Wan components, its output means nothing about the
scene: it is a metric head (sigmoid times ``TINY_MAX_DEPTH`` metres), so the depth is positive
and varies over the image (about 1.2 to 3.2 m on the example room), never a constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

TINY_DEPTH_MODEL = "tiny"
"""The ``depth_model`` value (spec field, ``--depth-model``) that names the tiny depth model."""
TINY_MAX_DEPTH = 4
"""Metres the metric head's sigmoid spans (a room's depth)."""
TINY_INPUT_SIDE = 56
"""Short side, in pixels, the frames are resized to before the model (4 patches of 14)."""
TINY_INIT_RANGE = 0.15
"""Standard deviation of the random weights. transformers' own (0.02) makes the head's output a
constant 2.0 m; 0.15 spreads it over most of the sigmoid's range without saturating it."""


def is_tiny_model(name: str) -> bool:
    """Whether a ``depth_model`` value names the tiny depth model (``tiny``, any case)."""
    return name.strip().lower() == TINY_DEPTH_MODEL


def tiny_depth_config():
    """A ``DepthAnythingConfig``: a 2-layer, 16-wide DINOv2 backbone (patch 14) and a metric head."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=TINY_INPUT_SIDE,
        patch_size=14, out_features=["stage1", "stage2"], reshape_hidden_states=False, initializer_range=TINY_INIT_RANGE,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, fusion_hidden_size=16, head_hidden_size=8,
        neck_hidden_sizes=[8, 16], reassemble_factors=[2, 1], depth_estimation_type="metric", max_depth=TINY_MAX_DEPTH,
        initializer_range=TINY_INIT_RANGE,
    )


@dataclass(frozen=True)
class TinyPreprocessing:
    """What ``TransformersDepth`` reads of an image processor, for the tiny model: resize the short
    side to ``TINY_INPUT_SIDE`` pixels, normalise with DPT's mean and std (0.5)."""

    size: dict = field(default_factory=lambda: {"height": TINY_INPUT_SIDE, "width": TINY_INPUT_SIDE})
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def tiny_depth_processor() -> TinyPreprocessing:
    """The preprocessing the tiny model is run with (``TinyPreprocessing``)."""
    return TinyPreprocessing()


def build_tiny_depth_model(seed: int = 0) -> torch.nn.Module:
    """The tiny depth model in eval mode, float32, the same weights for the same ``seed``; the caller's
    global RNG is left as it was (the initializers run inside ``fork_rng``)."""
    from transformers import DepthAnythingForDepthEstimation

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DepthAnythingForDepthEstimation(tiny_depth_config()).eval()
