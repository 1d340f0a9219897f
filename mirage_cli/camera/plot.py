"""Top-down and side-view plots of a camera path, so a user sees the path before rendering.

Top-down: world x to the right, world z up the page (seen from above, i.e. from -y; not mirrored).
Side: world z to the right, height (-y, since OpenCV y points down) up the page (seen from +x).
A small frustum is drawn every few frames, coloured by time; start and end are marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_cli.atomic import atomic_path
from mirage_cli.camera.trajectory import Trajectory


def frustum_world(world_from_cam: np.ndarray, K: np.ndarray, width: int, height: int, depth: float) -> np.ndarray:
    """Camera centre and the 4 image corners at z-depth ``depth``, in world coordinates.

    Args:
        world_from_cam: float [4, 4]; K: float [3, 3] pixels.
    Returns:
        float64 [5, 3]: centre, then corners (top-left, top-right, bottom-right, bottom-left).
    """
    u = np.array([-0.5, width - 0.5, width - 0.5, -0.5])
    v = np.array([-0.5, -0.5, height - 0.5, height - 0.5])
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, np.full(4, depth)], axis=1)  # [4, 3]
    pts = np.concatenate([np.zeros((1, 3)), cam])  # [5, 3]
    return pts @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]


def plot_trajectory(traj: Trajectory, path: str | Path, title: str = "", frustums: int = 12) -> None:
    """Write a PNG with a top-down and a side view of ``traj`` (atomic write).

    Args:
        traj: the path.
        path: output .png.
        title: figure title.
        frustums: about how many frustums to draw along the path.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    p = traj.positions  # [N, 3]
    n = len(traj)
    extent = float(np.max(p.max(axis=0) - p.min(axis=0))) if n > 1 else 0.0
    depth = 0.08 * extent if extent > 1e-9 else 0.2
    step = max(1, n // max(1, frustums))
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    cmap = plt.get_cmap("viridis")
    views = [("top-down (seen from above)", 0, 1, "x", "z"), ("side (seen from +x)", 2, 3, "z", "height (-y)")]

    def coords(pts: np.ndarray, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        cols = np.stack([pts[..., 0], pts[..., 2], pts[..., 2], -pts[..., 1]], axis=-1)  # x, z, z, -y
        return cols[..., a], cols[..., b]

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (name, a, b, xl, yl) in zip(axes, views):
        x, y = coords(p, a, b)
        ax.plot(x, y, "-", color="0.6", lw=1, zorder=1)
        ax.scatter(x, y, c=np.linspace(0, 1, n), cmap=cmap, s=6, zorder=2)
        for i in idx:
            f = frustum_world(traj.world_from_cam[i], traj.K[i], traj.width, traj.height, depth)  # [5, 3]
            fx, fy = coords(f, a, b)
            color = cmap(i / max(1, n - 1))
            for c in range(1, 5):
                ax.plot([fx[0], fx[c]], [fy[0], fy[c]], "-", color=color, lw=0.8, zorder=3)
            ring = [1, 2, 3, 4, 1]
            ax.plot(fx[ring], fy[ring], "-", color=color, lw=0.8, zorder=3)
            # the top edge of the image, thicker, shows which way is up for the camera
            ax.plot(fx[[1, 2]], fy[[1, 2]], "-", color=color, lw=2.0, zorder=3)
        ax.plot(x[0], y[0], "o", color="tab:green", ms=9, label="start", zorder=4)
        ax.plot(x[-1], y[-1], "s", color="tab:red", ms=8, label="end", zorder=4, mfc="none", mew=2)
        ax.set_title(name)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, lw=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title or f"{n} frames, colour = time (dark = start)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
