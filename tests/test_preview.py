"""`mirage preview`: the start image's point cloud along the camera path, written as an MP4."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mirage_cli.base.video import read_video
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.render.preview import HOLE_COLOR, preview_frames, render_preview
from mirage_cli.testing import synthetic_room as S

H, W = 64, 96
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "room"


def _trajectory(n=5, fps=6.0):
    K = S.intrinsics(H, W)
    cams = [S.world_from_cam((0.0, 0.0, 0.1 * k), 12.0 * k) for k in range(n)]
    return Trajectory(np.stack(cams), np.stack([K] * n), W, H, fps)


def test_first_frame_is_the_start_image_and_holes_are_flat():
    traj = _trajectory()
    rgb, depth = S.render(traj.K[0], traj.world_from_cam[0], H, W)
    frames = list(preview_frames(rgb, depth, traj))
    assert len(frames) == 5 and frames[0].shape == (H, W, 3) and frames[0].dtype == np.uint8
    expected = (rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.abs(frames[0].astype(int) - expected.astype(int)).max() <= 1
    hole = np.array([round(c * 255) for c in HOLE_COLOR], dtype=np.uint8)
    assert not (frames[0] == hole).all(-1).any()
    # turning right 48 degrees: the right part of the last frame was never seen
    assert (frames[-1][:, -10:] == hole).all()


def test_render_preview_writes_an_mp4_at_the_path_fps(tmp_path):
    traj = _trajectory(n=7, fps=6.0)
    rgb, depth = S.render(traj.K[0], traj.world_from_cam[0], H, W)
    out = render_preview(rgb, depth, traj, tmp_path / "p.mp4", hole_color=(0.0, 0.0, 0.0))
    assert out == tmp_path / "p.mp4"
    video, fps = read_video(out)
    assert video.shape == (7, H, W, 3) and fps == pytest.approx(6.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.mp4"]


def test_render_preview_checks_shapes(tmp_path):
    traj = _trajectory()
    with pytest.raises(ValueError, match=r"rgb: expected shape \[3, 64, 96\]"):
        render_preview(torch.zeros(3, 32, 96), torch.ones(H, W), traj, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match=r"depth: expected shape \[64, 96\]"):
        render_preview(torch.zeros(3, H, W), torch.ones(H, W + 1), traj, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def _example_copy(tmp_path, depth_line=None, frames=9):
    """The bundled example with a shorter path (and optionally another `depth:` line)."""
    for name in ("scene.yaml", "start.png", "depth.npy"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    text = (tmp_path / "scene.yaml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("frames:"):
            line = f"frames: {frames}"
        elif line.startswith("chunk_frames:"):
            line = f"chunk_frames: {frames}"
        elif line.startswith("depth:") and depth_line is not None:
            line = depth_line
        lines.append(line)
    (tmp_path / "scene.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path / "scene.yaml"


@pytest.mark.skipif(not (EXAMPLE / "scene.yaml").exists(), reason="the bundled example is not present")
def test_cli_preview_of_the_example(tmp_path):
    from mirage_cli.cli.main import app

    scene = _example_copy(tmp_path)
    result = CliRunner().invoke(app, ["preview", str(scene), "--out", str(tmp_path / "preview.mp4")])
    assert result.exit_code == 0, result.output
    assert "preview.mp4: 9 frames, 448x256" in result.stdout
    video, fps = read_video(tmp_path / "preview.mp4")
    assert video.shape == (9, 256, 448, 3) and fps == pytest.approx(8.0)


@pytest.mark.skipif(not (EXAMPLE / "scene.yaml").exists(), reason="the bundled example is not present")
def test_cli_preview_without_depth_names_the_field(tmp_path):
    from mirage_cli.cli.main import app

    scene = _example_copy(tmp_path, depth_line="depth: null")
    result = CliRunner().invoke(app, ["preview", str(scene), "--out", str(tmp_path / "preview.mp4")])
    assert result.exit_code == 2
    assert "depth:" in result.stderr and "scene.yaml" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "preview.mp4").exists()
