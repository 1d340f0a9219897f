"""Resampling a keyframed camera path to the render's frames.

Rotations: spherical linear interpolation (slerp) between consecutive keyframes on the shortest arc.
q and -q are the same rotation, so when two consecutive quaternions have a negative dot product the
second is negated first; otherwise a sign flip in the input (common in COLMAP / ARKit exports)
would make the camera spin the long way round.

Positions: ``interpolation="spline"`` is a Catmull-Rom spline with knots at the keyframe times,
written as a cubic Hermite spline with tangents
    m_i = (p[i+1] - p[i-1]) / (t[i+1] - t[i-1])    (interior keyframes)
    m_0 = ((2 h_0 + h_1) d_0 - h_0 d_1) / (h_0 + h_1)  (ends: the slope of the parabola through the
                                                     first three keyframes; m_last likewise)
with h_i = t[i+1] - t[i], d_i = (p[i+1] - p[i]) / h_i (two keyframes: a straight line),
so it passes through every keyframe, is C1, and a camera that stands still between keyframes
(p[i-1] = p[i+1]) does not drift. ``interpolation="linear"`` joins keyframes with straight segments.
Intrinsics K are interpolated linearly, entry by entry.

Timing: ``timing="even"`` samples the path at the given times against the keyframe times;
``timing="constant_speed"`` re-times the same curve so the camera centre moves equal distances per
frame (arc length measured on a dense sampling of the curve); a path that does not move (pure
rotation) keeps even timing.
"""

from __future__ import annotations

import numpy as np

from mirage_cli.camera.rotations import matrix_to_quat, quat_to_matrix

TIMINGS = ("even", "constant_speed")
INTERPOLATIONS = ("spline", "linear")


def slerp(q0: np.ndarray, q1: np.ndarray, u) -> np.ndarray:
    """Shortest-arc spherical linear interpolation of unit quaternions (w, x, y, z).

    If dot(q0, q1) < 0, q1 is replaced by -q1 (same rotation, the near side of the sphere). Then
        slerp = (sin((1-u) a) q0 + sin(u a) q1) / sin a,  a = acos(dot(q0, q1)),
    with normalized linear interpolation when a is tiny.

    Args:
        q0, q1: float [..., 4] unit quaternions (broadcastable).
        u: float [...] fractions in [0, 1] (0 gives q0, 1 gives q1 up to sign).
    Returns:
        float64 [..., 4] unit quaternions.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)[..., None]  # [..., 1]
    d = np.sum(q0 * q1, axis=-1, keepdims=True)  # [..., 1]
    q1 = np.where(d < 0, -q1, q1)
    d = np.abs(d)
    a = np.arccos(np.clip(d, -1.0, 1.0))  # [..., 1]
    sin_a = np.sin(a)
    small = sin_a < 1e-9
    safe = np.where(small, 1.0, sin_a)
    w0 = np.where(small, 1.0 - u, np.sin((1.0 - u) * a) / safe)
    w1 = np.where(small, u, np.sin(u * a) / safe)
    q = w0 * q0 + w1 * q1  # [..., 4]
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _segments(key_times: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment index j (key_times[j] <= t <= key_times[j+1]) and fraction u in [0, 1] per time.

    Times outside the keyframe range are clamped (the path holds its first / last keyframe).
    """
    n = len(key_times)
    j = np.clip(np.searchsorted(key_times, t, side="right") - 1, 0, n - 2)  # [N]
    h = key_times[j + 1] - key_times[j]
    u = np.clip((t - key_times[j]) / h, 0.0, 1.0)  # [N]
    return j, u


def hermite_tangents(key_times: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Catmull-Rom tangents with knots at ``key_times`` (see module docstring).

    Args:
        key_times: float [K] strictly increasing, K >= 2.
        points: float [K, D].
    Returns:
        float64 [K, D].
    """
    h = np.diff(key_times)[:, None]  # [K-1, 1]
    delta = np.diff(points, axis=0) / h  # [K-1, D] chord slopes
    m = np.empty_like(points, dtype=np.float64)
    if len(key_times) == 2:
        m[0] = m[1] = delta[0]
        return m
    m[1:-1] = (points[2:] - points[:-2]) / (key_times[2:] - key_times[:-2])[:, None]
    m[0] = ((2 * h[0] + h[1]) * delta[0] - h[0] * delta[1]) / (h[0] + h[1])
    m[-1] = ((2 * h[-1] + h[-2]) * delta[-1] - h[-1] * delta[-2]) / (h[-1] + h[-2])
    return m


def interpolate_points(key_times: np.ndarray, points: np.ndarray, t: np.ndarray, interpolation: str) -> np.ndarray:
    """Positions (or any vectors) at times ``t``.

    Args:
        key_times: float [K] strictly increasing.
        points: float [K, D] values at the keyframes.
        t: float [N] query times.
        interpolation: "spline" (Catmull-Rom / cubic Hermite) or "linear".
    Returns:
        float64 [N, D].
    """
    key_times = np.asarray(key_times, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if len(key_times) == 1:
        return np.repeat(points, len(t), axis=0)
    j, u = _segments(key_times, t)
    p0, p1 = points[j], points[j + 1]  # [N, D]
    uu = u[:, None]  # [N, 1]
    if interpolation == "linear":
        return (1.0 - uu) * p0 + uu * p1
    if interpolation != "spline":
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")
    m = hermite_tangents(key_times, points)
    h = (key_times[j + 1] - key_times[j])[:, None]  # [N, 1]
    h00 = 2 * uu**3 - 3 * uu**2 + 1
    h10 = uu**3 - 2 * uu**2 + uu
    h01 = -2 * uu**3 + 3 * uu**2
    h11 = uu**3 - uu**2
    return h00 * p0 + h10 * h * m[j] + h01 * p1 + h11 * h * m[j + 1]


def interpolate_rotations(key_times: np.ndarray, rotations: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rotations at times ``t`` by shortest-arc slerp between consecutive keyframes.

    Args:
        key_times: float [K] strictly increasing.
        rotations: float [K, 3, 3].
        t: float [N].
    Returns:
        float64 [N, 3, 3] exact rotations.
    """
    q = matrix_to_quat(rotations)  # [K, 4]
    if len(key_times) == 1:
        return np.repeat(quat_to_matrix(q), len(t), axis=0)
    j, u = _segments(np.asarray(key_times, dtype=np.float64), np.asarray(t, dtype=np.float64))
    return quat_to_matrix(slerp(q[j], q[j + 1], u))  # [N, 3, 3]


def constant_speed_times(key_times: np.ndarray, points: np.ndarray, t: np.ndarray, interpolation: str) -> np.ndarray:
    """Re-time ``t`` so that the curve through ``points`` is traversed at constant speed.

    A time t in [t_0, t_last] maps to the curve time where the arc length equals
    (t - t_0) / (t_last - t_0) * total length. Arc length is measured on 64 samples per segment.

    Args:
        key_times: float [K]; points: float [K, 3]; t: float [N].
    Returns:
        float64 [N] times to evaluate the curve at (``t`` unchanged when the path does not move).
    """
    key_times = np.asarray(key_times, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if len(key_times) < 2:
        return t
    dense_t = np.linspace(key_times[0], key_times[-1], 64 * (len(key_times) - 1) + 1)  # [M]
    dense_p = interpolate_points(key_times, points, dense_t, interpolation)  # [M, 3]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense_p, axis=0), axis=1))])  # [M]
    if arc[-1] < 1e-12:
        return t
    frac = np.clip((t - key_times[0]) / (key_times[-1] - key_times[0]), 0.0, 1.0)
    return np.interp(frac * arc[-1], arc, dense_t)


def resample(key_times, world_from_cam, sample_times, *, timing: str = "even", interpolation: str = "spline",
             K=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Cameras at ``sample_times`` from keyframes at ``key_times``.

    Args:
        key_times: float [K] strictly increasing keyframe times (any unit: frames or seconds).
        world_from_cam: float [K, 4, 4] keyframe poses (rotations must be orthonormal).
        sample_times: float [N] times (same unit) to produce cameras at; outside the keyframe range
            the path holds its first / last pose.
        timing: "even" or "constant_speed" (see module docstring).
        interpolation: "spline" or "linear" (positions).
        K: optional float [K, 3, 3] keyframe intrinsics, interpolated linearly.
    Returns:
        (world_from_cam float64 [N, 4, 4], K float64 [N, 3, 3] or None).
    """
    key_times = np.asarray(key_times, dtype=np.float64)
    world_from_cam = np.asarray(world_from_cam, dtype=np.float64)
    t = np.asarray(sample_times, dtype=np.float64)
    n = len(key_times)
    if world_from_cam.shape != (n, 4, 4):
        raise ValueError(f"world_from_cam: expected shape [{n}, 4, 4], got {list(world_from_cam.shape)}")
    if K is not None and np.shape(K) != (n, 3, 3):
        raise ValueError(f"K: expected shape [{n}, 3, 3], got {list(np.shape(K))}")
    if n == 0:
        raise ValueError("key_times: need at least one keyframe")
    if n > 1 and not np.all(np.diff(key_times) > 0):
        raise ValueError("key_times: must be strictly increasing")
    if timing not in TIMINGS:
        raise ValueError(f"timing: expected one of {TIMINGS}, got {timing!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")

    positions = world_from_cam[:, :3, 3]  # [K, 3]
    if timing == "constant_speed":
        t = constant_speed_times(key_times, positions, t, interpolation)
    out = np.zeros((len(t), 4, 4))
    out[:, :3, :3] = interpolate_rotations(key_times, world_from_cam[:, :3, :3], t)
    out[:, :3, 3] = interpolate_points(key_times, positions, t, interpolation)
    out[:, 3, 3] = 1.0
    K_out = None
    if K is not None:
        K_flat = np.asarray(K, dtype=np.float64).reshape(n, 9)
        K_out = interpolate_points(key_times, K_flat, t, "linear").reshape(len(t), 3, 3)
    return out, K_out
