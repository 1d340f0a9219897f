"""Plots of a camera path: ``draw_path`` (one view onto matplotlib axes, also used by the render
report) and ``plot_trajectory`` (``mirage trajectory --plot``: top-down and side views with frustums).

Views (OpenCV world, docs/CONVENTIONS.md):
- ``above``: world x to the right, world z up the page (seen from above, i.e. from -y; not mirrored).
- ``side``: world z to the right, height (-y, since OpenCV y points down) up the page (seen from +x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_cli.base.atomic import atomic_path
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


VIEWS = {"above": ("x", "z"), "side": ("z", "height (-y)")}
SEGMENT_COLORS = ("#3f6fd8", "#f29d38")
_INK = "#2b2f36"


def view_coords(points: np.ndarray, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Page coordinates (horizontal, vertical) of world points [..., 3] in ``view`` (``above`` | ``side``)."""
    if view == "above":
        return points[..., 0], points[..., 2]
    if view == "side":
        return points[..., 2], -points[..., 1]
    raise ValueError(f"view: expected one of {list(VIEWS)}, got {view!r}")


def draw_path(ax, positions: np.ndarray, *, view: str = "above", forward: np.ndarray | None = None,
              segment_ends: list[int] | None = None, arrows: int = 16) -> None:
    """Draw a camera path onto matplotlib axes ``ax``.

    Args:
        positions: float [N, 3] camera centres (world).
        view: ``above`` or ``side`` (module docstring).
        forward: float [N, 3] viewing directions (world), drawn as up to ``arrows`` arrows; or None.
        segment_ends: frame counts at which segments (chunks) end, drawn in alternating colours with
            their boundaries marked; frames after the last end are dashed ("not rendered"). None: one
            segment.
    """
    x, y = view_coords(np.asarray(positions, dtype=np.float64), view)  # [N], [N]
    n = len(x)
    ends = [min(int(e), n) for e in (segment_ends or [n])] or [n]
    start = 0
    for i, end in enumerate(ends):
        seg = slice(max(0, start - 1), end)
        ax.plot(x[seg], y[seg], color=SEGMENT_COLORS[i % 2], linewidth=2.2, solid_capstyle="round")
        start = end
    if ends[-1] < n:
        ax.plot(x[ends[-1] - 1 :], y[ends[-1] - 1 :], color="#c3c8ce", linewidth=1.6, linestyle="--", label="not rendered")
    if forward is not None and n:
        span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-6)
        picks = np.unique(np.linspace(0, n - 1, min(n, arrows)).round().astype(int))
        dx, dy = view_coords(np.asarray(forward, dtype=np.float64)[picks], view)
        norm = np.maximum(np.hypot(dx, dy), 1e-9)
        ax.quiver(x[picks], y[picks], dx / norm, dy / norm, angles="xy", scale_units="xy", scale=1 / (0.07 * span),
                  color="#5f6b78", width=0.004, headwidth=4, headlength=4, alpha=0.8)
    ax.scatter([x[0]], [y[0]], s=60, color="#2e7d32", zorder=5, label="start")
    ax.scatter([x[-1]], [y[-1]], s=60, marker="s", color="#c62828", zorder=5, label="end")
    inner = [e - 1 for e in ends[:-1] if 0 < e <= n]
    if inner and len(inner) <= 24:
        ax.scatter(x[inner], y[inner], s=28, facecolor="white", edgecolor=_INK, zorder=6, label="chunk boundary")
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.12)
    ax.set_xlabel(VIEWS[view][0])
    ax.set_ylabel(VIEWS[view][1])
    ax.legend(loc="best", frameon=False, fontsize=8)


def _draw_frustums(ax, traj: Trajectory, view: str, frames: list[int], depth: float, cmap) -> None:
    """A small frustum at each of ``frames``, coloured by time; the image's top edge drawn thicker."""
    n = len(traj)
    for i in frames:
        f = frustum_world(traj.world_from_cam[i], traj.K[i], traj.width, traj.height, depth)  # [5, 3]
        fx, fy = view_coords(f, view)
        color = cmap(i / max(1, n - 1))
        for c in range(1, 5):
            ax.plot([fx[0], fx[c]], [fy[0], fy[c]], "-", color=color, lw=0.8, zorder=3)
        ring = [1, 2, 3, 4, 1]
        ax.plot(fx[ring], fy[ring], "-", color=color, lw=0.8, zorder=3)
        ax.plot(fx[[1, 2]], fy[[1, 2]], "-", color=color, lw=2.0, zorder=3)


def plot_trajectory(traj: Trajectory, path: str | Path, title: str = "", frustums: int = 12) -> None:
    """Write a PNG with a top-down and a side view of ``traj``, with frustums (atomic write).

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
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (view, name) in zip(axes, (("above", "top-down (seen from above)"), ("side", "side (seen from +x)"))):
        draw_path(ax, p, view=view)
        _draw_frustums(ax, traj, view, idx, depth, plt.get_cmap("viridis"))
        ax.set_title(name)
        ax.grid(True, lw=0.3)
    fig.suptitle(title or f"{n} frames, frustum colour = time (dark = start)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
