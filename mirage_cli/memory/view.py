"""What a memory query returns: the memory's picture of T target cameras."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class MemoryView:
    """Warped latents for T target cameras (``LatentSpatialMemory.query``).

    Attributes:
        latents: [T, C, h, w] in the memory's dtype, zeros where empty.
        mask: bool [T, h, w], True where a cached point landed.
        depth: float32 [T, h, w] z-depth of that point in the target camera, 0 where empty.
        confidence: float32 [T, h, w] in [0, 1] (1 = from a planar block, 0 = from a depth edge),
            0 where empty.
    """

    latents: Tensor
    mask: Tensor
    depth: Tensor
    confidence: Tensor

    @property
    def confident(self) -> Tensor:
        """bool [T, h, w]: filled cells whose point is confident (>= 0.5): the only ones to pin."""
        return self.mask & (self.confidence >= 0.5)

    @property
    def coverage(self) -> float:
        """Fraction of cells that are filled."""
        return float(self.mask.float().mean()) if self.mask.numel() else 0.0


@dataclass(frozen=True)
class RGBView:
    """Rendered point-cloud images for T target cameras (``RGBPointMemory.query``).

    Attributes:
        rgb: float32 [T, 3, H, W] in [0, 1], zeros where empty.
        mask: bool [T, H, W].
        depth: float32 [T, H, W] z-depth, 0 where empty.
    """

    rgb: Tensor
    mask: Tensor
    depth: Tensor

    @property
    def coverage(self) -> float:
        """Fraction of pixels that are filled."""
        return float(self.mask.float().mean()) if self.mask.numel() else 0.0
