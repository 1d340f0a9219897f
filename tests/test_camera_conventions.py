"""Boundary conversions, intrinsics and rotation helpers: hand-computed cases and round trips."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirage_cli.camera.conventions import (
    camera_to_realestate10k_row,
    colmap_to_world_from_cam,
    opencv_to_opengl,
    opengl_to_opencv,
    realestate10k_row_to_camera,
    rigid_inverse,
    world_from_cam_to_colmap,
)
from mirage_cli.camera.intrinsics import K_from_vertical_fov, from_corner_origin, rescale_K, to_corner_origin, vertical_fov_deg
from mirage_cli.camera.rotations import (
    angle_between_deg,
    look_at_matrix,
    matrix_to_quat,
    quat_to_matrix,
    rotation_problem,
    yaw_pitch_roll_to_matrix,
)

unit = st.floats(-1.0, 1.0, allow_nan=False)
quats = st.tuples(unit, unit, unit, unit).filter(lambda q: np.linalg.norm(q) > 0.1).map(
    lambda q: np.asarray(q) / np.linalg.norm(q))
vec3 = st.tuples(*[st.floats(-10, 10, allow_nan=False)] * 3).map(np.asarray)


def pose(q, t):
    m = np.eye(4)
    m[:3, :3] = quat_to_matrix(q)
    m[:3, 3] = t
    return m


def test_opengl_flip_hand_computed():
    c2w_gl = np.eye(4)
    c2w_gl[:3, 3] = [1, 2, 3]
    w = opengl_to_opencv(c2w_gl)
    # an OpenGL camera at identity looks along -z with y up: OpenCV axes are x, -y, -z
    np.testing.assert_allclose(w[:3, :3], np.diag([1, -1, -1]))
    np.testing.assert_allclose(w[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(opencv_to_opengl(w), c2w_gl)
    with pytest.raises(ValueError, match="c2w_gl"):
        opengl_to_opencv(np.eye(3))


def test_colmap_hand_computed():
    # cam_from_world: rotate 90 deg about z, translate by t. Camera centre = -R^T t.
    q = [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]
    t = [1.0, 0.0, 0.0]
    w = colmap_to_world_from_cam(q, t)
    R = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(w[:3, :3], R.T, atol=1e-12)
    np.testing.assert_allclose(w[:3, 3], -R.T @ t, atol=1e-12)
    # the sign of q does not matter
    np.testing.assert_allclose(colmap_to_world_from_cam(-np.asarray(q), t), w, atol=1e-12)


def test_realestate10k_row_hand_computed():
    row = [1000, 0.5, 0.8, 0.5, 0.5, 0, 0] + [1, 0, 0, 1, 0, 1, 0, 2, 0, 0, 1, 3]
    ts, w, K = realestate10k_row_to_camera(row, 640, 360)
    assert ts == 1000
    np.testing.assert_allclose(K, [[320, 0, 319.5], [0, 288, 179.5], [0, 0, 1]])
    np.testing.assert_allclose(w[:3, 3], [-1, -2, -3])
    back = camera_to_realestate10k_row(ts, w, K, 640, 360)
    np.testing.assert_allclose(back, row, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(quats, vec3)
def test_pose_conversions_round_trip(q, t):
    w = pose(q, t)
    np.testing.assert_allclose(opengl_to_opencv(opencv_to_opengl(w)), w, atol=1e-12)
    qv, tv = world_from_cam_to_colmap(w)
    assert qv[0] >= 0
    np.testing.assert_allclose(colmap_to_world_from_cam(qv, tv), w, atol=1e-9)
    np.testing.assert_allclose(rigid_inverse(rigid_inverse(w)), w, atol=1e-9)
    K = np.array([[500.0, 0, 300.2], [0, 510.0, 170.7], [0, 0, 1]])
    ts, w2, K2 = realestate10k_row_to_camera(camera_to_realestate10k_row(7, w, K, 640, 352), 640, 352)
    np.testing.assert_allclose(w2, w, atol=1e-9)
    np.testing.assert_allclose(K2, K, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(quats)
def test_quaternion_matrix_round_trip(q):
    R = quat_to_matrix(q)
    assert rotation_problem(R) is None
    q2 = matrix_to_quat(R)
    assert abs(abs(float(np.dot(q, q2))) - 1.0) < 1e-9  # same rotation, sign free
    np.testing.assert_allclose(quat_to_matrix(-q), R, atol=1e-12)


def test_intrinsics_fov_and_rescale():
    K = K_from_vertical_fov(90.0, 1280, 704)
    np.testing.assert_allclose(K, [[352, 0, 639.5], [0, 352, 351.5], [0, 0, 1]])
    assert vertical_fov_deg(K, 704) == pytest.approx(90.0)
    # pixel-centre convention: the image centre stays the image centre, edges map to edges
    small = rescale_K(K, (1280, 704), (640, 352))
    np.testing.assert_allclose(small, [[176, 0, 319.5], [0, 176, 175.5], [0, 0, 1]])
    np.testing.assert_allclose(rescale_K(small, (640, 352), (1280, 704)), K)
    np.testing.assert_allclose(to_corner_origin(from_corner_origin(K)), K)
    np.testing.assert_allclose(from_corner_origin(np.eye(3))[:2, 2], [-0.5, -0.5])


def test_yaw_pitch_roll_signs():
    np.testing.assert_allclose(yaw_pitch_roll_to_matrix(0, 0, 0), np.eye(3))
    def fwd(R):
        return R[:, 2]  # camera z (viewing direction) in world

    np.testing.assert_allclose(fwd(yaw_pitch_roll_to_matrix(90, 0, 0)), [1, 0, 0], atol=1e-12)  # yaw right -> +x
    np.testing.assert_allclose(fwd(yaw_pitch_roll_to_matrix(0, 90, 0)), [0, -1, 0], atol=1e-12)  # pitch up -> -y
    # roll > 0: the camera's right (x) axis swings down (+y)
    np.testing.assert_allclose(yaw_pitch_roll_to_matrix(0, 0, 90)[:, 0], [0, 1, 0], atol=1e-12)
    # with roll 0 the camera x axis stays horizontal (level horizon)
    R = yaw_pitch_roll_to_matrix(37, -20, 0)
    assert abs(R[1, 0]) < 1e-12


def test_look_at():
    np.testing.assert_allclose(look_at_matrix([0, 0, 0], [0, 0, 5]), np.eye(3), atol=1e-12)
    R = look_at_matrix([0, 0, 0], [3, 0, 0])
    np.testing.assert_allclose(R, yaw_pitch_roll_to_matrix(90, 0, 0), atol=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        look_at_matrix([0, 0, 0], [0, -1, 0])
    with pytest.raises(ValueError, match="equals"):
        look_at_matrix([1, 1, 1], [1, 1, 1])


def test_rotation_problem_says_how_much():
    R = np.eye(3)
    R[0, 0] = 1.2
    assert "0.44" in rotation_problem(R)
    assert "reflection" in rotation_problem(np.diag([1.0, 1.0, -1.0]))
    assert "NaN" in rotation_problem(np.full((3, 3), np.nan))


def test_angle_between_shortest_arc():
    a = yaw_pitch_roll_to_matrix(0, 0, 0)
    b = yaw_pitch_roll_to_matrix(270, 0, 0)
    assert float(angle_between_deg(a, b)) == pytest.approx(90.0)
