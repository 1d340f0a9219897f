"""Spatial memories: the latent cache (the method) and the RGB point cloud (the baseline).

- ``LatentSpatialMemory``: latent cells lifted to 3D, voxel-fused, warped into target cameras.
- ``RGBPointMemory``: per-pixel RGB points rendered at pixel level, same API shape.
- ``MemoryView`` / ``RGBView``: what their queries return.
- ``dynamic_region_mask``, ``align_depth``: what the rollout uses to decide what to insert.
"""

from mirage_cli.memory.filters import DepthFit, align_depth, dynamic_region_mask, warp_residual
from mirage_cli.memory.latent import OCCLUSION_THRESHOLD, LatentSpatialMemory
from mirage_cli.memory.rgb import RGBPointMemory
from mirage_cli.memory.view import MemoryView, RGBView

__all__ = [
    "LatentSpatialMemory",
    "RGBPointMemory",
    "OCCLUSION_THRESHOLD",
    "MemoryView",
    "RGBView",
    "dynamic_region_mask",
    "warp_residual",
    "align_depth",
    "DepthFit",
]
