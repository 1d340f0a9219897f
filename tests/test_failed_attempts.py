"""A failed attempt does not block the next one (issue 30): bad inputs and a missing model are refused
before the run directory is written, and a run directory in which nothing was rendered is replaced by
the next attempt, with a warning, instead of being refused for "different settings"."""

from __future__ import annotations

import json

import pytest
from render_helpers import SMALL, cli

from mirage_cli.base.errors import InputError
from mirage_cli.render.session import RenderSession


def test_a_missing_model_leaves_no_run_directory(small_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    result = cli("render", small_scene, "--out", run, "--model", tmp_path / "no-such-model", "--quiet")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "model directory does not exist" in errors[0], result.stderr
    assert not run.exists()


def test_a_missing_start_image_leaves_no_run_directory(small_scene, tmp_path):
    spec = tmp_path / "scene.yaml"
    spec.write_text(small_scene.read_text().replace("start.png", "nowhere.png"))
    run = tmp_path / "run"
    result = cli("render", spec, "--out", run, *SMALL)
    assert result.exit_code == 2 and "nowhere.png" in result.stderr
    assert not run.exists()


def _fail_at_model_load(self, settings):
    """Where the weights load, the attempt fails (a model that breaks while loading: real weights
    cannot exist here). The run directory holds run.json and camera.json by then, nothing rendered."""
    raise InputError("the weights did not load", field="model")


def test_an_attempt_that_rendered_nothing_is_replaced_by_the_next(small_scene, tmp_path, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(RenderSession, "load_components", _fail_at_model_load)
        failed = cli("render", small_scene, "--out", run, "--preset", "tiny", "--steps", "4", "--quiet")
    assert failed.exit_code == 2 and (run / "run.json").is_file()
    done = cli("render", small_scene, "--out", run, *SMALL)  # other settings (3 steps), no --restart
    assert done.exit_code == 0, done.output
    assert "held an attempt with other settings (steps) that rendered nothing: this render replaces it" in done.stderr
    assert json.loads((run / "run.json").read_text())["config"]["steps"] == 3
    assert (run / "video.mp4").is_file()


@pytest.mark.parametrize("what", ["finished chunks", "a stopped chunk's steps"])
def test_rendered_work_is_still_refused_for_other_settings(small_scene, tmp_path, what):
    run = tmp_path / "run"
    assert cli("render", small_scene, "--out", run, *SMALL).exit_code == 0
    if what == "a stopped chunk's steps":  # only a checkpoint left: no segment, no latents, no video
        for sub in ("segments", "latents"):
            for f in (run / sub).iterdir():
                f.unlink()
        (run / "video.mp4").unlink()
    before = (run / "run.json").read_bytes()
    refused = cli("render", small_scene, "--out", run, "--preset", "tiny", "--steps", "4", "--quiet")
    assert refused.exit_code == 2
    assert "holds a render with different settings (steps); use --restart" in refused.stderr
    assert (run / "run.json").read_bytes() == before


def test_validate_says_which_models_are_here_as_warnings(small_scene, tmp_path, tiny_depth_dir, monkeypatch):
    """validate lists the model and the depth model with where each is; one that is not here is a warning
    (exit 0: specs are checked where the weights are not), and the render refuses it before writing."""
    from mirage_cli.backbone.random_components import save_tiny_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = save_tiny_model(tmp_path / "model")
    here = cli("validate", small_scene, "--model", model, "--depth-model", tiny_depth_dir)
    assert here.exit_code == 0 and "warning" not in here.stderr, here.output
    assert f"model {model}: here ({model})" in here.stdout and f"depth_model {tiny_depth_dir}: here" in here.stdout
    info = json.loads(cli("validate", small_scene, "--model", model, "--depth-model", tiny_depth_dir, "--json").stdout)
    assert [(m["role"], m["on_machine"]) for m in info["models"]] == [("model", True), ("depth_model", True)]

    missing = cli("validate", small_scene, "--depth-model", "nobody/no-depth-model")
    assert missing.exit_code == 0, missing.output
    assert "warning: model Wan-AI/Wan2.2-TI2V-5B-Diffusers is not on this machine" in missing.stderr
    assert "warning: depth_model nobody/no-depth-model is not on this machine" in missing.stderr
    assert "depth_model nobody/no-depth-model: NOT HERE" in missing.stdout

    run = tmp_path / "run"
    refused = cli("render", small_scene, "--model", model, "--depth-model", "nobody/no-depth-model", "--out", run, "--quiet")
    assert refused.exit_code == 2 and "nobody/no-depth-model" in refused.stderr
    assert not run.exists()
