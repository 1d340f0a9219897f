"""Rotation helpers: unit quaternions (w, x, y, z), rotation matrices, angles, camera aiming.

Everything here is about 3x3 rotations of ``world_from_cam`` in the OpenCV camera convention
(camera x right, y down, z forward). Quaternions are scalar-first ``[w, x, y, z]`` and describe the
same rotation as the matrix they convert to (``q`` and ``-q`` are the same rotation).
"""

from __future__ import annotations

import numpy as np

# Hand-typed matrices (4 decimals) are off by ~1e-4; anything above this is a wrong matrix.
ORTHONORMAL_TOLERANCE = 1e-3
# A quaternion whose norm is this far from 1 is rejected rather than silently normalized.
QUATERNION_NORM_TOLERANCE = 1e-3


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices from unit quaternions.

    For q = (w, x, y, z), normalized first:
        R = [[1-2(y^2+z^2), 2(xy-wz),     2(xz+wy)],
             [2(xy+wz),     1-2(x^2+z^2), 2(yz-wx)],
             [2(xz-wy),     2(yz+wx),     1-2(x^2+y^2)]]

    Args:
        q: float [..., 4] scalar-first quaternions (need not be exactly unit; must be non-zero).
    Returns:
        float64 [..., 3, 3].
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"q: expected shape [..., 4], got {list(q.shape)}")
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)  # [..., 3, 3]


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) with w >= 0 from rotation matrices.

    Projects ``R`` onto the nearest rotation first (SVD), then uses the numerically stable branch
    (Shepperd's method: pick the largest of 4w^2, 4x^2, 4y^2, 4z^2 from the trace and diagonal).

    Args:
        R: float [..., 3, 3] rotation matrices.
    Returns:
        float64 [..., 4], unit norm, w >= 0.
    """
    R = nearest_rotation(R)  # [..., 3, 3]
    flat = R.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    for i, m in enumerate(flat):
        t = np.trace(m)
        diag = np.array([t, m[0, 0], m[1, 1], m[2, 2]])
        k = int(np.argmax(diag))
        if k == 0:
            s = 2.0 * np.sqrt(1.0 + t)
            q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
        elif k == 1:
            s = 2.0 * np.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 1e-300))
            q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
        elif k == 2:
            s = 2.0 * np.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 1e-300))
            q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
        else:
            s = 2.0 * np.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 1e-300))
            q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
        q = np.asarray(q)
        q /= np.linalg.norm(q)
        out[i] = q if q[0] >= 0 else -q
    return out.reshape(R.shape[:-2] + (4,))


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The rotation closest to ``R`` in Frobenius norm: U diag(1, 1, det(U V^T)) V^T from R = U S V^T.

    Args:
        R: float [..., 3, 3].
    Returns:
        float64 [..., 3, 3] with R^T R = I and det = +1.
    """
    R = np.asarray(R, dtype=np.float64)
    U, _, Vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(U @ Vt))  # [...]
    d = np.where(d == 0, 1.0, d)
    D = np.zeros(R.shape[:-2] + (3, 3))
    D[..., 0, 0] = 1.0
    D[..., 1, 1] = 1.0
    D[..., 2, 2] = d
    return U @ D @ Vt


def orthonormality_error(R: np.ndarray) -> float:
    """max |R^T R - I| over the entries of one 3x3 matrix ``R`` (0 for an exact rotation)."""
    R = np.asarray(R, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries give inf: not a rotation, said by the caller
        error = float(np.max(np.abs(R.T @ R - np.eye(3))))
    return error if error == error else float("inf")


def rotation_problem(R: np.ndarray) -> str | None:
    """Why ``R`` (float [3, 3]) is not a usable rotation, or None when it is.

    Checks finiteness, orthonormality (max |R^T R - I| <= ORTHONORMAL_TOLERANCE) and det = +1.
    """
    R = np.asarray(R, dtype=np.float64)
    if not np.all(np.isfinite(R)):
        return "rotation contains NaN or inf"
    err = orthonormality_error(R)
    if err > ORTHONORMAL_TOLERANCE:
        return (f"rotation is not orthonormal: max |R^T R - I| = {err:.3g} "
                f"(tolerance {ORTHONORMAL_TOLERANCE:g})")
    det = float(np.linalg.det(R))
    if det < 0:
        return f"rotation is a reflection (det = {det:.3g}, must be +1)"
    return None


def quaternion_problem(q) -> str | None:
    """Why ``q`` (4 numbers, w x y z) is not a usable unit quaternion, or None when it is."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (4,):
        return f"quaternion must have 4 numbers [w, x, y, z], got {q.size}"
    if not np.all(np.isfinite(q)):
        return "quaternion contains NaN or inf"
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > QUATERNION_NORM_TOLERANCE:
        return f"quaternion [w, x, y, z] must have unit norm, got norm {n:.6g}"
    return None


def angle_between_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Shortest-arc angle in degrees of the rotation taking ``R_a`` to ``R_b``.

    angle = 2 * atan2(|v|, |w|) of the quaternion (w, v) of R_a^T R_b; always in [0, 180].

    Args:
        R_a, R_b: float [..., 3, 3] rotations.
    Returns:
        float64 [...] degrees.
    """
    rel = np.swapaxes(np.asarray(R_a, dtype=np.float64), -1, -2) @ np.asarray(R_b, dtype=np.float64)
    q = matrix_to_quat(rel)  # [..., 4]
    return np.degrees(2.0 * np.arctan2(np.linalg.norm(q[..., 1:], axis=-1), np.abs(q[..., 0])))


def yaw_pitch_roll_to_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """world_from_cam rotation of an OpenCV camera from yaw, pitch and roll in degrees.

    All zero is the identity: the camera looks along world +z with x right and y down.
    R = R_y(yaw) @ R_x(pitch) @ R_z(roll), with
        R_y(a) = [[cos a, 0, sin a], [0, 1, 0], [-sin a, 0, cos a]]
        R_x(a) = [[1, 0, 0], [0, cos a, -sin a], [0, sin a, cos a]]
        R_z(a) = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]]
    Signs: yaw > 0 turns the camera to its right (forward swings towards world +x);
    pitch > 0 looks up (forward swings towards world -y, since y points down);
    roll > 0 turns the image clockwise as seen from behind the camera (its right side goes down,
    the camera x axis swings towards +y). Pitch is about the yawed camera's x axis and roll about
    its final viewing axis, so with roll 0 the horizon stays level.

    Returns:
        float64 [3, 3].
    """
    a, b, c = np.radians([yaw_deg, pitch_deg, roll_deg])
    R_y = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    R_x = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    R_z = np.array([[np.cos(c), -np.sin(c), 0.0], [np.sin(c), np.cos(c), 0.0], [0.0, 0.0, 1.0]])
    return R_y @ R_x @ R_z


DEFAULT_UP = (0.0, -1.0, 0.0)  # world "up" is -y because OpenCV y points down


def look_at_matrix(position, target, up=DEFAULT_UP) -> np.ndarray:
    """world_from_cam rotation of an OpenCV camera at ``position`` looking at ``target``.

    z = normalize(target - position) (forward), x = normalize(z x up) (right),
    y = z x x (down); R = [x | y | z] as columns. With up = -y and target straight ahead along +z
    this is the identity.

    Args:
        position, target, up: 3 numbers each.
    Returns:
        float64 [3, 3].
    Raises:
        ValueError: target == position, or the viewing direction is parallel to ``up``.
    """
    position = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - position
    n = np.linalg.norm(forward)
    if n < 1e-12:
        raise ValueError("look_at point equals the camera position")
    z = forward / n
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    nx = np.linalg.norm(x)
    if nx < 1e-9:
        raise ValueError("viewing direction is parallel to 'up'; give a different up vector")
    x = x / nx
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)
