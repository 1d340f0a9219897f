"""`mirage bench` end to end: latent vs RGB vs no memory in one process (tiny components, CPU).

Only the structure and the direction of the size ratio are asserted; times are reported, never
asserted (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re

from render_helpers import cli


def test_bench_tiny_json(small_scene):
    result = cli("bench", small_scene, "--preset", "tiny", "--chunks", "1", "--repeat", "1", "--steps", "1", "--json",
                 "--attention-backend", "native", "--eval")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["runs"]) == {"latent", "rgb", "none"}
    # the backbone flags reach the bench's renders (declared once for render and bench)
    assert report["options"]["attention_backend"] == "native" and report["options"]["vae_tiling"] is False
    assert report["options"]["dtype"] == "float32"
    for run in report["runs"].values():
        assert run["end_to_end_seconds"] > 0 and run["peak_memory_bytes"] > 0
    assert report["runs"]["none"]["cache_bytes"] == 0
    ratios = report["ratios"]
    assert set(ratios) >= {"memory_time_rgb_over_latent", "cache_bytes_rgb_over_latent", "end_to_end_latent_over_none"}
    assert ratios["cache_bytes_rgb_over_latent"] > 10
    assert ratios["memory_time_rgb_over_latent"] > 0 and ratios["end_to_end_latent_over_none"] > 0
    # --eval: every mode's video measured; the 3D check of a memory mode uses that run's memory depth
    assert set(report["eval"]) == {"latent", "rgb", "none"}
    assert report["eval"]["latent"]["depth"].startswith("the run's memory") and report["eval"]["none"]["depth"] is None
    assert {"unit", "direction", "value"} <= set(report["eval"]["latent"]["metrics"]["reprojection_error"])


def test_bench_rejects_bad_repeat():
    result = cli("bench", "--repeat", "0")
    assert result.exit_code == 2 and "--repeat" in result.stderr


def test_gpu_check_script_proves_itself_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh as a GPU machine runs it, with the tiny preset on this CPU instead of
    the real size (no GPU here; nvidia-smi is absent, so its peak is null)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "PATH": "/usr/bin:/bin",
           "MIRAGE_GPU_CHECK_ARGS": "--preset tiny --device cpu --resolution 224x128 --frames 17 --chunk-frames 9 --steps 2 "
                                    "--full --repeat 1",
           "MIRAGE_GPU_CHECK_CACHES": "first-block mag",
           "MIRAGE_GPU_CHECK_CACHE_ARGS": "--preset tiny --device cpu --resolution 224x128 --frames 9 --chunk-frames 9 --steps 4",
           "MIRAGE_GPU_CHECK_SAMPLER_ARGS": "--preset tiny --device cpu --resolution 224x128 --frames 9 --chunk-frames 9 --steps 4"}
    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert set(result["runs"]) == {"latent", "rgb", "none"} and result["chunks"] == 2 and result["resolution"] == "224x128"
    assert result["nvidia_smi_peak_bytes"] is None
    table = (tmp_path / "out" / "table.md").read_text()
    assert table.startswith("| memory | s/chunk | memory module s | peak GiB (process_rss) |") and "| latent |" in table
    assert "| step cache | s/step none |" in table
    assert re.search(r"^\| first-block \| [0-9.]+ \| [0-9.]+ \|", table, re.M) and re.search(r"^\| mag \| [0-9.]+ \|", table, re.M)
    assert "| sampler | steps | s/chunk |" in table and "| dmd | 3 |" in table and "it waits most on" in table
    assert json.loads((tmp_path / "out" / "sampler.json").read_text())["settings"]["dmd"]["steps"] == 3


def test_bench_is_quick_by_default_and_says_so(small_scene):
    result = cli("bench", small_scene, "--preset", "tiny", "--steps", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["quick"] is True and report["chunks"] == 1 and report["rounds"] == 1 and report["warm_up"] == ["latent"]
    assert "bench: round 1/1 rgb done in" in result.stderr  # progress with each render's time
    table = cli("bench", small_scene, "--preset", "tiny", "--steps", "1")
    assert "the quick default, --full for every chunk in 3 rounds" in " ".join(table.stdout.split())


def test_a_stopped_bench_prints_what_it_measured_and_names_no_checkpoint(small_scene, tmp_path):
    """SIGINT during the third render of the first round: exit 75, the table of the two modes measured,
    and no word of the checkpoint the stopped render saved in the bench's temporary directory."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "MIRAGE_TEST_PAUSE": "denoise_step=0.3", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "mirage_cli", "bench", str(small_scene), "--preset", "tiny", "--steps", "2", "--repeat", "2"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in child.stderr:
        lines.append(line)
        if line.startswith("bench: round 1/2 none ..."):
            child.send_signal(signal.SIGINT)
            break
    stderr = "".join(lines) + child.stderr.read()
    stdout = child.stdout.read()
    assert child.wait() == 75, stderr
    assert "│ latent" in stdout and "│ rgb" in stdout and "│ none" not in stdout, stderr
    words = " ".join(stdout.split())
    assert "stopped by SIGINT during the none render of round 1/2: what was measured before (not measured: none)" in words
    last = stderr.strip().splitlines()[-1]
    assert "the table has what was measured before (nothing to resume)" in last
    assert "checkpoint" not in stderr + stdout
