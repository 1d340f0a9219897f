"""The one camera-path type every module shares.

Conventions (axes, ``world_from_cam``, pixel intrinsics at the render size): docs/CONVENTIONS.md.
Other conventions are converted at the boundary (the readers in ``mirage_cli.camera``), never here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """A sampled camera path.

    Attributes:
        world_from_cam: float64 [N, 4, 4], OpenCV, last row [0, 0, 0, 1].
        K: float64 [N, 3, 3] pixel intrinsics at ``width`` x ``height``.
        width: image width in pixels.
        height: image height in pixels.
        fps: frames per second of the path.
    """

    world_from_cam: np.ndarray
    K: np.ndarray
    width: int
    height: int
    fps: float

    def __post_init__(self) -> None:
        w = np.asarray(self.world_from_cam, dtype=np.float64)
        k = np.asarray(self.K, dtype=np.float64)
        if w.ndim != 3 or w.shape[1:] != (4, 4):
            raise ValueError(f"world_from_cam: expected shape [N, 4, 4], got {list(w.shape)}")
        if k.ndim != 3 or k.shape[1:] != (3, 3) or k.shape[0] != w.shape[0]:
            raise ValueError(f"K: expected shape [{w.shape[0]}, 3, 3], got {list(k.shape)}")
        object.__setattr__(self, "world_from_cam", w)
        object.__setattr__(self, "K", k)

    def __len__(self) -> int:
        return int(self.world_from_cam.shape[0])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def cam_from_world(self) -> np.ndarray:
        """float64 [N, 4, 4], the inverse of ``world_from_cam``."""
        return np.linalg.inv(self.world_from_cam)

    @property
    def positions(self) -> np.ndarray:
        """float64 [N, 3] camera centres in world coordinates."""
        return self.world_from_cam[:, :3, 3].copy()

    def subset(self, indices) -> Trajectory:
        """The frames at ``indices`` (any numpy index) as a new Trajectory."""
        idx = np.atleast_1d(np.asarray(indices))
        return Trajectory(self.world_from_cam[idx], self.K[idx], self.width, self.height, self.fps)
