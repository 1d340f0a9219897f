"""Absolute trajectory error (ATE): the path the frames imply, chained, against the requested path.

Keyframes are chosen along the video as a visual odometry chooses them: the next keyframe is the first
frame far enough from the last one for the direction of travel to be measurable (a median parallax of
``MIN_PARALLAX_PX`` pixels once the rotation's flow is removed; at stride 1 most pairs of a slow
camera have ~2 px and the essential matrix fails or points anywhere), at least ``1/KEYFRAMES`` of the
video and at most a quarter of it apart. Between consecutive keyframes the relative
rotation and direction of travel are estimated from the frames (``relative_pose_from_frames``). A
monocular estimate has no scale, so each step's length is the requested path's step length: the
chained path drifts only through the errors of the estimated rotations and directions, as a visual
odometry would. The chained camera centres are aligned to the requested ones by a least-squares
similarity (Umeyama 1991: scale, rotation, translation) and the ATE is the RMSE of the remaining
distances, in the path's units and as a share of the path's length. A step whose pose cannot be
estimated is taken as "no motion" (it counts as error) and listed.
"""

from __future__ import annotations

import math

import numpy as np

from mirage_cli.evaluation.camera_following import relative_pose_from_frames
from mirage_cli.evaluation.flow import FB_THRESHOLD_PX, flow_pair, forward_backward_error
from mirage_cli.evaluation.reprojection import implied_flow

KEYFRAMES = 40
MIN_PARALLAX_PX = 8.0


def parallax(frames: np.ndarray, world_from_cam: np.ndarray, K: np.ndarray, a: int, b: int) -> float:
    """Median optical flow from frame a to b, less the flow the path's rotation alone implies (px),
    over forward-backward-consistent pixels; 0 when none is."""
    forward, backward = flow_pair(frames[a], frames[b])
    error, inside = forward_backward_error(forward, backward)
    turned, valid = implied_flow(None, K[a], K[b], world_from_cam[a], world_from_cam[b], frames.shape[1:3])
    keep = inside & valid & (error < FB_THRESHOLD_PX)
    return float(np.median(np.linalg.norm(forward - turned, axis=-1)[keep])) if keep.any() else 0.0


def keyframes(frames: np.ndarray, world_from_cam: np.ndarray, K: np.ndarray, most: int = KEYFRAMES) -> list[int]:
    """Keyframe indices (first and last frame included), chosen as the module docstring says."""
    n = len(frames)
    shortest, longest = max(1, math.ceil((n - 1) / most)), max(1, (n - 1) // 4)
    keys = [0]
    while keys[-1] < n - 1:
        a = keys[-1]
        b = min(a + shortest, n - 1)
        while b < min(a + longest, n - 1) and parallax(frames, world_from_cam, K, a, b) < MIN_PARALLAX_PX:
            b += 1
        keys.append(b)
    return keys


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising sum |s R source_k + t - target_k|^2 (Umeyama). ``source``, ``target``: [N, 3]."""
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
        raise ValueError(f"similarity_fit: expected two [N, 3] arrays, got {source.shape} and {target.shape}")
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    U, D, Vt = np.linalg.svd(b.T @ a / len(source))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    variance = float((a**2).sum() / len(source))
    s = float(np.trace(np.diag(D) @ S) / variance) if variance > 0 else 1.0
    return s, R, mu_t - s * R @ mu_s


def chained_path(frames: np.ndarray, world_from_cam: np.ndarray, K: np.ndarray, keys: list[int]) -> tuple[np.ndarray, list[list[int]]]:
    """(world_from_cam [len(keys), 4, 4] chained from the frames' estimates, steps that failed)."""
    chained, failed = [world_from_cam[keys[0]].copy()], []
    for a, b in zip(keys[:-1], keys[1:], strict=True):
        length = float(np.linalg.norm((np.linalg.inv(world_from_cam[b]) @ world_from_cam[a])[:3, 3]))
        step = np.eye(4)
        estimate = relative_pose_from_frames(frames[a], frames[b], K[a])
        if estimate is None:
            failed.append([a, b])
        else:
            step[:3, :3], step[:3, 3] = estimate[0], estimate[1] * length
        chained.append(chained[-1] @ np.linalg.inv(step))  # world_from_b = world_from_a @ a_from_b
    return np.stack(chained), failed


def absolute_trajectory_error(frames: np.ndarray, world_from_cam: np.ndarray, K: np.ndarray) -> dict:
    """ATE of the frames' chained path (see the module docstring).

    Args:
        frames: uint8 [N, H, W, 3]; world_from_cam: float64 [N, 4, 4] (OpenCV); K: float64 [N, 3, 3].

    Returns:
        ``{"rmse", "travel", "relative" (rmse / travel, None for a path that does not travel),
        "keyframes": [...], "errors": [per keyframe distance after the fit], "fitted": [[x, y, z] per keyframe:
        the chained centres after the fit], "failed": [[a, b], ...]}``.
    """
    keys = keyframes(frames, world_from_cam, K)
    chained, failed = chained_path(frames, world_from_cam, K, keys)
    target = world_from_cam[keys, :3, 3]
    travel = float(np.linalg.norm(np.diff(target, axis=0), axis=1).sum())
    source = chained[:, :3, 3]
    if travel > 0 and np.ptp(source, axis=0).max() > 0:
        s, R, t = similarity_fit(source, target)
        source = source @ (s * R).T + t
    errors = np.linalg.norm(source - target, axis=1)
    rmse = float(np.sqrt((errors**2).mean()))
    return {"rmse": rmse, "travel": travel, "relative": rmse / travel if travel > 0 else None,
            "keyframes": keys, "errors": [float(e) for e in errors], "fitted": source.tolist(), "failed": failed}
