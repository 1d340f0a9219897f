"""Presets and the trajectories/*.yaml files that expose them."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from mirage_cli.base.errors import ProblemList
from mirage_cli.camera.keyframes import parse_keyframes
from mirage_cli.camera.presets import PRESETS, preset_keyframes, preset_parameters
from mirage_cli.camera.readers import read_trajectory_yaml
from mirage_cli.camera.source import build_trajectory
from mirage_cli.camera.summary import path_length, total_rotation_deg

TRAJECTORIES = Path(__file__).parent.parent / "trajectories"


def preset_path(name: str, frames: int = 121, **params):
    problems = ProblemList("test")
    items = preset_keyframes(name, params, problems)
    assert not problems, problems.items
    keys = parse_keyframes(items, problems, name="preset")
    assert not problems, problems.items
    return build_trajectory(keys, frames=frames, fps=24, width=1280, height=704)


def test_every_preset_has_a_yaml_file_that_matches_its_defaults():
    assert sorted(p.stem for p in TRAJECTORIES.glob("*.yaml")) == sorted(PRESETS)
    for name in PRESETS:
        data = yaml.safe_load((TRAJECTORIES / f"{name}.yaml").read_text())
        assert data["preset"] == name
        defaults = preset_parameters(name)
        for key, value in data.items():
            if key != "preset":
                assert value == pytest.approx(defaults[key]), (name, key)
        keys = read_trajectory_yaml(TRAJECTORIES / f"{name}.yaml")
        traj = build_trajectory(keys, frames=121, fps=24, width=1280, height=704)
        np.testing.assert_allclose(traj.world_from_cam, preset_path(name).world_from_cam, atol=1e-12)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_start_at_the_start_camera(name):
    traj = preset_path(name)
    assert len(traj) == 121
    np.testing.assert_allclose(traj.world_from_cam[0], np.eye(4), atol=1e-12)


def test_orbit():
    traj = preset_path("orbit", radius=2.0, degrees=90)
    centre = np.array([0, 0, 2.0])
    np.testing.assert_allclose(np.linalg.norm(traj.positions - centre, axis=1), 2.0, atol=2e-3)
    forward = traj.world_from_cam[:, :3, 2]
    to_centre = centre - traj.positions
    to_centre /= np.linalg.norm(to_centre, axis=1, keepdims=True)
    np.testing.assert_allclose(np.sum(forward * to_centre, axis=1), 1.0, atol=1e-3)  # always looking at it
    assert traj.positions[1, 0] > 0  # degrees > 0: moves right first
    assert total_rotation_deg(traj.world_from_cam) == pytest.approx(90, abs=0.5)


def test_dolly_pan_walk_loop():
    dolly = preset_path("dolly_in", distance=1.5)
    np.testing.assert_allclose(dolly.positions[-1], [0, 0, 1.5], atol=1e-12)
    assert total_rotation_deg(dolly.world_from_cam) == pytest.approx(0, abs=1e-9)
    pan = preset_path("pan_and_return", degrees=60)
    np.testing.assert_allclose(pan.world_from_cam[-1], pan.world_from_cam[0], atol=1e-12)  # back to the start view
    assert total_rotation_deg(pan.world_from_cam) == pytest.approx(120, abs=1e-6)
    assert pan.world_from_cam[60, 0, 2] == pytest.approx(np.sin(np.radians(60)), abs=1e-9)  # turned right (+x)
    walk = preset_path("forward_walk", distance=3.0)
    assert walk.positions[-1, 2] == pytest.approx(3.0) and path_length(walk.world_from_cam) > 3.0
    loop = preset_path("loop3", frames=241, radius=1.5)
    assert total_rotation_deg(loop.world_from_cam) == pytest.approx(1080, abs=1e-6)
    np.testing.assert_allclose(loop.world_from_cam[80], np.eye(4), atol=1e-9)  # the loop closes every 80 frames
    np.testing.assert_allclose(loop.world_from_cam[160], np.eye(4), atol=1e-9)
    np.testing.assert_allclose(loop.world_from_cam[240], np.eye(4), atol=1e-9)


def test_preset_parameter_problems():
    problems = ProblemList("scene.yaml", "camera")
    assert preset_keyframes("orbt", {}, problems) is None
    assert "did you mean 'orbit'" in problems.items[0].message
    problems = ProblemList("scene.yaml", "camera")
    assert preset_keyframes("orbit", {"radius": -1, "degree": 3, "keyframe_count": 1.5}, problems) is None
    text = "\n".join(str(p) for p in problems.items)
    assert "camera.radius: must be > 0" in text
    assert "did you mean 'degrees'" in text
    assert "camera.keyframe_count: expected an integer between 2 and 100,000, got 1.5" in text
