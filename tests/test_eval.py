"""``mirage eval`` on exact data: the synthetic room rendered along a camera path (exact geometry),
then the same video damaged the ways the metrics exist to catch. Real OpenCV, real video files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from render_helpers import cli

from mirage_cli import synthetic as S
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.camera.writers import write_canonical_json
from mirage_cli.evaluation.document import evaluate
from mirage_cli.evaluation.inputs import EvalInputs
from mirage_cli.video import write_lossless

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


def test_the_true_path_scores_near_perfect(scene):
    frames, cams, K, depth = scene
    m = run(frames, cams, K, boundaries=[16], depth=depth)
    assert m["reprojection_error"] < 0.5  # pixels: the flow is what the cameras and the depth imply
    assert m["rotation_error_median"] < 1.0 and m["rotation_error_p90"] < 1.5
    assert m["revisit_psnr"] > 35 and m["revisit_ssim"] > 0.95  # the return path sees exactly what the way out saw
    assert m["temporal_consistency"] > 0.8
    assert m["seam_ratio_max"] < 2.0


def test_damage_is_caught_by_the_metric_meant_for_it(scene):
    frames, cams, K, depth = scene
    good = run(frames, cams, K, boundaries=[16], depth=depth)
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
    assert any("no depth given" in note for note in doc["notes"])
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
    cases = [((video, "--camera", short), f"{short}: has {len(cams) - 1} cameras for a video of {len(cams)} frames"),
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


def test_against_reference_frames(tmp_path, scene):
    from PIL import Image

    from mirage_cli.errors import InputError
    from mirage_cli.evaluation.document import _against_reference
    from mirage_cli.evaluation.inputs import _reference

    frames, cams, K, _ = scene
    folder = tmp_path / "gt"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    truth = _reference(folder, frames)
    exact = _against_reference(EvalInputs(frames, FPS, cams, K, "v", "c", reference=truth))
    assert exact["reference_psnr"]["value"] == 100.0 and exact["reference_ssim"]["value"] == pytest.approx(1.0)
    noisy = np.clip(truth.astype(int) + np.random.default_rng(0).integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
    worse = _against_reference(EvalInputs(frames, FPS, cams, K, "v", "c", reference=noisy))
    assert worse["reference_psnr"]["value"] < 30 and worse["reference_ssim"]["value"] < 0.9
    (folder / "0000.png").unlink()
    with pytest.raises(InputError, match="holds 32 frames"):
        _reference(folder, frames)
