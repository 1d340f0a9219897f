"""`mirage render` end to end with tiny real Wan2.2 components on the CPU.

The tiny preset builds random AutoencoderKLWan / WanTransformer3DModel from the real diffusers
classes (the real weights cannot be downloaded here); everything else is the real pipeline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mirage_cli.video import probe_mp4, read_mp4

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "room" / "scene.yaml"
FAST = ["--preset", "tiny", "--steps", "3", "--quiet"]


def mirage(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirage_cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """One tiny render per memory mode (module scope: the tests below read them)."""
    base = tmp_path_factory.mktemp("renders")
    out = {}
    for mode in ("latent", "rgb", "none"):
        run = base / mode
        proc = mirage("render", str(EXAMPLE), "--out", str(run), "--memory", mode, "--json", *FAST)
        assert proc.returncode == 0, proc.stderr
        out[mode] = (run, json.loads(proc.stdout))
    return out


@pytest.mark.parametrize("mode", ["latent", "rgb", "none"])
def test_render_writes_video_of_the_right_shape(renders, mode):
    run, summary = renders[mode]
    info = probe_mp4(run / "video.mp4")
    assert info == {"frames": 33, "fps": 8.0, "width": 448, "height": 256}
    assert summary["frames"] == 33 and summary["chunks"] == 2
    assert sorted(p.name for p in (run / "segments").iterdir()) == ["chunk_0000.mp4", "chunk_0001.mp4"]
    assert (run / "report.json").exists() and (run / "report.html").exists()
    assert (run / "spec.resolved.yaml").exists() and (run / "run.json").exists()


@pytest.mark.parametrize("mode", ["latent", "rgb"])
def test_report_records_what_the_memory_did(renders, mode):
    from jsonschema import Draft202012Validator

    from mirage_cli.report import load_schema

    run, _ = renders[mode]
    report = json.loads((run / "report.json").read_text())
    Draft202012Validator(load_schema()).validate(report)
    chunks = report["chunks"]
    assert [c["index"] for c in chunks] == [0, 1]
    for c in chunks:
        assert c["cache_points"] > 0 and c["cache_bytes"] > 0
        assert 0.0 < c["memory_coverage"] <= 1.0
        assert c["pinned_tokens"] >= 0
        assert c["stages"]["checkpoint_write"] > 0 and c["stages"]["denoise"] > 0
    # The path returns to its start view in chunk 1: the memory covers a good part of it.
    assert chunks[1]["memory_coverage"] > 0.3


def test_latent_cache_is_much_smaller_than_rgb(renders):
    lat = json.loads((renders["latent"][0] / "report.json").read_text())["summary"]["cache_bytes"]
    rgb = json.loads((renders["rgb"][0] / "report.json").read_text())["summary"]["cache_bytes"]
    assert rgb > 20 * lat


def test_memory_changes_the_video(renders):
    a, _ = read_mp4(renders["latent"][0] / "video.mp4")
    b, _ = read_mp4(renders["none"][0] / "video.mp4")
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def test_same_seed_same_video(renders, tmp_path):
    run = tmp_path / "again"
    proc = mirage("render", str(EXAMPLE), "--out", str(run), "--memory", "latent", *FAST)
    assert proc.returncode == 0, proc.stderr
    a, _ = read_mp4(renders["latent"][0] / "video.mp4")
    b, _ = read_mp4(run / "video.mp4")
    assert np.array_equal(a, b)


def test_rerun_of_finished_render_is_a_no_op(renders):
    run, _ = renders["none"]
    proc = mirage("render", str(EXAMPLE), "--out", str(run), "--memory", "none", "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["already_complete"] is True


def test_changed_setting_is_refused_then_restart_accepted(renders, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(renders["none"][0], run)
    proc = mirage("render", str(EXAMPLE), "--out", str(run), "--memory", "none", "--seed", "7", *FAST)
    assert proc.returncode == 2 and "seed" in proc.stderr and "--restart" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_dir_is_exit_2(tmp_path):
    proc = mirage("render", str(EXAMPLE), "--out", str(tmp_path / "r"), "--model", str(tmp_path / "nope"), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "nope" in proc.stderr


def test_no_depth_and_no_depth_model_is_exit_2(tmp_path):
    import shutil

    import yaml

    for name in ("scene.yaml", "start.png"):
        shutil.copy(EXAMPLE.parent / name, tmp_path / name)
    spec = yaml.safe_load((tmp_path / "scene.yaml").read_text())
    spec["depth"] = None
    (tmp_path / "scene.yaml").write_text(yaml.safe_dump(spec))
    proc = mirage("render", str(tmp_path / "scene.yaml"), "--out", str(tmp_path / "r"), *FAST)
    assert proc.returncode == 2
    assert "depth" in proc.stderr and "Traceback" not in proc.stderr


def test_saved_tiny_model_renders_through_model_dir(tmp_path):
    from mirage_cli.backbone import save_tiny_model

    model_dir = tmp_path / "tiny-model"
    save_tiny_model(model_dir)
    run = tmp_path / "run"
    proc = mirage("render", str(EXAMPLE), "--out", str(run), "--model", str(model_dir), "--device", "cpu",
                  "--dtype", "float32", "--steps", "2", "--memory", "latent", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert probe_mp4(run / "video.mp4")["frames"] == 33


def test_incomplete_model_dir_names_what_is_missing(tmp_path):
    from mirage_cli.backbone import save_tiny_model

    model_dir = tmp_path / "tiny-model"
    save_tiny_model(model_dir)
    for f in (model_dir / "transformer").glob("*.safetensors"):
        f.unlink()
    proc = mirage("render", str(EXAMPLE), "--out", str(tmp_path / "r"), "--model", str(model_dir), "--device", "cpu", "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "transformer" in proc.stderr and "Traceback" not in proc.stderr


def test_trace_writes_a_chrome_trace(tmp_path):
    trace = tmp_path / "trace"
    proc = mirage("render", str(EXAMPLE), "--out", str(tmp_path / "r"), "--trace", str(trace), "--memory", "none",
                  "--preset", "tiny", "--steps", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    files = list(trace.glob("*.json"))
    assert len(files) == 1
    assert "traceEvents" in json.loads(files[0].read_text())


def test_render_with_a_depth_model(tmp_path, tiny_depth_dir):
    """New frames' depth from a (tiny, random, saved locally) Depth Anything model, aligned to the memory."""
    run = tmp_path / "r"
    proc = mirage("render", str(EXAMPLE), "--out", str(run), "--depth-model", str(tiny_depth_dir), *FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["stages"]["depth_estimation"]["calls"] >= 2
    assert report["chunks"][-1]["cache_points"] > 0
