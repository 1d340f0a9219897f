"""Boundary conversions between other projects' camera conventions and ours.

Ours and theirs, with every formula, are in docs/CONVENTIONS.md. Each function below converts one
thing in one direction (the formula is in its docstring); its inverse sits next to it. Principal
points with a corner origin are converted by ``intrinsics.from_corner_origin``.
"""

from __future__ import annotations

import numpy as np

from mirage_cli.camera.rotations import matrix_to_quat, quat_to_matrix

_GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def _check_4x4(name: str, m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected shape [..., 4, 4], got {list(m.shape)}")
    return m


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [[R, t], [0, 1]] -> [[R^T, -R^T t], [0, 1]].

    Args:
        m: float [..., 4, 4].
    Returns:
        float64 [..., 4, 4].
    """
    m = _check_4x4("m", m)
    R = m[..., :3, :3]
    t = m[..., :3, 3:]
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros_like(m)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def opengl_to_opencv(c2w_gl: np.ndarray) -> np.ndarray:
    """nerfstudio / OpenGL camera-to-world -> OpenCV world_from_cam.

    OpenGL cameras look along -z with y up; OpenCV along +z with y down. Flip the camera's y and z
    axes: world_from_cam = c2w_gl @ diag(1, -1, -1, 1). The camera centre is unchanged.

    Args:
        c2w_gl: float [..., 4, 4].
    Returns:
        float64 [..., 4, 4].
    """
    return _check_4x4("c2w_gl", c2w_gl) @ _GL_FLIP


def opencv_to_opengl(world_from_cam: np.ndarray) -> np.ndarray:
    """OpenCV world_from_cam -> OpenGL camera-to-world: c2w_gl = world_from_cam @ diag(1, -1, -1, 1).

    Args:
        world_from_cam: float [..., 4, 4].
    Returns:
        float64 [..., 4, 4].
    """
    return _check_4x4("world_from_cam", world_from_cam) @ _GL_FLIP


def colmap_to_world_from_cam(qvec_wxyz, tvec) -> np.ndarray:
    """COLMAP image pose -> world_from_cam.

    COLMAP stores cam_from_world as a scalar-first quaternion q = (w, x, y, z) and a translation t
    (x_cam = R(q) x_world + t). Then world_from_cam = [[R^T, -R^T t], [0, 1]]. q and -q give the
    same R, so the sign of q does not matter here.

    Args:
        qvec_wxyz: 4 numbers (non-zero).
        tvec: 3 numbers.
    Returns:
        float64 [4, 4].
    """
    q = np.asarray(qvec_wxyz, dtype=np.float64).reshape(4)
    t = np.asarray(tvec, dtype=np.float64).reshape(3)
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = quat_to_matrix(q)
    cam_from_world[:3, 3] = t
    return rigid_inverse(cam_from_world)


def world_from_cam_to_colmap(world_from_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """world_from_cam -> COLMAP (qvec (w, x, y, z) with w >= 0, tvec) of cam_from_world.

    cam_from_world = inverse(world_from_cam) = [[R, t], [0, 1]]; qvec = quat(R), tvec = t.

    Args:
        world_from_cam: float [4, 4].
    Returns:
        (float64 [4], float64 [3]).
    """
    cam_from_world = rigid_inverse(world_from_cam)
    return matrix_to_quat(cam_from_world[:3, :3]), cam_from_world[:3, 3].copy()


def realestate10k_row_to_camera(values, width: int, height: int) -> tuple[float, np.ndarray, np.ndarray]:
    """One RealEstate10K line -> (timestamp in microseconds, world_from_cam, K in pixels).

    A line holds 19 numbers: ``timestamp fx fy cx cy 0 0`` then a row-major 3x4 cam_from_world
    (OpenCV axes). Intrinsics are normalized by the image size with the origin at the image corner,
    so for an image of ``width`` x ``height`` pixels (pixel centres at integer coordinates):
        fx_px = fx * width,  cx_px = cx * width - 0.5,
        fy_px = fy * height, cy_px = cy * height - 0.5.
    world_from_cam = inverse([[R, t], [0, 1]]) of the 3x4 [R | t].

    Args:
        values: 19 numbers.
        width, height: the pixel size K is produced for (use 1, 1 for "normalized").
    Returns:
        (timestamp_us, float64 [4, 4], float64 [3, 3]).
    """
    v = np.asarray(values, dtype=np.float64).reshape(19)
    fx, fy, cx, cy = v[1:5]
    K = np.array([[fx * width, 0.0, cx * width - 0.5], [0.0, fy * height, cy * height - 0.5], [0.0, 0.0, 1.0]])
    cam_from_world = np.eye(4)
    cam_from_world[:3, :] = v[7:19].reshape(3, 4)
    return float(v[0]), rigid_inverse(cam_from_world), K


def camera_to_realestate10k_row(timestamp_us: float, world_from_cam: np.ndarray, K: np.ndarray,
                                width: int, height: int) -> list[float]:
    """Inverse of ``realestate10k_row_to_camera``: 19 numbers of one RealEstate10K line.

    fx = fx_px / width, cx = (cx_px + 0.5) / width, fy = fy_px / height, cy = (cy_px + 0.5) / height,
    then ``0 0`` and the row-major 3x4 of cam_from_world = inverse(world_from_cam).

    Args:
        timestamp_us: microseconds.
        world_from_cam: float [4, 4].
        K: float [3, 3] pixels at ``width`` x ``height``.
    Returns:
        list of 19 floats.
    """
    K = np.asarray(K, dtype=np.float64)
    cam_from_world = rigid_inverse(world_from_cam)
    intr = [float(K[0, 0] / width), float(K[1, 1] / height), float((K[0, 2] + 0.5) / width), float((K[1, 2] + 0.5) / height)]
    return [float(timestamp_us)] + intr + [0.0, 0.0] + [float(x) for x in cam_from_world[:3, :].reshape(-1)]
