"""The tiny depth model (``depth_model: tiny``, brought by ``--preset tiny``): a user's own image with no
depth map renders and previews offline on the CPU. Real transformers classes with random weights."""

from __future__ import annotations

import pytest
import torch
import yaml
from PIL import Image
from render_helpers import EXAMPLE, cli

from mirage_cli.base.errors import InputError
from mirage_cli.depth.providers import DEPTH_KIND_METRIC, depth_model_problem, make_depth_provider
from mirage_cli.depth.scene_scale import depth_model_kind
from mirage_cli.depth.tiny import TINY_MAX_DEPTH, build_tiny_depth_model
from mirage_cli.render.inputs import load_image
from mirage_cli.spec.plan import load_plan


def own_scene(folder, **changes):
    """A spec for an image of the user's own (no `depth:`, no `depth_model:`), small."""
    Image.open(EXAMPLE.parent / "start.png").convert("RGB").save(folder / "photo.jpg")
    spec = {"prompt": "a courtyard", "image": "photo.jpg", "camera": {"preset": "orbit"}, "frames": 17,
            "resolution": "224x128", "chunk_frames": 9, **changes}
    path = folder / "scene.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tiny_depth_model_is_seeded_and_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = build_tiny_depth_model(0), build_tiny_depth_model(0)
    assert torch.equal(torch.random.get_rng_state(), before)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    c = build_tiny_depth_model(1)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


def test_tiny_depth_is_positive_and_varies_over_the_image():
    provider = make_depth_provider("tiny", torch.device("cpu"))
    assert provider.kind == DEPTH_KIND_METRIC and depth_model_kind("TINY") == DEPTH_KIND_METRIC
    assert depth_model_problem("tiny") is None
    image = load_image(EXAMPLE.parent / "start.png", 224, 128)
    depth = provider.estimate(image[None])[0]
    assert depth.shape == (128, 224) and bool(torch.isfinite(depth).all())
    assert float(depth.min()) > 0 and float(depth.max()) < TINY_MAX_DEPTH
    assert float(depth.std() / depth.mean()) > 0.05  # not a constant depth (transformers' own init gives one)


def test_preset_tiny_brings_the_tiny_depth_model_unless_one_is_named(tmp_path):
    spec = own_scene(tmp_path)
    assert load_plan(spec, preset="tiny").depth_model == "tiny"
    assert load_plan(spec).depth_model != "tiny"  # the default model, a download
    assert load_plan(spec, overrides={"depth_model": "none"}, preset="tiny").depth_model == "none"
    named = own_scene(tmp_path, depth_model="depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf")
    assert load_plan(named, preset="tiny").depth_model == "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"
    with pytest.raises(InputError, match="unknown preset 'huge'"):
        load_plan(spec, preset="huge")


def test_own_image_renders_and_previews_offline_with_the_tiny_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = own_scene(tmp_path)
    checked = cli("validate", spec, "--preset", "tiny")
    assert checked.exit_code == 0, checked.output
    assert "depth model tiny" in checked.stdout
    preview = cli("preview", spec, "--preset", "tiny", "--out", tmp_path / "preview.mp4")
    assert preview.exit_code == 0, preview.output
    run = tmp_path / "run"
    done = cli("render", spec, "--preset", "tiny", "--steps", "2", "--quiet", "--out", run)
    assert done.exit_code == 0, done.output
    assert (run / "video.mp4").stat().st_size > 0
    assert yaml.safe_load((run / "spec.resolved.yaml").read_text())["depth_model"] == "tiny"


def test_the_tiny_depth_model_measures_nothing_so_eval_refuses_it(tmp_path):
    result = cli("eval", tmp_path, "--depth-model", "tiny")
    assert result.exit_code == 2
    assert "random weights" in result.output and "Traceback" not in result.output


def test_without_the_preset_an_uncached_depth_model_offline_names_the_tiny_try_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = own_scene(tmp_path)
    result = cli("preview", spec, "--out", tmp_path / "p.mp4")
    assert result.exit_code == 2
    assert "--preset tiny" in result.output
