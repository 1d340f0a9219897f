"""Resampling: shortest-arc slerp, keyframes hit exactly, orthonormal output, real ARKit sign flips."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirage_cli.camera.interpolate import resample, slerp
from mirage_cli.camera.readers import read_colmap
from mirage_cli.camera.rotations import angle_between_deg, quat_to_matrix
from mirage_cli.camera.source import build_trajectory
from mirage_cli.camera.summary import path_length, total_rotation_deg

DATA = Path(__file__).parent / "data"
ARKIT = DATA / "colmap" / "arkit_room" / "sparse" / "0"

unit = st.floats(-1.0, 1.0, allow_nan=False)
quats = st.tuples(unit, unit, unit, unit).filter(lambda q: np.linalg.norm(q) > 0.1).map(
    lambda q: np.asarray(q) / np.linalg.norm(q))


def quat_angle_deg(a, b):
    return float(np.degrees(2 * np.arccos(np.clip(abs(np.dot(a, b)), 0, 1))))


@settings(max_examples=100, deadline=None)
@given(quats, quats, st.floats(0, 1), st.booleans())
def test_slerp_stays_on_shortest_arc(q0, q1, u, flip):
    q1 = -q1 if flip else q1  # the same rotation written with the other sign
    q = slerp(q0, q1, u)
    total = quat_angle_deg(q0, q1)
    assert total <= 180.0 + 1e-9
    # on the geodesic: the two parts add up to the whole, in proportion u
    assert quat_angle_deg(q0, q) + quat_angle_deg(q, q1) == pytest.approx(total, abs=1e-5)
    assert quat_angle_deg(q0, q) == pytest.approx(u * total, abs=1e-5)


@st.composite
def keyframe_sets(draw):
    n = draw(st.integers(1, 6))
    gaps = draw(st.lists(st.integers(1, 12), min_size=n - 1, max_size=n - 1))
    frames = np.concatenate([[0], np.cumsum(gaps)]).astype(float)
    poses = []
    for _ in range(n):
        m = np.eye(4)
        m[:3, :3] = quat_to_matrix(draw(quats))
        m[:3, 3] = draw(st.tuples(*[st.floats(-5, 5, allow_nan=False)] * 3))
        poses.append(m)
    return frames, np.stack(poses)


@settings(max_examples=60, deadline=None)
@given(keyframe_sets(), st.sampled_from(["spline", "linear"]), st.booleans())
def test_resample_passes_through_keyframes(keys, interpolation, flip_signs):
    frames, poses = keys
    sample = np.arange(int(frames[-1]) + 1, dtype=float)
    out, _ = resample(frames, poses, sample, interpolation=interpolation)
    assert out.shape == (len(sample), 4, 4)
    np.testing.assert_allclose(out[frames.astype(int)], poses, atol=1e-9)
    R = out[:, :3, :3]
    np.testing.assert_allclose(np.swapaxes(R, 1, 2) @ R, np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    assert np.all(np.linalg.det(R) > 0)
    np.testing.assert_allclose(out[:, 3], np.broadcast_to([0, 0, 0, 1.0], (len(sample), 4)))
    # between two keyframes the camera turns by the shortest arc, never more
    if len(frames) > 1:
        key_total = float(np.sum(angle_between_deg(poses[:-1, :3, :3], poses[1:, :3, :3])))
        assert total_rotation_deg(out) == pytest.approx(key_total, abs=1e-6)


def test_resample_ignores_quaternion_sign_of_input():
    # the same rotations given as +q and -q give the same path
    q = np.array([[1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [0.0, 1, 0, 0]])
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, :3] = quat_to_matrix(q)
    out_a, _ = resample([0, 4, 8], poses, np.arange(9.0))
    poses_b = poses.copy()
    poses_b[1, :3, :3] = quat_to_matrix(-q[1])
    out_b, _ = resample([0, 4, 8], poses_b, np.arange(9.0))
    np.testing.assert_allclose(out_a, out_b, atol=1e-12)


def test_resample_constant_speed_and_linear():
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[1, 0, 3] = 1.0  # a short first segment ...
    poses[2, 0, 3] = 10.0  # ... then a long one
    even, _ = resample([0, 1, 2], poses, np.linspace(0, 2, 11), interpolation="linear")
    steady, _ = resample([0, 1, 2], poses, np.linspace(0, 2, 11), interpolation="linear", timing="constant_speed")
    np.testing.assert_allclose(np.diff(steady[:, 0, 3]), 1.0, atol=1e-3)
    assert np.ptp(np.diff(even[:, 0, 3])) > 1.0
    with pytest.raises(ValueError, match="timing"):
        resample([0, 1, 2], poses, [0.0], timing="fast")
    with pytest.raises(ValueError, match="world_from_cam"):
        resample([0, 1], poses, [0.0])
    with pytest.raises(ValueError, match="increasing"):
        resample([0, 2, 1], poses, [0.0])


def test_spline_is_smoother_than_linear_on_a_circle():
    a = np.linspace(0, 2 * np.pi, 9)
    poses = np.tile(np.eye(4), (9, 1, 1))
    poses[:, 0, 3], poses[:, 2, 3] = np.cos(a), np.sin(a)
    t = np.linspace(0, 8, 161)
    spline, _ = resample(np.arange(9.0), poses, t, interpolation="spline")
    linear, _ = resample(np.arange(9.0), poses, t, interpolation="linear")
    def radius(p):
        return np.hypot(p[:, 0, 3], p[:, 2, 3])

    assert np.max(np.abs(radius(spline) - 1)) < np.max(np.abs(radius(linear) - 1)) / 2


def test_arkit_sign_flips_resampled_to_77_frames():
    keys = read_colmap(ARKIT)
    assert len(keys) == 20
    # the file really flips quaternion signs between consecutive frames (4 -> 5 among others)
    text = (ARKIT / "images.txt").read_text().splitlines()
    qw = [float(row.split()[1]) for row in text if row and not row.startswith("#") and len(row.split()) >= 10]
    assert any(a > 0 > b for a, b in zip(qw, qw[1:]))
    key_total = total_rotation_deg(keys.world_from_cam)  # shortest-arc total between keyframes
    traj = build_trajectory(keys, frames=77, fps=24, width=1280, height=704)
    assert len(traj) == 77
    total = total_rotation_deg(traj.world_from_cam)
    assert total == pytest.approx(key_total, rel=0.05)
    # naive interpolation of the raw quaternions (no sign fix) spins the long way round
    q_raw = np.array([[float(x) for x in row.split()[1:5]] for row in text
                      if row and not row.startswith("#") and len(row.split()) >= 10])
    t = np.linspace(0, 19, 77)
    j = np.minimum(t.astype(int), 18)
    u = (t - j)[:, None]
    q_naive = (1 - u) * q_raw[j] + u * q_raw[j + 1]
    naive_total = total_rotation_deg(np.concatenate([np.pad(quat_to_matrix(q_naive), ((0, 0), (0, 1), (0, 1)))]))
    assert naive_total > 1.2 * key_total
    # the resampled path still passes through the first and last camera
    np.testing.assert_allclose(traj.world_from_cam[0], keys.world_from_cam[0], atol=1e-9)
    np.testing.assert_allclose(traj.world_from_cam[-1], keys.world_from_cam[-1], atol=1e-9)
    assert path_length(traj.world_from_cam) >= path_length(keys.world_from_cam) * 0.99


# --- scipy as the oracle ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(quats, quats, st.lists(st.floats(0, 1), min_size=1, max_size=5))
def test_slerp_matches_scipy(q0, q1, us):
    from scipy.spatial.transform import Rotation, Slerp

    ours = slerp(q0, q1, np.asarray(us))  # [n, 4] (w, x, y, z)
    reference = Slerp([0.0, 1.0], Rotation.from_quat(np.stack([q0, q1]), scalar_first=True))(us)
    theirs = reference.as_quat(scalar_first=True)  # [n, 4]
    # the same rotations (a quaternion and its negative are one rotation)
    np.testing.assert_allclose(np.abs(np.sum(ours * theirs, axis=-1)), 1.0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(quats)
def test_matrix_to_quat_matches_scipy(q):
    from scipy.spatial.transform import Rotation

    from mirage_cli.camera.rotations import matrix_to_quat

    R = Rotation.from_quat(q, scalar_first=True).as_matrix()
    theirs = Rotation.from_matrix(R).as_quat(scalar_first=True)
    ours = matrix_to_quat(R)
    assert ours[0] >= 0  # our sign convention; at w = 0 both signs qualify
    np.testing.assert_allclose(abs(float(np.dot(ours, theirs))), 1.0, atol=1e-9)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-9)


def test_spline_is_the_cubic_hermite_spline_of_scipy():
    from scipy.interpolate import CubicHermiteSpline

    from mirage_cli.camera.interpolate import hermite_tangents, interpolate_points

    rng = np.random.default_rng(0)
    key_times = np.cumsum(rng.uniform(0.3, 2.0, size=7))  # uneven knots
    points = rng.normal(size=(7, 3))
    t = np.linspace(key_times[0], key_times[-1], 301)
    ours = interpolate_points(key_times, points, t, "spline")
    theirs = CubicHermiteSpline(key_times, points, hermite_tangents(key_times, points), axis=0)(t)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    # Catmull-Rom interior tangents: the central difference over the two neighbouring knots
    m = hermite_tangents(key_times, points)
    np.testing.assert_allclose(m[3], (points[4] - points[2]) / (key_times[4] - key_times[2]))
