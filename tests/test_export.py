"""``mirage export``: a run as a COLMAP and a nerfstudio dataset (issue 31, item 3). Real renders of the
small scene, real pycolmap reading the exported models back, our own readers giving back the run's
cameras, real files for every refusal."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from render_helpers import cli

from mirage_cli.base.video import read_video
from mirage_cli.camera.colmap import import_pycolmap
from mirage_cli.camera.source import load_trajectory
from mirage_cli.export.run_content import project, read_run


@pytest.fixture(scope="module")
def exported(renders, tmp_path_factory):
    """The latent render exported as COLMAP (text and binary) and nerfstudio datasets."""
    run = renders["latent"][0]
    out = tmp_path_factory.mktemp("export")
    done = cli("export", run, "--colmap", out / "colmap", "--nerfstudio", out / "ns", "--json")
    assert done.exit_code == 0, done.output
    binary = cli("export", run, "--colmap", out / "colmap_bin", "--binary")
    assert binary.exit_code == 0, binary.output
    return run, out, json.loads(done.stdout)


def test_the_datasets_hold_the_runs_frames(exported):
    run, out, info = exported
    frames, _ = read_video(run / "video.mp4")
    assert info["frames"] == len(frames) and info["chunks_done"] == info["chunks"] == 2 and info["points"] > 0
    for folder in ("colmap", "ns"):
        names = sorted(os.listdir(out / folder / "images"))
        assert names == [f"frame_{i:05d}.png" for i in range(len(frames))]
        assert np.array_equal(np.asarray(Image.open(out / folder / "images" / names[5])), frames[5])


@pytest.mark.parametrize("model", ["colmap", "colmap_bin"])
def test_pycolmap_reads_the_model_and_our_reader_gives_back_the_cameras(exported, model):
    run, out, info = exported
    rec = import_pycolmap().Reconstruction(str(out / model / "sparse" / "0"))
    assert rec.num_images() == info["frames"] and rec.num_points3D() == info["points"]
    truth = load_trajectory(run / "camera.json")
    back = load_trajectory(out / model / "sparse" / "0", frames=info["frames"], fps=truth.fps)
    assert np.abs(back.world_from_cam - truth.world_from_cam[: info["frames"]]).max() < 1e-6
    assert np.abs(back.K - truth.K[: info["frames"]]).max() < 1e-6


def test_nerfstudio_transforms_give_back_the_cameras_and_name_the_points(exported):
    run, out, info = exported
    transforms = json.loads((out / "ns" / "transforms.json").read_text())
    assert transforms["ply_file_path"] == "sparse_pc.ply" and (out / "ns" / "sparse_pc.ply").stat().st_size > 0
    truth = load_trajectory(run / "camera.json")
    back = load_trajectory(out / "ns" / "transforms.json", frames=info["frames"], fps=truth.fps)
    assert np.abs(back.world_from_cam - truth.world_from_cam[: info["frames"]]).max() < 1e-6
    assert np.abs(back.K - truth.K[: info["frames"]]).max() < 1e-6


def test_the_points_project_onto_the_frames_that_saw_them(exported):
    """Each exported point's one observation: COLMAP's own projection of the point into that image
    lands on the stored 2D point, inside the frame, and the point's colour is that pixel's."""
    run, out, _ = exported
    rec = import_pycolmap().Reconstruction(str(out / "colmap" / "sparse" / "0"))
    frames, _ = read_video(run / "video.mp4")
    H, W = frames.shape[1:3]
    for point in list(rec.points3D.values())[:200]:
        (element,) = point.track.elements
        image = rec.images[element.image_id]
        stored = image.points2D[element.point2D_idx].xy
        projected = rec.cameras[image.camera_id].img_from_cam(image.cam_from_world() * point.xyz)
        assert np.abs(projected - stored).max() < 1e-6
        u, v = np.round(stored - 0.5).astype(int)  # COLMAP's pixel centres are at +0.5
        assert 0 <= u < W and 0 <= v < H
        assert np.array_equal(point.color, frames[element.image_id - 1, v, u])


def test_a_stopped_run_exports_the_frames_rendered_so_far(stopped_run, tmp_path):
    content = read_run(stopped_run)
    assert (content.chunks_done, content.chunks) == (1, 2) and len(content.frames) == 9
    uv, z = project(content.xyz, content.trajectory.world_from_cam[content.seen_in], content.trajectory.K[content.seen_in])
    assert (z > 0).all() and (content.seen_in < 9).all()
    done = cli("export", stopped_run, "--nerfstudio", tmp_path / "ns")
    assert done.exit_code == 0 and "9 frames (stopped run: 1 of 2 chunks)" in done.stdout


def test_refusals_are_one_line_and_exit_2(renders, tmp_path):
    run = renders["latent"][0]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "segments" / "chunk_0001.mp4").write_bytes(b"not a video")
    cases = [
        (("export", run), "--colmap / --nerfstudio: name at least one dataset"),
        (("export", tmp_path / "nowhere", "--colmap", tmp_path / "a"), "run directory does not exist"),
        (("export", empty, "--colmap", tmp_path / "b"), "nothing to export: no chunk is rendered yet"),
        (("export", run, "--colmap", tmp_path / "full"), "is not empty; name a new folder"),
        (("export", run, "--nerfstudio", tmp_path / "file"), "exists and is not a folder"),
        (("export", run, "--colmap", tmp_path / "fifo"), "exists and is not a folder"),
        (("export", run, "--colmap", tmp_path / "same", "--nerfstudio", tmp_path / "same"), "the same folder as --colmap"),
        (("export", damaged, "--colmap", tmp_path / "c"), "chunk 2's segment cannot be read"),
    ]
    for args, expected in cases:
        result = cli(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0], (args, result.output)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine" and not (tmp_path / "c").exists()
