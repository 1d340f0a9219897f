"""report.json / schema / report.html / Rich summary.

Two kinds of report: one from a real Profiler timing small torch work on the CPU, and a synthetic
one with numbers shaped like a GPU render of 4 chunks (``synthetic_report``; also used by
``python tests/test_report.py OUT_DIR`` to write a sample report for tools/screenshot_report.sh).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage_cli import report as R
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.profiling import profiler as P
from mirage_cli.rundir.layout import RunDir


def schema_problems(report) -> list[str]:
    """Every way ``report`` breaks the shipped JSON Schema, as "<json path>: <message>" (jsonschema)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(R.load_schema())
    return sorted(f"{error.json_path}: {error.message}" for error in validator.iter_errors(report))


def orbit_trajectory(n: int, width: int = 1280, height: int = 704, fps: float = 24.0) -> Trajectory:
    """A camera walking forward along a gentle S-curve while panning (OpenCV, looking along +z)."""
    t = np.linspace(0.0, 1.0, n)
    x = 1.5 * np.sin(2 * np.pi * t)
    z = 6.0 * t
    yaw = 0.5 * np.cos(2 * np.pi * t)  # heading follows the curve's slope, roughly
    world_from_cam = np.tile(np.eye(4), (n, 1, 1))  # [n, 4, 4]
    c, s = np.cos(yaw), np.sin(yaw)
    world_from_cam[:, 0, 0], world_from_cam[:, 0, 2] = c, s
    world_from_cam[:, 2, 0], world_from_cam[:, 2, 2] = -s, c
    world_from_cam[:, 0, 3], world_from_cam[:, 2, 3] = x, z
    world_from_cam[:, 1, 3] = -0.1 * np.sin(4 * np.pi * t)
    K = np.tile(np.array([[1000.0, 0, (width - 1) / 2], [0, 1000.0, (height - 1) / 2], [0, 0, 1]]), (n, 1, 1))
    return Trajectory(world_from_cam, K, width, height, fps)


def synthetic_report(num_chunks: int = 4, memory: str = "latent") -> dict:
    """A report shaped like a 1280x704 render on one GPU (numbers made up, proportions realistic)."""
    rng = np.random.default_rng(0)
    frames_per_chunk = 121
    chunks = []
    cache_points = 0
    for i in range(num_chunks):
        steps = list(1.9 + 0.05 * rng.standard_normal(50))
        if i == 0:
            steps[0] += 1.4  # first step pays for lazy init / autotuning
        stages = {
            P.MEMORY_QUERY: 0.031 + 0.004 * rng.random(),
            P.DENOISE: sum(steps) + 0.6,
            P.DENOISE_STEP: sum(steps),
            P.DECODE: 7.4 + 0.2 * rng.random(),
            P.MP4_WRITE: 0.85 + 0.1 * rng.random(),
            P.DEPTH_ESTIMATION: 1.6 + 0.1 * rng.random(),
            P.MEMORY_INSERT: 0.045 + 0.01 * rng.random(),
            P.CHECKPOINT_WRITE: 0.32 + 0.05 * rng.random(),
        }
        if memory == "none":
            for k in (P.MEMORY_QUERY, P.DEPTH_ESTIMATION, P.MEMORY_INSERT):
                del stages[k]
        if memory == "rgb":
            stages[P.MEMORY_QUERY] = 2.9 + 0.2 * rng.random()
            stages[P.VAE_ENCODE] = 6.8 + 0.3 * rng.random()
        added = [3520 + 2100, 1650, 820, 1900][i % 4]
        cache_points += added
        with_memory = memory != "none"
        chunks.append(
            P.ChunkProfile(
                index=i,
                frames=frames_per_chunk if i == 0 else frames_per_chunk - 1,
                wall_seconds=sum(v for k, v in stages.items() if k != P.DENOISE_STEP) + 0.4,
                stages=stages,
                stage_calls={k: (50 if k == P.DENOISE_STEP else 1) for k in stages},
                step_seconds=steps,
                peak_memory_bytes=int((36.2 + 0.3 * i + (4.0 if memory == "rgb" else 0.0)) * 2**30),
                peak_memory_kind=P.PEAK_CUDA,
                peak_rss_bytes=int(11.5 * 2**30),
                cache_points=cache_points if with_memory else None,
                cache_bytes=cache_points * 124 if with_memory else None,
                memory_coverage=[0.58, 0.71, 0.83, 0.64][i % 4] if with_memory else None,
                pinned_tokens=[1900, 2600, 3100, 2300][i % 4] if with_memory else None,
                points_added=added if with_memory else None,
            )
        )
    frames = frames_per_chunk + (num_chunks - 1) * (frames_per_chunk - 1)
    setup = {P.MODEL_LOAD: 41.3, P.TEXT_ENCODING: 2.2}
    wall = sum(setup.values()) + sum(c.wall_seconds for c in chunks) + 1.1
    device = {
        "name": "cuda:0", "type": "cuda", "timer": P.TIMER_CUDA_EVENTS, "peak_memory_kind": P.PEAK_CUDA,
        "torch_threads": 16, "cuda_version": "12.8", "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_memory_bytes": 85_520_809_984, "cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_count": 16,
    }
    config = {
        "scene": "examples/room/scene.yaml", "prompt": "A sunlit living room with wooden floors, slow walk-through",
        "model": "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "memory": memory, "pin": "clean", "pin_until": 1.0,
        "steps": 50, "guidance": 5.0, "seed": 0, "width": 1280, "height": 704, "frames": frames,
        "chunk_frames": frames_per_chunk, "dtype": "bfloat16", "out": Path("runs/room"),
    }
    return R.build_report(
        config=config, device_info=device, chunks=chunks, setup=setup, trajectory=orbit_trajectory(frames),
        frames=frames, wall_seconds=wall, created="2026-01-31T12:00:00Z",
    )


def real_cpu_report(tmp_path=None) -> dict:
    """A report from a real Profiler timing small torch work on the CPU (2 chunks of 9 + 8 frames)."""
    prof = P.Profiler("cpu")
    g = torch.Generator().manual_seed(0)
    with prof.stage(P.TEXT_ENCODING):
        torch.randn(64, 64, generator=g).sum()
    for i in range(2):
        prof.begin_chunk(i)
        with prof.stage(P.MEMORY_QUERY):
            torch.randn(32, 32, generator=g).sum()
        with prof.stage(P.DENOISE):
            for _ in range(3):
                with prof.stage(P.DENOISE_STEP):
                    a = torch.randn(128, 128, generator=g)  # [128, 128]
                    (a @ a).sum()
        with prof.stage(P.DECODE):
            torch.randn(64, 64, generator=g).exp().sum()
        prof.end_chunk({"frames": 9 if i == 0 else 8, "cache_points": 40 + 10 * i, "cache_bytes": 4000 + 1000 * i,
                        "memory_coverage": 0.25 * i, "pinned_tokens": 2 * i, "points_added": 40 if i == 0 else 10})
    return R.build_report(
        config={"scene": "tests/scene.yaml", "preset": "tiny", "memory": "latent"},
        device_info=R.describe_device("cpu"),
        trajectory=orbit_trajectory(17, 64, 48, 8.0),
        frames=17,
        wall_seconds=sum(c.wall_seconds for c in prof.chunks) + sum(prof.setup_seconds().values()) + 0.01,
        **prof.report_inputs(),
    )


# --- content ----------------------------------------------------------------------------------------


def test_real_profiler_report_is_valid_and_complete():
    report = real_cpu_report()
    assert schema_problems(report) == []
    assert report["version"] == "mirage-report/1"
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["device"]["type"] == "cpu" and report["device"]["timer"] == "perf_counter"
    assert report["device"]["torch_threads"] == torch.get_num_threads()
    assert {"python", "torch", "mirage-cli", "diffusers"} <= set(report["packages"])
    assert [c["index"] for c in report["chunks"]] == [0, 1]
    assert [c["frame_end"] for c in report["chunks"]] == [9, 17]
    st = report["stages"]
    assert st[P.DENOISE_STEP]["parent"] == P.DENOISE and st[P.DENOISE]["parent"] is None
    assert st[P.DENOISE_STEP]["calls"] == 6
    assert st[P.TEXT_ENCODING]["seconds"] == st[P.TEXT_ENCODING]["setup_seconds"] > 0
    assert st[P.TEXT_ENCODING]["calls"] == 1 and st[P.DENOISE]["calls"] == 2
    assert st[P.DENOISE]["seconds"] == pytest.approx(sum(c["stages"][P.DENOISE] for c in report["chunks"]))
    assert report["frames_per_second"] == pytest.approx(17 / report["wall_seconds"])
    s = report["summary"]
    assert (s["cache_points"], s["cache_bytes"], s["chunks"]) == (50, 5000, 2)
    assert s["peak_memory_bytes"] == max(c["peak_memory_bytes"] for c in report["chunks"]) > 0
    assert s["memory_module_seconds"] == pytest.approx(st[P.MEMORY_QUERY]["seconds"])
    assert len(report["camera"]["positions"]) == 17 and len(report["camera"]["positions"][0]) == 3


def test_synthetic_reports_validate_for_every_memory_mode():
    for memory in ("latent", "rgb", "none"):
        report = synthetic_report(4, memory)
        assert schema_problems(report) == [], memory
    none = synthetic_report(2, "none")
    assert none["summary"]["cache_points"] is None and none["chunks"][1]["memory_coverage"] is None
    rgb = synthetic_report(2, "rgb")
    assert rgb["summary"]["memory_module_seconds"] > synthetic_report(2, "latent")["summary"]["memory_module_seconds"]


def test_report_from_resumed_profiler_includes_earlier_chunks():
    first = P.Profiler("cpu")
    for i in range(2):
        first.begin_chunk(i)
        with first.stage(P.DENOISE):
            pass
        first.end_chunk(frames=9 if i == 0 else 8)
    resumed = P.Profiler("cpu")
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    resumed.begin_chunk(2)
    resumed.end_chunk(frames=8)
    report = R.build_report(config={}, device_info=R.describe_device("cpu"), trajectory=None, frames=25,
                            wall_seconds=1.0, **resumed.report_inputs())
    assert schema_problems(report) == []
    assert [c["index"] for c in report["chunks"]] == [0, 1, 2]
    assert report["chunks"][-1]["frame_end"] == 25 and report["camera"] is None


# --- schema -----------------------------------------------------------------------------------------


def test_schema_is_package_data_and_documents_every_field():
    import importlib.resources

    assert importlib.resources.files("mirage_cli.report").joinpath("schema.json").is_file()
    schema = R.load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema)  # the schema itself is valid JSON Schema

    undocumented = []

    def walk(node, path):
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    undocumented.append(f"{path}.{name}")
            for key, sub in node.items():
                walk(sub, f"{path}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}[{i}]")

    walk(schema, "$")
    assert undocumented == []


def test_broken_report_fails_with_clear_messages():
    report = synthetic_report(3)
    broken = copy.deepcopy(report)
    broken["version"] = "mirage-report/0"
    del broken["chunks"][1]["wall_seconds"]
    broken["chunks"][2]["memory_coverage"] = 1.5
    broken["frames"] = "481"
    broken["stages"][P.DECODE]["calls"] = 2.5
    broken["camera"]["positions"][4] = [0.0, 1.0]
    broken["summary"]["surprise"] = 1
    broken["device"]["timer"] = "sundial"
    problems = schema_problems(broken)
    expected = [
        "$.version: 'mirage-report/0' is not one of ['mirage-report/1']",
        "$.chunks[1]: 'wall_seconds' is a required property",
        "$.chunks[2].memory_coverage: 1.5 is greater than the maximum of 1",
        "$.frames: '481' is not of type 'integer'",
        "$.stages.decode.calls: 2.5 is not of type 'integer'",
        "$.camera.positions[4]: [0.0, 1.0] is too short",
        "$.summary: Additional properties are not allowed ('surprise' was unexpected)",
        "$.device.timer: 'sundial' is not one of ['cuda_events', 'perf_counter']",
    ]
    assert problems == sorted(expected), problems
    assert schema_problems(report) == []  # the original is untouched and valid


def test_report_json_is_strict_json_and_bools_are_not_numbers():
    report = synthetic_report(1)
    report["chunks"][0]["frames"] = True
    assert "$.chunks[0].frames: True is not of type 'integer'" in schema_problems(report)
    report["wall_seconds"] = float("nan")
    with pytest.raises(ValueError):  # report.json is written with allow_nan=False
        RunDir("unused").write_report(report)


# --- files ------------------------------------------------------------------------------------------


def test_write_report_json_and_self_contained_html(tmp_path):
    report = synthetic_report(4)
    report["config"]["prompt"] = "<script>alert('x')</script> & friends"
    json_path, html_path = RunDir(tmp_path / "run").write_report(report)
    assert json_path == tmp_path / "run" / "report.json"
    assert RunDir(tmp_path / "run").read_report() == report
    assert schema_problems(json.loads(json_path.read_text())) == []

    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # nothing is fetched: no remote src/href, no external scripts, stylesheets or fonts
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.replace("&lt;script", "") and "<link" not in page and "@import" not in page
    assert "&lt;script&gt;alert" in page  # user text is escaped
    # six figures, each an embedded PNG
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(imgs) == page.count("<img") == 6
    assert {alt for alt, _ in imgs} >= {"Time per stage per chunk", "Memory cache along the trajectory",
                                        "Peak memory per chunk", "Memory coverage per chunk", "Camera path from above"}
    for _, data in imgs:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for stage in (P.DENOISE, P.DECODE, P.MEMORY_QUERY, P.DENOISE_STEP):
        assert f"{stage}</td>" in page
    assert not list((tmp_path / "run").glob(".*"))  # no temporary files left


def test_html_without_memory_or_camera(tmp_path):
    report = synthetic_report(2, "none")
    report["camera"] = None
    _, html_path = RunDir(tmp_path).write_report(report)
    page = html_path.read_text()
    assert page.count("<img") == 6
    assert "no memory" in page


# --- Rich summary -----------------------------------------------------------------------------------


def test_summary_table_lists_stages_shares_and_totals():
    from rich.console import Console

    report = synthetic_report(4)
    buf = io.StringIO()
    Console(file=buf, width=110, color_system=None).print(R.summary_table(report))
    text = buf.getvalue()
    for needle in ("denoise", "└ denoise_step", "decode", "memory_query", "frames/s", "peak memory", "cache", "other"):
        assert needle in text, needle
    share = f"{100 * report['stages'][P.DENOISE]['share']:.1f}%"
    assert share in text
    assert R.fmt_fps(report["frames_per_second"]) in text
    assert R.fmt_bytes(report["summary"]["peak_memory_bytes"]) in text


def test_formatters():
    assert R.fmt_bytes(None) == "-" and R.fmt_bytes(512) == "512 B" and R.fmt_bytes(1536) == "1.5 KiB"
    assert R.fmt_bytes(3 * 2**30) == "3.0 GiB"
    assert R.fmt_seconds(0.0000421) == "42 µs" and R.fmt_seconds(0.0123) == "12.3 ms" and R.fmt_seconds(3.4) == "3.40 s"
    assert R.fmt_seconds(125) == "2 min 05 s" and R.fmt_seconds(7300) == "2 h 01 min"


if __name__ == "__main__":  # write a sample report: python tests/test_report.py OUT_DIR [CHUNKS] [MEMORY]
    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    mode = sys.argv[3] if len(sys.argv) > 3 else "latent"
    paths = RunDir(out).write_report(synthetic_report(n, mode))
    print("\n".join(map(str, paths)))


def test_report_html_shows_the_video_and_a_contact_sheet(renders):
    """A real render's page plays its video.mp4 and embeds frames spread over it, labelled; the sheet's
    frames are the video's own (decoded again here and compared)."""
    from PIL import Image

    from mirage_cli.base.video import read_frames_at, read_video
    from mirage_cli.report.contact_sheet import contact_sheet, sheet_indices

    run = renders["latent"][0]
    page = (run / "report.html").read_text()
    assert '<video src="video.mp4" controls' in page
    found = re.search(r'alt="Contact sheet[^"]*" src="data:image/jpeg;base64,([^"]+)"', page)
    assert found, "no contact sheet in report.html"
    sheet = Image.open(io.BytesIO(base64.b64decode(found.group(1))))
    frames, fps = read_video(run / "video.mp4")
    assert sheet.width == 1200 and sheet.height > 0
    assert base64.b64decode(found.group(1)) == contact_sheet(run / "video.mp4", len(frames), fps)
    indices = sheet_indices(len(frames))
    assert indices[0] == 0 and indices[-1] == len(frames) - 1 and len(indices) == min(12, len(frames))
    chosen = read_frames_at(run / "video.mp4", indices)
    assert all(np.array_equal(chosen[i], frames[i]) for i in indices)
