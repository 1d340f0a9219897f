"""resolve_camera: the scene spec's `camera:` section -> Trajectory, and every problem it reports."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from mirage_cli.base.errors import InputError
from mirage_cli.base.yaml_lines import load_yaml_with_lines
from mirage_cli.camera.intrinsics import K_from_vertical_fov
from mirage_cli.camera.source import resolve_camera

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def resolve(text, tmp_path, frames=121, fps=24.0, width=1280, height=704):
    spec = tmp_path / "scene.yaml"
    spec.write_text(text)
    data, line_of = load_yaml_with_lines(text, str(spec))
    return resolve_camera(data.get("camera"), spec_file=str(spec), base_dir=tmp_path, width=width, height=height,
                          frames=frames, fps=fps, intrinsics=data.get("intrinsics"), line_of=line_of)


def problems(text, tmp_path, **kw):
    with pytest.raises(InputError) as e:
        resolve(text, tmp_path, **kw)
    return [str(p) for p in e.value.problems]


EXAMPLE = """\
prompt: a quiet room
camera:
  keyframes:
    - frame: 0
      position: [0, 0, 0]
      yaw: 0
    - frame: 60
      position: [0.2, 0, 0.6]
      yaw: 15
      pitch: -5
    - frame: 120
      position: [0.4, 0, 1.2]
      yaw: 30
"""


def test_example_style_keyframes(tmp_path):
    traj = resolve(EXAMPLE, tmp_path)
    assert len(traj) == 121 and (traj.width, traj.height, traj.fps) == (1280, 704, 24.0)
    np.testing.assert_allclose(traj.world_from_cam[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(traj.positions[60], [0.2, 0, 0.6], atol=1e-12)
    np.testing.assert_allclose(traj.K, np.broadcast_to(K_from_vertical_fov(60, 1280, 704), (121, 3, 3)))


def test_intrinsics_override_and_rescale(tmp_path):
    traj = resolve(EXAMPLE + "intrinsics: {fov: 50}\n", tmp_path)
    np.testing.assert_allclose(traj.K[0], K_from_vertical_fov(50, 1280, 704))
    traj = resolve(EXAMPLE + "intrinsics: {fx: 800, fy: 810, cx: 640, cy: 350}\n", tmp_path)
    np.testing.assert_allclose(traj.K[-1], [[800, 0, 640], [0, 810, 350], [0, 0, 1]])
    # a source's own K is rescaled to the render size (pixel-centre convention)
    shutil.copytree(DATA / "colmap" / "arkit_room", tmp_path / "arkit")
    traj = resolve("camera: {colmap: arkit/sparse/0}\n", tmp_path, frames=77, width=1920, height=1080)
    np.testing.assert_allclose(traj.K[0], [[2567.9902 / 2, 0, 1928.3684 / 2 - 0.5], [0, 2567.9902 / 2, 1080.0807 / 2 - 0.5],
                                           [0, 0, 1]], rtol=1e-12)
    # per-keyframe fov is interpolated
    traj = resolve("camera:\n  keyframes:\n    - {position: [0, 0, 0], fov: 40}\n    - {position: [0, 0, 1], fov: 80}\n",
                   tmp_path, frames=5)
    f = traj.K[:, 1, 1]
    assert f[0] == pytest.approx(K_from_vertical_fov(40, 1280, 704)[1, 1]) and f[-1] < f[2] < f[0]


def test_every_source_kind(tmp_path):
    shutil.copy(DATA / "realestate10k" / "0bf152ef84195293.txt", tmp_path / "clip.txt")
    shutil.copy(ROOT / "trajectories" / "loop3.yaml", tmp_path / "loop.yaml")
    for camera in ("{realestate10k: clip.txt, timing: constant_speed}", "{trajectory: loop.yaml, interpolation: linear}",
                   "{preset: orbit, radius: 3, degrees: -45}", "{preset: pan_and_return}"):
        traj = resolve(f"camera: {camera}\n", tmp_path, frames=33)
        assert len(traj) == 33, camera
    traj = resolve("camera: {preset: orbit, radius: 3, degrees: -45}\n", tmp_path, frames=33)
    assert traj.positions[1, 0] < 0  # negative degrees: moves left
    traj = resolve(f"camera: {{colmap: {DATA / 'colmap' / 'arkit_room'}, order: id}}\n", tmp_path, frames=77)
    assert len(traj) == 77


def test_problems_name_field_and_line(tmp_path):
    text = """\
prompt: x
camera:
  keyframes:
    - frame: 0
      position: [0, 0, 0]
      yaw: 0
    - frame: 40
      position: [0, 0]
      quaternion: [0.5, 0.5, 0.5, 0.4]
  timming: even
  interpolation: cubic
intrinsics:
  fov: 400
  fx: 3
"""
    got = problems(text, tmp_path)
    spec = tmp_path / "scene.yaml"
    assert f"{spec}:12: intrinsics: give either fov or fx/fy/cx/cy, not both" in got
    assert f"{spec}:13: intrinsics.fov: fov must be between 0 and 180 degrees (vertical), got 400" in got
    assert any(g.startswith(f"{spec}:10: camera.timming: unknown key 'timming' (did you mean 'timing'?)") for g in got)
    assert f"{spec}:11: camera.interpolation: expected one of spline, linear, got 'cubic'" in got
    assert f"{spec}:8: camera.keyframes[1].position: expected a list of 3 numbers, got list [0, 0]" in got
    assert f"{spec}:9: camera.keyframes[1].quaternion: quaternion [w, x, y, z] must have unit norm, got norm 0.953939" in got


def test_source_count_and_types(tmp_path):
    got = problems("camera:\n  keyframes: [{position: [0, 0, 0]}]\n  colmap: missing_dir\n", tmp_path)
    spec = tmp_path / "scene.yaml"
    assert any(g.startswith(f"{spec}:1: camera: more than one camera source (keyframes, colmap)") for g in got)
    assert f"{spec}:3: camera.colmap: not found: {tmp_path / 'missing_dir'}" in got
    got = problems("camera:\n  order: id\n", tmp_path)
    assert any("camera: no camera source: give exactly one of keyframes, trajectory, preset" in g for g in got)
    got = problems("camera:\n  realestate10k: 3\n", tmp_path)
    assert got == [f"{spec}:2: camera.realestate10k: expected a path (string), got int 3"]
    got = problems("camera: [1, 2]\n", tmp_path)
    assert got == [f"{spec}:1: camera: expected a mapping with one source (keyframes, trajectory, preset, colmap, "
                   "realestate10k, nerfstudio, json, spatia, video), got list"]
    got = problems("camera:\n  keyframes: [{position: [0, 0, 0], fov: 30}]\nintrinsics: {fov: 50}\n", tmp_path)
    assert got == [f"{spec}:3: intrinsics: both top-level intrinsics and per-keyframe fov are given; remove one"]


def test_problems_inside_a_camera_file_name_that_file(tmp_path):
    (tmp_path / "t.yaml").write_text("keyframes:\n  - frame: 0\n    position: [0, 0, 0]\n    yaw: left\n")
    got = problems("camera: {trajectory: t.yaml}\n", tmp_path)
    assert got == [f"{tmp_path / 't.yaml'}:4: keyframes[0].yaw: expected a number, got str 'left'"]


def test_coverage_problems_say_what_is_needed(tmp_path):
    spec = tmp_path / "scene.yaml"
    got = problems(EXAMPLE, tmp_path, frames=161)
    assert got == [f"{spec}:3: camera.keyframes: keyframes end at frame 120 but frames: 161 needs cameras up to frame 160; "
                   "add a keyframe at frame 160 or render at most 121 frames"]
    (tmp_path / "t.yaml").write_text("keyframes:\n  - {time: 0, position: [0, 0, 0]}\n  - {time: 4, position: [0, 0, 1]}\n")
    got = problems("camera:\n  trajectory: t.yaml\n", tmp_path, frames=121, fps=24)
    assert got == [f"{spec}:2: camera.trajectory: keyframes in {tmp_path / 't.yaml'} end at time 4 s but 121 frames at "
                   "24 fps need cameras up to 5 s; add a keyframe at time 5 or render at most 97 frames"]
    assert len(resolve("camera:\n  trajectory: t.yaml\n", tmp_path, frames=97, fps=24)) == 97


def test_single_camera_and_single_frame(tmp_path):
    traj = resolve("camera:\n  keyframes: [{position: [1, 2, 3], look_at: [1, 2, 4]}]\n", tmp_path, frames=9)
    np.testing.assert_allclose(traj.positions, np.tile([1, 2, 3.0], (9, 1)))
    np.testing.assert_allclose(traj.world_from_cam[:, :3, :3], np.broadcast_to(np.eye(3), (9, 3, 3)), atol=1e-12)
    assert len(resolve(EXAMPLE, tmp_path, frames=1)) == 1


def write_spatia_cameras(folder: Path, count: int) -> None:
    """A Spatia folder of ``count`` cameras moving along +z (world-to-camera 4x4 per line)."""
    import json

    folder.mkdir()
    lines = [json.dumps([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -0.1 * i], [0, 0, 0, 1]]) for i in range(count)]
    (folder / "w2c.txt").write_text("\n".join(lines) + "\n")
    (folder / "intrinsics.txt").write_text("[0.62 1.1 0.5 0.5]")


def test_spatia_needs_one_camera_per_frame(tmp_path):
    write_spatia_cameras(tmp_path / "case", 3)
    spec = tmp_path / "scene.yaml"
    for frames in (9, 2):
        got = problems("camera:\n  spatia: case\n", tmp_path, frames=frames)
        assert got == [f"{spec}:2: camera.spatia: {tmp_path / 'case' / 'w2c.txt'} has 3 cameras but frames is {frames}: "
                       "Spatia gives exactly one camera per frame; set frames: 3, give "
                       f"{frames} lines in the file, or set resample: true in the camera section to spread the 3 "
                       f"cameras evenly over {frames} frames"]
    traj = resolve("camera:\n  spatia: case\n", tmp_path, frames=3)
    np.testing.assert_allclose(traj.positions[:, 2], [0.0, 0.1, 0.2], atol=1e-12)
    # asked for, the cameras are spread over the frames
    traj = resolve("camera:\n  spatia: case\n  resample: true\n", tmp_path, frames=9)
    np.testing.assert_allclose(traj.positions[[0, 4, 8], 2], [0.0, 0.1, 0.2], atol=1e-12)
    assert len(resolve("camera:\n  spatia: case\n  resample: false\n", tmp_path, frames=3)) == 3


def test_resample_is_a_bool_for_spatia_only(tmp_path):
    write_spatia_cameras(tmp_path / "case", 3)
    spec = tmp_path / "scene.yaml"
    assert problems("camera:\n  spatia: case\n  resample: 1\n", tmp_path, frames=3) == [
        f"{spec}:3: camera.resample: expected true or false, got int 1"]
    assert problems(EXAMPLE + "  resample: true\n", tmp_path) == [
        f"{spec}:14: camera.resample: 'resample' only applies to a spatia source (one camera per frame); other sources "
        "are always sampled at the render's frames"]
