"""``mirage eval`` on exact data: the synthetic room rendered along a camera path (exact geometry),
then the same video damaged the ways the metrics exist to catch. Real OpenCV, real video files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from render_helpers import cli

from mirage_cli.base.video import write_lossless
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.camera.writers import write_canonical_json
from mirage_cli.evaluation.document import evaluate
from mirage_cli.evaluation.inputs import EvalInputs
from mirage_cli.testing import synthetic_room as S

H, W, FPS = 256, 448, 8.0


def out_and_back(n: int = 33) -> np.ndarray:
    """Turn right while stepping forward, then come back the same way (revisits in the second half)."""
    half = n // 2
    s = [t / half if t <= half else (n - 1 - t) / half for t in range(n)]
    return np.stack([S.world_from_cam((0.3 * v, 0.0, 0.4 * v), yaw_deg=30 * v) for v in s])


@pytest.fixture(scope="module")
def scene():
    cams = out_and_back()
    K = np.repeat(S.intrinsics(H, W)[None], len(cams), axis=0)
    rgb, depth = S.render_views(K[0], cams, H, W)
    frames = (rgb.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()
    return frames, cams, K, depth.numpy().astype(np.float64)


def run(frames, cams, K, boundaries=(), depth=None):
    doc = evaluate(EvalInputs(frames, FPS, cams, K, video="video", camera="camera", boundaries=list(boundaries), depth=depth))
    return {name: m["value"] for name, m in doc["metrics"].items()}


@pytest.fixture(scope="module")
def good(scene):
    """The metrics of the true path (frames, cameras and depth that agree), with a chunk boundary at 16."""
    frames, cams, K, depth = scene
    return run(frames, cams, K, boundaries=[16], depth=depth)


def test_the_true_path_scores_near_perfect(good):
    m = good
    assert m["reprojection_error"] < 0.5  # pixels: the flow is what the cameras and the depth imply
    assert m["rotation_error_median"] < 1.0 and m["rotation_error_p90"] < 1.5
    assert m["revisit_psnr"] > 35 and m["revisit_ssim"] > 0.95  # the return path sees exactly what the way out saw
    assert m["temporal_consistency"] > 0.8
    assert m["seam_ratio_max"] < 2.0
    assert m["trajectory_error_relative"] < 0.05  # the chained estimates stay within 5% of the path's length


def test_damage_is_caught_by_the_metric_meant_for_it(scene, good):
    frames, cams, K, depth = scene
    wrong = cams.copy()
    wrong[:, :3, :3] = np.stack([S.world_from_cam(yaw_deg=-30 * t / 16)[:3, :3] for t in range(len(cams))])  # turns the other way
    wrong_path = run(frames, wrong, K, depth=depth)
    assert wrong_path["rotation_error_median"] > 5 * max(good["rotation_error_median"], 0.2)
    assert wrong_path["reprojection_error"] > 5 * max(good["reprojection_error"], 0.1)
    assert run(frames, cams, K, depth=depth * 3)["reprojection_error"] > 3 * max(good["reprojection_error"], 0.1)  # mis-scaled
    shuffled = frames[np.random.default_rng(0).permutation(len(frames))]
    bad = run(shuffled, cams, K)
    assert bad["rotation_error_median"] > 5 * max(good["rotation_error_median"], 0.2)
    assert bad["temporal_consistency"] < good["temporal_consistency"]
    assert bad["trajectory_error_relative"] > 3 * good["trajectory_error_relative"]
    shifted = frames.copy()
    shifted[17:] = np.roll(frames[17:], 6, axis=2)  # the second half drifts sideways: the revisits no longer match
    assert run(shifted, cams, K)["revisit_psnr"] < good["revisit_psnr"] - 10
    jump = frames.copy()
    jump[17:] = np.clip(jump[17:].astype(int) + 40, 0, 255).astype(np.uint8)  # a colour jump at the chunk boundary
    assert run(jump, cams, K, boundaries=[16])["seam_ratio_max"] > 5 * good["seam_ratio_max"]


def test_the_command_on_a_video_and_its_bad_inputs(tmp_path, scene):
    frames, cams, K, depth = scene
    video, camera = tmp_path / "video.mkv", tmp_path / "camera.json"
    write_lossless(video, frames, FPS)
    write_canonical_json(camera, Trajectory(cams, K, W, H, FPS))
    result = cli("eval", video, "--camera", camera, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "mirage-eval/1" and doc["frames"] == len(frames)
    assert all({"value", "unit", "direction", "pairs"} <= set(m) for m in doc["metrics"].values())
    assert "rotation_error_median" in result.stderr  # the table
    assert any("3D consistency: no depth" in note for note in doc["notes"])
    np.save(tmp_path / "depth.npy", depth)
    with_depth = json.loads(cli("eval", video, "--camera", camera, "--depth", tmp_path / "depth.npy", "--json").stdout)
    assert with_depth["metrics"]["reprojection_error"]["value"] < 0.5
    np.save(tmp_path / "short_depth.npy", depth[:3])
    short = tmp_path / "short.json"
    write_canonical_json(short, Trajectory(cams[:-1], K[:-1], W, H, FPS))
    other_fps = tmp_path / "fps.json"
    write_canonical_json(other_fps, Trajectory(cams, K, W, H, 24.0))
    corrupt = tmp_path / "corrupt.mkv"
    corrupt.write_bytes(video.read_bytes()[:200])
    single = tmp_path / "single.mkv"
    write_lossless(single, frames[:1], FPS)
    cases = [((video, "--camera", short), f"{short}: --camera: has {len(cams) - 1} cameras for a video of more than {len(cams) - 1}"),
             ((video, "--camera", other_fps), "is at 24 fps, the video at 8 fps"),
             ((corrupt, "--camera", camera), f"{corrupt}:"),
             ((single, "--camera", camera), "it needs at least 2"),
             ((video,), "pass its camera path with --camera"),
             ((video, "--camera", camera, "--depth", tmp_path / "short_depth.npy"), "one map per frame")]
    for args, message in cases:
        bad = cli("eval", *args)
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


def test_a_run_directory_gives_its_own_camera_and_chunks(tmp_path, small_scene):
    from render_helpers import SMALL

    assert cli("render", small_scene, "--out", tmp_path / "run", *SMALL).exit_code == 0
    result = cli("eval", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [b["i"] for b in doc["details"]["seams"]["boundaries"]] == [8]  # 17 frames in chunks of 9
    assert doc["depth"].startswith("the run's memory (")  # the 3D check uses the depth the render's warps used
    assert any("depth from the run's memory" in note for note in doc["notes"])


def test_against_reference_frames(tmp_path, scene):
    from PIL import Image

    from mirage_cli.base.errors import InputError
    from mirage_cli.evaluation.document import _against_reference
    from mirage_cli.evaluation.reference import check_reference, read_reference

    def _reference(folder, frames):
        return read_reference(folder, check_reference(folder, frames.shape[:3]), frames.shape[:3])

    frames, cams, K, _ = scene
    folder = tmp_path / "gt"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    truth = _reference(folder, frames)
    exact = _against_reference(EvalInputs(frames, FPS, cams, K, "v", "c", reference=truth), None, [])
    assert exact["reference_psnr"]["value"] == 100.0 and exact["reference_ssim"]["value"] == pytest.approx(1.0)
    noisy = np.clip(truth.astype(int) + np.random.default_rng(0).integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
    worse = _against_reference(EvalInputs(frames, FPS, cams, K, "v", "c", reference=noisy), None, [])
    assert worse["reference_psnr"]["value"] < 30 and worse["reference_ssim"]["value"] < 0.9
    (folder / "0000.png").unlink()
    with pytest.raises(InputError, match="holds 32 images; the video has 33 frames"):
        _reference(folder, frames)


@pytest.mark.parametrize("points", [3, 10, 200])
def test_similarity_fit_recovers_a_random_similarity(points):
    from mirage_cli.evaluation.trajectory_error import similarity_fit

    rng = np.random.default_rng(points)
    for _ in range(5):
        R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        R *= np.linalg.det(R)  # a rotation, not a reflection
        scale, shift = float(rng.uniform(0.1, 10)), rng.normal(size=3)
        source = rng.normal(size=(points, 3))
        s, R_fit, t = similarity_fit(source, scale * source @ R.T + shift)
        assert s == pytest.approx(scale) and np.allclose(R_fit, R, atol=1e-9) and np.allclose(t, shift, atol=1e-9)


def _lift(depth, K, world_from_cam, stride=16):
    """Points on a grid of ``stride`` pixels (latent cells) lifted with the exact depth, as the memory holds them."""
    H, W = depth.shape
    ys, xs = np.mgrid[stride // 2 : H : stride, stride // 2 : W : stride]
    z = depth[ys, xs]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64) @ np.linalg.inv(K).T
    world = (rays * z[..., None]).reshape(-1, 3) @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
    return world, (z * (stride / 2) / K[0, 0]).reshape(-1)


def test_depth_from_memory_points_matches_the_true_depth(scene):
    from mirage_cli.evaluation.memory_depth import depth_from_points

    frames, cams, K, depth = scene
    lifted = [_lift(depth[n], K[n], cams[n]) for n in (0, 8, 16)]
    xyz, radius = np.concatenate([p[0] for p in lifted]), np.concatenate([p[1] for p in lifted])
    seen = depth_from_points(xyz, radius, cams, K, (H, W))
    covered = np.isfinite(seen)
    assert covered.mean() > 0.9
    assert np.median(np.abs(seen[covered] - depth[covered]) / depth[covered]) < 0.03  # a cell's nearest point, 16 px cells
    exact, from_memory = run(frames, cams, K, depth=depth), run(frames, cams, K, depth=seen)
    assert from_memory["reprojection_error"] < exact["reprojection_error"] + 0.2
    with pytest.raises(ValueError, match="xyz"):
        depth_from_points(xyz[:, :2], radius, cams, K, (H, W))


def _random_lpips_weights(folder):
    """Random AlexNet and LPIPS weights under the real file names (the real ones cannot be downloaded here)."""
    import torch

    from mirage_cli.evaluation.lpips import BACKBONE_FILE, LINEAR_FILE, AlexNetTaps

    torch.manual_seed(0)
    folder.mkdir()
    torch.save(AlexNetTaps().state_dict(), folder / BACKBONE_FILE)
    linear = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(linear, folder / LINEAR_FILE)


def test_lpips_from_local_weights_and_the_page(tmp_path, scene, monkeypatch):
    frames, cams, K, _ = scene
    frames, cams, K = frames[:6], cams[:6], K[:6]
    video, camera = tmp_path / "video.mkv", tmp_path / "camera.json"
    write_lossless(video, frames, FPS)
    write_canonical_json(camera, Trajectory(cams, K, W, H, FPS))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no weights anywhere: skipped with a note
    skipped = cli("eval", video, "--camera", camera, "--reference", video, "--json")
    assert skipped.exit_code == 0 and "LPIPS skipped" in skipped.stderr
    assert "reference_lpips" not in json.loads(skipped.stdout)["metrics"]
    _random_lpips_weights(tmp_path / "lpips")
    same = cli("eval", video, "--camera", camera, "--reference", video, "--lpips", tmp_path / "lpips", "--json",
               "--html", tmp_path / "eval.html")
    assert same.exit_code == 0, same.stderr
    assert json.loads(same.stdout)["metrics"]["reference_lpips"]["value"] == pytest.approx(0.0, abs=1e-6)
    page = (tmp_path / "eval.html").read_text()
    assert "reference_lpips" in page and page.count("data:image/png;base64") == 2 and "Largest reprojection error" in page
    from mirage_cli.evaluation.lpips import find_weights, load_lpips, lpips_distances

    metric = load_lpips(find_weights(tmp_path / "lpips"))
    rng = np.random.default_rng(0)
    distances = [lpips_distances(metric, frames, np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)).mean()
                 for sigma in (2, 10, 40)]
    assert 0 < distances[0] < distances[1] < distances[2]
    bad = cli("eval", video, "--camera", camera, "--reference", video, "--lpips", tmp_path / "nowhere")
    assert bad.exit_code == 2 and "--lpips" in bad.stderr


def test_the_3d_check_with_a_metric_depth_model(tmp_path, scene, tiny_depth_dir):
    """A local tiny metric Depth Anything (random weights: its depth is wrong, the path through it is real)."""
    import shutil

    frames, cams, K, _ = scene
    video, camera = tmp_path / "video.mkv", tmp_path / "camera.json"
    write_lossless(video, frames[:4], FPS)
    write_canonical_json(camera, Trajectory(cams[:4], K[:4], W, H, FPS))
    result = cli("eval", video, "--camera", camera, "--depth-model", tiny_depth_dir, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["depth"] == f"the metric depth model {tiny_depth_dir}" and doc["metrics"]["reprojection_error"]["value"] is not None
    relative = tmp_path / "relative"
    shutil.copytree(tiny_depth_dir, relative)
    config = json.loads((relative / "config.json").read_text())
    (relative / "config.json").write_text(json.dumps({**config, "depth_estimation_type": "relative"}))
    refused = cli("eval", video, "--camera", camera, "--depth-model", relative)
    assert refused.exit_code == 2 and "is a relative depth model" in refused.stderr


def test_run_json_gives_the_chunk_boundaries_and_refuses_what_would_loop(tmp_path):
    from mirage_cli.base.errors import InputError
    from mirage_cli.evaluation.run_config import run_chunks

    def boundaries(config):
        (tmp_path / "run.json").write_text(json.dumps({"fingerprint": "0", "config": config}))
        return run_chunks(tmp_path).boundaries

    assert boundaries({"frames": 17, "chunk_frames": 9}) == [8]
    assert boundaries({"frames": 33, "chunk_frames": 9, "first_chunk_frames": 13}) == [12, 20, 28]
    assert boundaries({"frames": 9, "chunk_frames": 9}) == []
    for config, message in [({"frames": 17, "chunk_frames": 1}, "config.chunk_frames: must be 4k+1"),
                            ({"frames": 1e12, "chunk_frames": 9}, "config.frames: must be a whole number"),
                            ({"frames": 10**12 + 1, "chunk_frames": 9}, "config.frames: must be between 1 and"),
                            ({"frames": 17, "chunk_frames": 9, "first_chunk_frames": 0}, "config.first_chunk_frames")]:
        with pytest.raises(InputError, match=re.escape(message)):
            boundaries(config)


def test_a_depth_file_keeps_only_its_usable_values(tmp_path):
    from mirage_cli.base.errors import InputError
    from mirage_cli.evaluation.depth_file import read_depth

    depth = np.full((2, 32, 32), 2.0, np.float32)
    depth[0, :16], depth[1, :8], depth[1, 8:16] = np.nan, -1.0, 1e9  # half of every map unusable
    np.save(tmp_path / "d.npy", np.asfortranarray(depth.astype(np.float64)))
    kept, share = read_depth(tmp_path / "d.npy", (2, 32, 32))
    assert share == pytest.approx(0.5) and kept.dtype == np.float32
    assert np.isnan(kept[:, :16]).all() and (kept[:, 16:] == 2.0).all()
    depth[:] = np.nan
    depth[0, 0, 0] = 2.0  # one usable value of 2,048: under 1%
    np.save(tmp_path / "d.npy", depth)
    with pytest.raises(InputError, match=r"--depth: has usable depth .* at 0\.0% of its values; at least 1% is needed"):
        read_depth(tmp_path / "d.npy", (2, 32, 32))
