"""Scene scale on exact data: the synthetic room exported as a COLMAP text model (cameras, images with
their 2D-3D observations, points3D) at a random scale, read by the real spec loader and pycolmap; its
start frame's depth handed to the fit as a relative map (an affine transform of inverse depth) and as
a metric map of the wrong scale. The depth model's output is stood in for by those maps (its weights
cannot exist here); a tiny local Depth Anything with random weights runs the model path itself."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml
from render_helpers import EXAMPLE, cli

from mirage_cli.camera.rotations import matrix_to_quat
from mirage_cli.depth.providers import DEPTH_KIND_METRIC, DEPTH_KIND_RELATIVE_INVERSE, DepthAligner
from mirage_cli.render.prepare import estimate_intrinsics
from mirage_cli.spec.plan import load_plan
from mirage_cli.testing import synthetic_room as S

H, W = 128, 224


def room_views(n: int = 5):
    cams = np.stack([S.world_from_cam((0.05 * t, 0.0, 0.1 * t), yaw_deg=5 * t) for t in range(n)])
    K = S.intrinsics(H, W)
    rgb, depth = S.render_views(K, cams, H, W)
    return cams, K, rgb, depth.numpy().astype(np.float64)


def write_colmap_text(folder, cams, K, depth0, scale: float, outliers: float = 0.0, seed: int = 0) -> int:
    """The room's cameras as a COLMAP text model in units ``scale`` times the room's, with 3D points
    lifted from the first frame's exact depth on an 8-pixel grid and observed by the first image
    (a share ``outliers`` of them moved to random depths). Returns the number of points."""
    folder.mkdir(parents=True)

    def n(*values) -> str:
        return " ".join(repr(float(v)) for v in values)

    (folder / "cameras.txt").write_text(f"1 PINHOLE {W} {H} {n(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5)}\n")  # corner origin
    ys, xs = np.mgrid[4:H:8, 4:W:8]
    z = depth0[ys, xs].ravel()
    rng = np.random.default_rng(seed)
    bad = rng.random(len(z)) < outliers
    z = np.where(bad, z * rng.uniform(0.3, 3.0, len(z)), z)
    rays = np.stack([xs.ravel(), ys.ravel(), np.ones(len(z))], 1) @ np.linalg.inv(K).T
    world = (rays * z[:, None]) @ cams[0][:3, :3].T + cams[0][:3, 3]
    lines = []
    for i, wfc in enumerate(cams):
        cfw = np.linalg.inv(wfc)
        q = matrix_to_quat(cfw[:3, :3])
        t = cfw[:3, 3] * scale
        lines.append(f"{i + 1} {n(*q)} {n(*t)} 1 frame_{i:03d}.png")
        lines.append(" ".join(f"{n(x + 0.5, y + 0.5)} {k + 1}" for k, (x, y) in enumerate(zip(xs.ravel(), ys.ravel(), strict=True)))
                     if i == 0 else "")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    points = [f"{k + 1} {n(*(p * scale))} 128 128 128 0.5 1 {k}" for k, p in enumerate(world)]
    (folder / "points3D.txt").write_text("\n".join(points) + "\n")
    return len(points)


def scene_with(tmp_path, camera: dict, depth: bool = False, depth_model: str | None = "none-yet", frames: int = 5):
    spec = yaml.safe_load((EXAMPLE).read_text())
    spec.update(image=str(EXAMPLE.parent / "start.png"), resolution=f"{W}x{H}", frames=frames, chunk_frames=frames,
                depth=str(EXAMPLE.parent / "depth.npy") if depth else None, camera=camera)
    spec.pop("depth_model", None)  # the example's is none (it gives a depth map)
    if depth_model != "none-yet":
        spec["depth_model"] = depth_model
    path = tmp_path / "scene.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class GivenDepth:
    """Stands in for a depth model: returns the map it was built with (real weights cannot exist here)."""

    def __init__(self, estimate: torch.Tensor, kind: str):
        self.estimate_map, self.kind, self.name = estimate, kind, "given"

    def estimate(self, frames):
        return self.estimate_map[None].float()


@pytest.fixture(scope="module")
def room():
    return room_views()


@pytest.mark.parametrize("outliers, tolerance", [(0.0, 0.01), (0.10, 0.02)])
def test_colmap_points_fix_the_scale_of_relative_and_metric_depth(tmp_path, room, outliers, tolerance):
    cams, K, _, depth = room
    scale = float(np.random.default_rng(7).uniform(0.2, 5.0))
    write_colmap_text(tmp_path / "sparse", cams, K, depth[0], scale, outliers=outliers)
    plan = load_plan(scene_with(tmp_path, {"colmap": "sparse"}, depth_model="some/relative-model"))
    assert plan.scale.source == "COLMAP points" and len(plan.scale.points_z) > 300
    truth = torch.from_numpy(depth[0] * scale)  # the true depth in the path's units
    covered = truth > 0
    relative = 0.7 / torch.from_numpy(depth[0]) + 0.05  # what a relative model outputs: affine in inverse depth
    wrong_metric = torch.from_numpy(depth[0]) * 2.7  # a metric model in the wrong units
    for estimate, kind in ((relative, DEPTH_KIND_RELATIVE_INVERSE), (wrong_metric, DEPTH_KIND_METRIC)):
        fitted = DepthAligner(GivenDepth(estimate, kind), (H, W)).start_depth(torch.zeros(3, H, W), plan.scale).double()
        error = ((fitted - truth).abs() / truth)[covered]
        assert float(error.median()) < tolerance and float(error.quantile(0.9)) < 2 * tolerance, (kind, float(error.median()))


def test_refusals_and_explicit_choices(tmp_path, room):
    cams, K, _, depth = room
    write_colmap_text(tmp_path / "sparse", cams, K, depth[0], 1.0)
    (tmp_path / "sparse" / "points3D.txt").write_text("")  # a model without points: arbitrary scale
    refused = cli("validate", scene_with(tmp_path, {"colmap": "sparse"}))
    assert refused.exit_code == 2 and "camera.scale: the colmap path has an arbitrary scale" in refused.stderr
    assumed = load_plan(scene_with(tmp_path, {"colmap": "sparse", "scale": "assume-median-depth"}))
    assert assumed.scale.source == "assumed median depth" and assumed.scale.median_depth == 1.0
    stated = load_plan(scene_with(tmp_path, {"colmap": "sparse", "scale": 2.5}))
    plain = load_plan(scene_with(tmp_path, {"colmap": "sparse", "scale": "assume-median-depth"}))
    assert stated.scale.source == "explicit scale"
    assert np.allclose(stated.trajectory.world_from_cam[:, :3, 3], 2.5 * plain.trajectory.world_from_cam[:, :3, 3])
    keyframes = {"keyframes": [{"frame": 0, "position": [0, 0, 0]}, {"frame": 4, "position": [0, 0, 1]}]}
    metric = load_plan(scene_with(tmp_path, keyframes))  # keyframes are metres: a metric depth model by default
    assert metric.scale.source == "metric model" and "Metric" in metric.depth_model
    bad = cli("validate", scene_with(tmp_path, {**keyframes, "units": "feet", "scale": -1}))
    assert bad.exit_code == 2 and "camera.units: must be one of metres, arbitrary" in bad.stderr and "camera.scale: must be" in bad.stderr
    with_depth = cli("validate", scene_with(tmp_path, {"colmap": "sparse"}, depth=True, depth_model="none"))
    assert with_depth.exit_code == 0 and "scale       depth file" in with_depth.stdout and "median" in with_depth.stdout


def test_relative_model_with_a_metric_path_is_refused(tmp_path, tiny_depth_dir):
    import json
    import shutil

    relative = tmp_path / "relative-depth"
    shutil.copytree(tiny_depth_dir, relative)
    config = json.loads((relative / "config.json").read_text())
    (relative / "config.json").write_text(json.dumps({**config, "depth_estimation_type": "relative"}))
    keyframes = {"keyframes": [{"frame": 0, "position": [0, 0, 0]}, {"frame": 4, "position": [0, 0, 5]}]}
    assert load_plan(scene_with(tmp_path, keyframes, depth_model=str(tiny_depth_dir))).scale.source == "metric model"
    refused = cli("validate", scene_with(tmp_path, keyframes, depth_model=str(relative)))
    assert refused.exit_code == 2 and "is a relative depth model but the camera path is in metres" in refused.stderr


def test_validate_shows_the_scale_and_warns_about_a_path_far_larger_than_the_scene(tmp_path, room, tiny_depth_dir):
    cams, K, _, depth = room
    far = cams.copy()
    far[:, :3, 3] *= 40  # the path in other units than the points
    write_colmap_text(tmp_path / "sparse", far, K, depth[0], 1.0)
    shown = cli("validate", scene_with(tmp_path, {"colmap": "sparse"}, depth_model=str(tiny_depth_dir)))
    assert shown.exit_code == 0, shown.stderr
    assert "scale       COLMAP points" in shown.stdout and "warning   one chunk moves the camera" in shown.stdout


def test_the_model_path_with_a_tiny_local_depth_model(tmp_path, room, tiny_depth_dir):
    """The start depth through a real (tiny, random) Depth Anything fitted to the COLMAP points."""
    from mirage_cli.depth.providers import TransformersDepth

    cams, K, rgb, depth = room
    write_colmap_text(tmp_path / "sparse", cams, K, depth[0], 3.0)
    plan = load_plan(scene_with(tmp_path, {"colmap": "sparse"}, depth_model=str(tiny_depth_dir)))
    aligner = DepthAligner(TransformersDepth(str(tiny_depth_dir), torch.device("cpu")), (H, W))
    fitted = aligner.start_depth(rgb[0].float(), plan.scale)
    assert fitted.shape == (H, W) and torch.isfinite(fitted).all()
    assert float(fitted[fitted > 0].median()) == pytest.approx(float(np.median(plan.scale.points_z)), rel=0.5)
    from mirage_cli.render.preview import preview_scene

    shown = preview_scene(scene_with(tmp_path, {"colmap": "sparse"}, depth_model=str(tiny_depth_dir)), tmp_path / "preview.mp4")
    assert shown["scale"].startswith("COLMAP points") and shown["frames"] == 5  # the depth the render will use


def tiny_depth_pro(folder, horizontal_fov: float | None):
    """A tiny DepthPro (real transformers classes, random weights) saved locally; its FoV head's last
    layer is set to answer ``horizontal_fov`` degrees for any image (random weights answer nonsense)."""
    from transformers import DepthProConfig, DepthProForDepthEstimation, Dinov2Config

    sub = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=16)
    config = DepthProConfig(
        fusion_hidden_size=16, patch_size=64, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[16, 16],
        scaled_images_ratios=[0.5, 1.0], scaled_images_overlap_ratios=[0.0, 0.25], scaled_images_feature_dims=[16, 16],
        use_fov_model=True, num_fov_head_layers=1, image_model_config=Dinov2Config(**sub), patch_model_config=Dinov2Config(**sub),
        fov_model_config=Dinov2Config(**sub))
    torch.manual_seed(0)
    model = DepthProForDepthEstimation(config)
    if horizontal_fov is not None:
        last = [m for m in model.fov_model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, horizontal_fov)
    model.save_pretrained(folder)
    return folder


def test_intrinsics_auto_takes_the_focal_length_from_depth_pro(tmp_path, monkeypatch):
    import json
    import math

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tiny_depth_pro(tmp_path / "depth-pro", 70.0)
    keyframes = {"keyframes": [{"frame": 0, "position": [0, 0, 0]}, {"frame": 4, "position": [0, 0, 1]}]}
    spec = scene_with(tmp_path, keyframes, depth=True, depth_model="none")
    text = spec.read_text().replace("intrinsics:", "intrinsics_old:")
    spec.write_text(yaml.safe_dump({**yaml.safe_load(text.replace("intrinsics_old:", "intrinsics:")), "intrinsics": {"auto": str(model)}}))
    pending = load_plan(spec)  # loading the spec runs no model: the path waits for the estimate
    assert pending.intrinsics_auto.model == str(model) and pending.trajectory is None and pending.intrinsics_estimate is None
    assert not (tmp_path / "cache").exists()
    plan = estimate_intrinsics(pending)
    estimate = plan.intrinsics_estimate
    assert estimate["horizontal_fov_deg"] == pytest.approx(70.0, abs=1e-3)
    # the example image is 448x256, the render 224x128 (same aspect): f = 0.5 * 224 / tan(35 deg)
    assert estimate["focal_px"] == pytest.approx(0.5 * W / math.tan(math.radians(35)), rel=1e-4)
    assert np.allclose(plan.trajectory.K[:, 0, 0], estimate["focal_px"])  # one K for the path, the memory, the depth
    assert list((tmp_path / "cache" / "mirage" / "fov").glob("*.json"))  # estimated once, read back after
    assert estimate_intrinsics(load_plan(spec)).intrinsics_estimate == estimate
    shown = cli("validate", spec)  # validate runs the estimate after loading the spec, and shows it
    assert shown.exit_code == 0 and "intrinsics  estimated by" in shown.stdout and "horizontal fov 70.0 deg" in shown.stdout
    from render_helpers import SMALL, write_small_scene

    small = write_small_scene(tmp_path / "small", intrinsics={"auto": str(model)})
    assert cli("render", small, "--out", tmp_path / "run", *SMALL).exit_code == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["config"]["intrinsics_estimate"]["horizontal_fov_deg"] == pytest.approx(70.0, abs=1e-3)  # the report states it
    nonsense = tiny_depth_pro(tmp_path / "depth-pro-random", None)
    spec.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "intrinsics": {"auto": str(nonsense)}}))
    refused = cli("validate", spec)
    assert refused.exit_code == 2 and "estimates a horizontal field of view of" in refused.stderr


def test_loading_a_spec_with_intrinsics_auto_imports_and_runs_no_model(tmp_path):
    """``load_plan`` only reads files and raises (issue: a spec that loads without running a model): in a
    fresh process, loading a spec with ``intrinsics: auto`` leaves transformers and the field-of-view
    model's code unimported, writes no cache, and says what waits for the model."""
    import subprocess
    import sys

    keyframes = {"keyframes": [{"frame": 0, "position": [0, 0, 0]}, {"frame": 4, "position": [0, 0, 1]}]}
    spec = scene_with(tmp_path, keyframes, depth=True, depth_model="none")
    spec.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "intrinsics": {"auto": str(tmp_path / "no-such-model")}}))
    probe = (
        "import sys, json\n"
        "from mirage_cli.spec.plan import load_plan\n"
        f"plan = load_plan({str(spec)!r})\n"
        "print(json.dumps({'transformers': 'transformers' in sys.modules, 'model': plan.intrinsics_auto.model,\n"
        "                  'trajectory': plan.trajectory is None, 'scale': plan.scale is None}))\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"transformers": False, "model": str(tmp_path / "no-such-model"), "trajectory": True, "scale": True}
    assert not (tmp_path / "cache").exists()
    # the model stage is where a missing model is found: one line naming the field, exit 2
    refused = cli("validate", spec)
    assert refused.exit_code == 2 and "intrinsics" in refused.stderr and "Traceback" not in refused.stderr
