"""`mirage render` end to end with tiny real Wan2.2 components on the CPU.

The tiny preset builds random AutoencoderKLWan / WanTransformer3DModel from the real diffusers
classes (the real weights cannot be downloaded here); everything else is the real pipeline. The
renders run the real CLI in-process (tests/render_helpers.py); the session-wide ``renders`` fixture
(conftest.py) holds one render per memory mode.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from render_helpers import EXAMPLE, SMALL, child, cli, file_hash, final_checkpoint_tensors, same_tensors, write_small_scene

from mirage_cli.base.video import probe_video, read_video


@pytest.mark.parametrize("mode", ["latent", "rgb", "none"])
def test_render_writes_video_of_the_right_shape(renders, mode):
    run, summary = renders[mode]
    assert probe_video(run / "video.mp4") == {"frames": 17, "fps": 8.0, "width": 224, "height": 128}
    assert summary["frames"] == 17 and summary["chunks"] == 2
    assert sorted(p.name for p in (run / "segments").iterdir()) == ["chunk_0000.mp4", "chunk_0001.mp4"]
    # chunk 1 is written without the frame it shares with chunk 0, so the segments tile the video
    assert [probe_video(run / "segments" / f"chunk_000{i}.mp4")["frames"] for i in (0, 1)] == [9, 8]
    assert sorted(p.name for p in (run / "latents").iterdir()) == ["chunk_0000.safetensors", "chunk_0001.safetensors"]
    assert (run / "report.json").exists() and (run / "report.html").exists()
    assert (run / "spec.resolved.yaml").exists() and (run / "run.json").exists()


def test_video_is_the_segments_packets_joined(renders):
    run, _ = renders["latent"]
    joined, _ = read_video(run / "video.mp4")
    parts = [read_video(run / "segments" / f"chunk_000{i}.mp4")[0] for i in (0, 1)]
    assert np.array_equal(joined, np.concatenate(parts))


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
        assert c["stages"]["denoise"] > 0
        # the chunk's files and checkpoint are written behind the next chunk (mirage_cli.render.write_behind)
        assert c["stages"]["background_checkpoint_write"] > 0 and c["stages"]["background_write"] > 0
        assert c["stages"]["background_mp4_write"] > 0 and c["stages"]["background_outputs_write"] > 0
    assert report["stages"]["background_write"]["parent"] == "background"
    assert report["stages"]["background_mp4_write"]["parent"] == "background_write"
    # The path returns to its start view in chunk 1: the memory covers a good part of it.
    assert chunks[1]["memory_coverage"] > 0.3


def test_latent_cache_is_much_smaller_than_rgb(renders):
    lat = json.loads((renders["latent"][0] / "report.json").read_text())["summary"]["cache_bytes"]
    rgb = json.loads((renders["rgb"][0] / "report.json").read_text())["summary"]["cache_bytes"]
    assert rgb > 20 * lat


def test_memory_changes_the_video(renders):
    a, _ = read_video(renders["latent"][0] / "video.mp4")
    b, _ = read_video(renders["none"][0] / "video.mp4")
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def test_same_seed_same_bytes(renders, small_scene, tmp_path):
    """Two more renders of the same spec and seed: the same video.mp4 bytes and final checkpoint."""
    reference, _ = renders["latent"]
    for name in ("again", "and-again"):
        result = cli("render", small_scene, "--out", tmp_path / name, "--memory", "latent", *SMALL)
        assert result.exit_code == 0, result.stderr
        assert file_hash(tmp_path / name / "video.mp4") == file_hash(reference / "video.mp4")
        assert same_tensors(final_checkpoint_tensors(tmp_path / name), final_checkpoint_tensors(reference))


def test_rerun_of_finished_render_is_a_no_op(renders, small_scene):
    run, _ = renders["none"]
    result = cli("render", small_scene, "--out", run, "--memory", "none", "--json", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["already_complete"] is True


def test_changed_setting_is_refused_then_restart_accepted(renders, small_scene, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(renders["none"][0], run)
    result = cli("render", small_scene, "--out", run, "--memory", "none", "--seed", "7", *SMALL)
    assert result.exit_code == 2 and "seed" in result.stderr and "--restart" in result.stderr
    result = cli("render", small_scene, "--out", run, "--memory", "none", "--crf", "30", *SMALL)
    assert result.exit_code == 2 and "video.crf" in result.stderr  # the encoder settings change the bytes too
    result = cli("render", small_scene, "--out", run, "--memory", "none", "--seed", "7", "--restart", *SMALL)
    assert result.exit_code == 0, result.stderr


def test_outputs_for_pipelines(small_scene, tmp_path):
    """--frames (PNG), --lossless (FFV1 MKV), --crf / --encoder-preset, and the progress events."""
    from PIL import Image

    run, frames = tmp_path / "run", tmp_path / "frames"
    result = cli("render", small_scene, "--out", run, "--memory", "none", "--preset", "tiny", "--steps", "2", "--lossless",
                 "--frames", frames, "--crf", "23", "--encoder-preset", "veryfast", "--progress", "jsonl")
    assert result.exit_code == 0, result.stderr
    pngs = sorted(frames.iterdir())
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(17)]
    exact, _ = read_video(run / "video.mkv")
    assert np.array_equal(exact, np.stack([np.asarray(Image.open(p)) for p in pngs]))
    assert sorted(p.name for p in (run / "segments").iterdir()) == [
        "chunk_0000.mkv", "chunk_0000.mp4", "chunk_0001.mkv", "chunk_0001.mp4"]
    assert json.loads((run / "run.json").read_text())["config"]["video"] == {
        "crf": 23, "encoder_preset": "veryfast", "lossless": True, "frames_dir": str(frames.resolve())}
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every stderr line is one event
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and events[-1]["exit_code"] == 0
    assert events[0]["schema"] == "mirage-progress/1" and events[0]["frames"] == 17
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["chunk"], e["step"], e["steps"]) for e in steps] == [(0, 1, 2), (0, 2, 2), (1, 1, 2), (1, 2, 2)]
    assert kinds.count("chunk_start") == kinds.count("chunk_done") == 2
    assert [e["next_chunk"] for e in events if e["event"] == "checkpoint"] == [1, 2, 2]
    assert all(isinstance(e["t"], float) for e in events)
    # the saved latents of chunk 0 decode to exactly its frames (a user can re-decode without rendering)
    from safetensors import safe_open

    from mirage_cli.backbone import load_backbone
    from mirage_cli.base.options import BackboneOptions
    from mirage_cli.base.video import to_uint8_frames

    with safe_open(str(run / "latents" / "chunk_0000.safetensors"), "pt") as f:
        latents, meta = f.get_tensor("latents"), f.metadata()
    assert meta["format"] == "mirage-latents/1" and (meta["start_frame"], meta["end_frame"]) == ("0", "8")
    assert tuple(latents.shape) == (48, 3, 8, 14)  # [C, T, h, w]
    backbone = load_backbone(options=BackboneOptions(preset="tiny", device="cpu"))
    assert np.array_equal(to_uint8_frames(backbone.decode(latents[None])[0]), exact[:9])


def test_progress_jsonl_reports_bad_input_as_an_event(tmp_path):
    spec = write_small_scene(tmp_path, frames=30)
    result = cli("render", spec, "--out", tmp_path / "r", "--progress", "jsonl", *SMALL)
    assert result.exit_code == 2
    (event,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "failed" and event["exit_code"] == 2
    assert event["problems"][0]["field"] == "frames" and event["problems"][0]["file"] == str(spec)


def test_bad_encoder_settings_are_exit_2(small_scene, tmp_path):
    result = cli("render", small_scene, "--out", tmp_path / "r", "--crf", "99", "--encoder-preset", "warp", *SMALL)
    assert result.exit_code == 2
    assert "--crf: must be in 0..51" in result.stderr and "--encoder-preset" in result.stderr


def test_missing_model_dir_is_exit_2(small_scene, tmp_path):
    result = cli("render", small_scene, "--out", tmp_path / "r", "--model", tmp_path / "nope", "--quiet")
    assert result.exit_code == 2, result.stderr
    assert "nope" in result.stderr


def test_no_depth_and_no_depth_model_is_exit_2(tmp_path):
    spec = write_small_scene(tmp_path, depth=None)
    result = cli("render", spec, "--out", tmp_path / "r", *SMALL)
    assert result.exit_code == 2
    assert "depth" in result.stderr


def test_incomplete_model_dir_names_what_is_missing(tmp_path, small_scene):
    from mirage_cli.backbone import save_tiny_model

    model_dir = tmp_path / "tiny-model"
    save_tiny_model(model_dir)
    for f in (model_dir / "transformer").glob("*.safetensors"):
        f.unlink()
    result = cli("render", small_scene, "--out", tmp_path / "r", "--model", model_dir, "--device", "cpu", "--quiet")
    assert result.exit_code == 2, result.stderr
    assert "transformer" in result.stderr


def test_saved_model_depth_model_and_trace_in_a_child_process(tmp_path, small_scene, tiny_depth_dir):
    """One real child process: weights loaded from a saved model directory, new frames' depth from a
    (tiny, random, saved locally) Depth Anything model aligned to the memory, a Chrome trace."""
    from mirage_cli.backbone import save_tiny_model

    model_dir, run, trace = tmp_path / "tiny-model", tmp_path / "r", tmp_path / "trace"
    save_tiny_model(model_dir)
    proc = child("render", small_scene, "--out", run, "--model", model_dir, "--device", "cpu", "--dtype", "float32",
                 "--steps", "2", "--depth-model", tiny_depth_dir, "--trace", trace, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert probe_video(run / "video.mp4")["frames"] == 17
    report = json.loads((run / "report.json").read_text())
    assert report["stages"]["depth_estimation"]["calls"] >= 2
    assert report["chunks"][-1]["cache_points"] > 0
    (trace_file,) = trace.glob("*.json")
    assert "traceEvents" in json.loads(trace_file.read_text())


def test_the_example_spec_renders(tmp_path):
    """The README's example (448x256, 33 frames) through the same CLI, one step."""
    result = cli("render", EXAMPLE, "--out", tmp_path / "demo", "--preset", "tiny", "--steps", "1", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert probe_video(tmp_path / "demo" / "video.mp4")["frames"] == 33
