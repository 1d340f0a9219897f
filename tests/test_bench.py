"""`mirage bench` end to end: latent vs RGB vs no memory in one process (tiny components, CPU).

Only the structure and the direction of the size ratio are asserted; times are reported, never
asserted (README, "Benchmarks").
"""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_tiny_json():
    proc = subprocess.run(
        [sys.executable, "-m", "mirage_cli", "bench", "--preset", "tiny", "--chunks", "2", "--repeat", "1", "--steps", "2", "--json",
         "--attention-backend", "native"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["runs"]) == {"latent", "rgb", "none"}
    # the backbone flags reach the bench's renders (declared once for render and bench)
    assert result["options"]["attention_backend"] == "native" and result["options"]["vae_tiling"] is False
    assert result["options"]["dtype"] == "float32"
    for run in result["runs"].values():
        assert run["end_to_end_seconds"] > 0 and run["peak_memory_bytes"] > 0
    assert result["runs"]["none"]["cache_bytes"] == 0
    ratios = result["ratios"]
    assert set(ratios) >= {"memory_time_rgb_over_latent", "cache_bytes_rgb_over_latent", "end_to_end_latent_over_none"}
    assert ratios["cache_bytes_rgb_over_latent"] > 10
    assert ratios["memory_time_rgb_over_latent"] > 0 and ratios["end_to_end_latent_over_none"] > 0


def test_bench_rejects_bad_repeat():
    proc = subprocess.run([sys.executable, "-m", "mirage_cli", "bench", "--repeat", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--repeat" in proc.stderr and "Traceback" not in proc.stderr
