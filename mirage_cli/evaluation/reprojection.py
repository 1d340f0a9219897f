"""3D consistency: does the video move the way its cameras and a depth say it must?

For a frame pair (i, j) the flow the cameras imply is computed from frame i's z-depth: every pixel
is lifted to 3D with camera i and projected with camera j. It is compared with the DIS optical flow
of the frames (where that flow is forward-backward consistent, the implied point lies in front of
camera j and inside frame j): the median end-point error in pixels. Without a depth only the
rotational part can be implied (the flow of a scene at infinity, exact for a camera that only turns);
the document then says so, and translation shows up as error.
"""

from __future__ import annotations

import numpy as np

from mirage_cli.evaluation.camera_following import pairs_at_strides
from mirage_cli.evaluation.flow import flow_pair, forward_backward_error

STRIDES = (1, 4)
MAX_PAIRS_PER_STRIDE = 30


def implied_flow(depth: np.ndarray | None, K_i: np.ndarray, K_j: np.ndarray, world_from_cam_i: np.ndarray,
                 world_from_cam_j: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(flow [H, W, 2], valid [H, W]): where pixels of frame i land in frame j. ``depth``: z-depth
    [H, W] of frame i in the path's units, or None for the rotation-only flow."""
    H, W = size
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K_i).T  # [H, W, 3], z = 1
    j_from_i = np.linalg.inv(world_from_cam_j) @ world_from_cam_i
    if depth is None:
        cam_j = rays @ j_from_i[:3, :3].T
        valid = np.ones((H, W), dtype=bool)
    else:
        cam_j = (rays * depth[..., None]) @ j_from_i[:3, :3].T + j_from_i[:3, 3]
        valid = np.isfinite(depth) & (depth > 0)
    z = cam_j[..., 2]
    valid &= z > 1e-9
    proj = cam_j @ K_j.T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = proj[..., :2] / z[..., None]
    valid &= (uv[..., 0] >= -0.5) & (uv[..., 0] < W - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] < H - 0.5)
    return uv - np.stack([xs, ys], -1), valid


def reprojection(frames: np.ndarray, world_from_cam: np.ndarray, K: np.ndarray, depth: np.ndarray | None = None) -> list[dict]:
    """Per pair (strides 1 and 4, spread evenly): median end-point error (px) between the optical flow
    and the implied flow, and the share of pixels compared."""
    size = frames.shape[1:3]
    out = []
    for i, j in pairs_at_strides(len(frames), STRIDES, MAX_PAIRS_PER_STRIDE):
        forward, backward = flow_pair(frames[i], frames[j])
        error, inside = forward_backward_error(forward, backward)
        implied, valid = implied_flow(None if depth is None else depth[i], K[i], K[j], world_from_cam[i], world_from_cam[j], size)
        both = valid & inside & (error < 1.0)
        if not both.any():
            continue
        epe = np.linalg.norm(forward.astype(np.float64) - implied, axis=-1)[both]
        out.append({"i": int(i), "j": int(j), "epe_median_px": float(np.median(epe)), "compared_share": float(both.mean())})
    return out
