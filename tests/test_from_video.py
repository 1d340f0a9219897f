"""``mirage trajectory --from-video`` (issue 31, item 1): a clip rendered by the project's synthetic
room along a known path, read back by real pycolmap (SIFT, sequential matching, incremental mapping
on this CPU), and the clips it must refuse. The room is ``detailed_room``: the same geometry with fine
non-repeating texture, which SIFT needs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from render_helpers import cli

from mirage_cli.base.video import write_mp4
from mirage_cli.camera.from_video import jumpiness
from mirage_cli.camera.source import load_trajectory
from mirage_cli.testing import synthetic_room as room

FRAMES = 60
SAMPLES = "30"


def known_path(n: int = FRAMES) -> np.ndarray:
    """world_from_cam [n, 4, 4]: a curved walk across the room, looking at a point on the back wall."""
    t = np.linspace(0.0, 1.0, n)
    positions = np.stack([-1.2 + 2.4 * t, -0.2 + 0.3 * t - 0.2 * np.sin(np.pi * t), 0.8 * t + 0.3 * np.sin(np.pi * t)], 1)
    return np.stack([room.look_at(p, (0.0, 0.4, 4.0)) for p in positions])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The clip along ``known_path``, the same frames shuffled, and one frame frozen; their folder
    also holds the estimates' cache (XDG_CACHE_HOME)."""
    folder = tmp_path_factory.mktemp("clips")
    poses = known_path()
    rgb, _ = room.render_views(room.intrinsics(), poses, room.HEIGHT, room.WIDTH, room.detailed_room())
    frames = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    write_mp4(folder / "walk.mp4", frames, 24.0, crf=12)
    write_mp4(folder / "shuffled.mp4", frames[np.random.default_rng(0).permutation(FRAMES)], 24.0, crf=12)
    write_mp4(folder / "frozen.mp4", np.repeat(frames[:1], 30, 0), 24.0, crf=12)
    write_mp4(folder / "one_frame.mp4", frames[:1], 24.0)
    return folder, poses


@pytest.fixture()
def cache(clips, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(clips[0] / "cache"))


def aligned_errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(largest position error / path length, largest rotation error in degrees) after the similarity
    that best maps the estimate onto the truth: its rotation from every camera's orientation (a path
    close to a line leaves the rotation about it to the orientations), then scale and offset from the
    positions."""
    M = sum(t[:3, :3] @ e[:3, :3].T for t, e in zip(truth, estimate))
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1, 1, np.linalg.det(U @ Vt)]) @ Vt
    p, q = estimate[:, :3, 3] @ R.T, truth[:, :3, 3]
    a, b = p - p.mean(0), q - q.mean(0)
    s = (a * b).sum() / (a * a).sum()
    err = np.linalg.norm(s * a - b, axis=1)
    length = np.linalg.norm(np.diff(q, axis=0), axis=1).sum()
    rot = [np.degrees(np.arccos(np.clip((np.trace((R @ e[:3, :3]).T @ t[:3, :3]) - 1) / 2, -1, 1))) for e, t in zip(estimate, truth)]
    return float(err.max() / length), float(max(rot))


def test_a_known_path_is_read_back_from_its_clip(clips, cache, tmp_path):
    folder, poses = clips
    done = cli("trajectory", "--from-video", folder / "walk.mp4", "--samples", SAMPLES, "--to", tmp_path / "path.json",
               "--points", tmp_path / "points.ply", "--json")
    assert done.exit_code == 0, done.output
    info = json.loads(done.stdout)["estimate"]
    assert info["registered"] == info["sampled"] == 30 and info["points"] > 100
    assert abs(info["fov_deg"] - 60.0) < 1.0 and "COLMAP's arbitrary units" in info["scale"]
    assert "video: SIFT features" in done.stderr  # progress on stderr
    path = load_trajectory(tmp_path / "path.json")
    assert len(path) == FRAMES and (path.width, path.height) == (room.WIDTH, room.HEIGHT)
    position, rotation = aligned_errors(path.world_from_cam, poses)
    assert position <= 0.02 and rotation <= 1.0, f"trajectory error {position:.2%} of the path, rotation {rotation:.2f} deg"
    assert (tmp_path / "points.ply").stat().st_size > 0
    again = cli("trajectory", "--from-video", folder / "walk.mp4", "--samples", SAMPLES, "--scale", "2", "--json")
    assert again.exit_code == 0 and "is cached in" in again.stderr
    assert "times 2 (--scale)" in json.loads(again.stdout)["estimate"]["scale"]


@pytest.mark.parametrize("clip, expected", [
    ("shuffled.mp4", "the cameras jump back and forth instead of moving along a path"),
    ("frozen.mp4", "no camera path: 0 of 30 sampled frames registered"),
])
def test_a_clip_that_is_no_path_is_refused_saying_what_registered(clips, cache, clip, expected):
    result = cli("trajectory", "--from-video", clips[0] / clip, "--samples", SAMPLES)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("video:")]
    assert result.exit_code == 2 and len(errors) == 1 and expected in errors[0], result.stderr


def test_bad_clips_are_one_line_and_exit_2(clips, cache, tmp_path):
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "folder.mp4").mkdir()
    cases = [
        (tmp_path / "corrupt.mp4", "cannot be read as a video"),
        (clips[0] / "one_frame.mp4", "has 1 frame(s): a camera path is estimated from at least 3"),
        (tmp_path / "fifo.mp4", "--from-video"),
        (tmp_path / "folder.mp4", "--from-video"),
        (tmp_path / "missing.mp4", "--from-video"),
    ]
    for path, expected in cases:
        result = cli("trajectory", "--from-video", path)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0], (path, result.output)
    assert cli("trajectory", "--from-video", clips[0] / "walk.mp4", "--samples", "2").exit_code == 2


def test_jumpiness_tells_a_path_from_a_shuffle():
    t = np.linspace(0, 1, 30)[:, None]
    path = np.hstack([t, t**2, np.sin(3 * t)])
    assert jumpiness(path) < 0.2 < 1.0 < jumpiness(path[np.random.default_rng(1).permutation(30)])


def test_a_spec_follows_the_camera_of_a_clip_and_scales_its_depth_from_the_points(clips, cache, tmp_path):
    """``camera: {video: CLIP}``: the plan's path is the clip's (the estimate is shared with the command
    through the cache) and the start depth is scaled from the points the clip's first frame sees."""
    from PIL import Image

    from mirage_cli.base.video import read_frames_at
    from mirage_cli.spec.plan import load_plan

    folder, poses = clips
    Image.fromarray(read_frames_at(folder / "walk.mp4", [0])[0]).save(tmp_path / "first.png")
    spec = tmp_path / "scene.yaml"
    spec.write_text(f"prompt: a room\nimage: first.png\ncamera:\n  video: {folder / 'walk.mp4'}\n  samples: {SAMPLES}\n"
                    f"frames: 57\nchunk_frames: 29\nresolution: {room.WIDTH}x{room.HEIGHT}\n")
    plan = load_plan(spec, preset="tiny")
    assert plan.scale.source == "COLMAP points" and plan.camera_source == f"video: {folder / 'walk.mp4'}"
    sampled = load_trajectory_like(folder, len(plan.trajectory))
    assert np.abs(plan.trajectory.world_from_cam - sampled).max() < 1e-9
    checked = cli("validate", spec, "--preset", "tiny")
    assert checked.exit_code == 0 and "scale       COLMAP points" in checked.stdout, checked.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace(f"  samples: {SAMPLES}\n", "  samples: 2\n  order: id\n"))
    refused = cli("validate", bad, "--preset", "tiny")
    assert refused.exit_code == 2 and "camera.samples: expected a whole number" in refused.stderr
    assert "camera.order: 'order' only applies to a colmap source" in refused.stderr


def load_trajectory_like(folder, frames: int) -> np.ndarray:
    """The clip's estimate as `mirage trajectory --from-video` samples it at ``frames`` frames."""
    done = cli("trajectory", "--from-video", folder / "walk.mp4", "--samples", SAMPLES, "--frames", str(frames),
               "--to", folder / f"walk_{frames}.json")
    assert done.exit_code == 0, done.output
    return load_trajectory(folder / f"walk_{frames}.json").world_from_cam


def test_a_metric_depth_model_gives_the_path_in_metres(clips, cache, tiny_depth_dir, tmp_path):
    """--depth-model: the metric model's depth of the first frame at the points over their COLMAP depth
    (a tiny random metric model here: its scale means nothing, the arithmetic is what is checked)."""
    folder, _ = clips
    plain = cli("trajectory", "--from-video", folder / "walk.mp4", "--samples", SAMPLES, "--to", tmp_path / "a.json")
    metric = cli("trajectory", "--from-video", folder / "walk.mp4", "--samples", SAMPLES, "--depth-model", tiny_depth_dir,
                 "--to", tmp_path / "m.json", "--json")
    assert plain.exit_code == 0 and metric.exit_code == 0, metric.output
    scale_text = json.loads(metric.stdout)["estimate"]["scale"]
    assert scale_text.startswith("metres: COLMAP's units times ") and f"from the metric depth model {tiny_depth_dir}" in scale_text
    factor = float(scale_text.split("times ")[1].split(",")[0])
    a, m = load_trajectory(tmp_path / "a.json"), load_trajectory(tmp_path / "m.json")
    assert np.allclose(m.world_from_cam[:, :3, 3], factor * a.world_from_cam[:, :3, 3], rtol=1e-3, atol=1e-6)
    both = cli("trajectory", "--from-video", folder / "walk.mp4", "--scale", "2", "--depth-model", tiny_depth_dir)
    assert both.exit_code == 2 and "give the scale once" in both.stderr
