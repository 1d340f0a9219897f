#!/usr/bin/env bash
# The real-size check on one CUDA GPU: the Wan2.2-TI2V-5B architecture with random weights and a
# real-size UMT5-XXL text encoder (nothing to download), at 1280x704, 2 chunks of 33 frames, 8 steps,
# for --memory latent, rgb and none (`mirage bench`, one process, a warm-up then one measured round),
# with peak VRAM from torch (the bench) and from nvidia-smi (sampled every 200 ms).
#
#   benchmarks/gpu_check.sh [OUT_DIR]            (default: $OUT, else ./gpu_check)
#
# Writes OUT_DIR/gpu_check.json (the bench's JSON plus nvidia-smi's peak and the GPU's name),
# OUT_DIR/table.md (s/chunk, memory-module s, peak GiB per mode), and the logs. Budget: under
# 8 minutes on one H100 (MIRAGE_GPU_CHECK_TIMEOUT, default 480 s, stops it).
#
# Python: $PYTHON (default: .venv/bin/python when present, else python3) must import mirage_cli and
# a CUDA build of torch. On a bare machine without internet, carry the wheels in and set
# MIRAGE_WHEELS=DIR: a fresh venv is made and everything installed from DIR only (pip --no-index).
# MIRAGE_GPU_CHECK_ARGS replaces the bench arguments; the tests run this script on the CPU with
# the tiny preset that way.
set -euo pipefail

OUT_DIR=${1:-${OUT:-gpu_check}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

if [[ -n "${MIRAGE_WHEELS:-}" ]]; then
    python3 -m venv "$OUT_DIR/venv"
    "$OUT_DIR/venv/bin/python" -m pip install --quiet --no-index --find-links "$MIRAGE_WHEELS" mirage-cli
    PYTHON="$OUT_DIR/venv/bin/python"
fi
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

DEFAULT_ARGS="--random-weights --random-text-encoder --device cuda --resolution 1280x704 --frames 65 --chunk-frames 33 --steps 8 --repeat 1"
read -r -a BENCH_ARGS <<< "${MIRAGE_GPU_CHECK_ARGS:-$DEFAULT_ARGS}"

SAMPLER=""
if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT_DIR/gpu.txt" || true
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT_DIR/nvidia_smi_memory_mib.txt" 2> /dev/null &
    SAMPLER=$!
fi
stop_sampler() { if [[ -n "$SAMPLER" ]]; then kill "$SAMPLER" 2> /dev/null || true; wait "$SAMPLER" 2> /dev/null || true; fi; }
trap stop_sampler EXIT

echo "gpu_check: $PYTHON -m mirage_cli bench ${BENCH_ARGS[*]}" >&2
status=0
timeout "${MIRAGE_GPU_CHECK_TIMEOUT:-480}" "$PYTHON" -m mirage_cli bench "${BENCH_ARGS[@]}" --json \
    > "$OUT_DIR/bench.json" 2> "$OUT_DIR/bench.log" || status=$?
stop_sampler
trap - EXIT
if [[ $status -ne 0 ]]; then
    echo "gpu_check: the bench failed (exit $status); see $OUT_DIR/bench.log" >&2
    tail -n 20 "$OUT_DIR/bench.log" >&2
    exit "$status"
fi

"$PYTHON" - "$OUT_DIR" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
bench = json.loads((out / "bench.json").read_text())
samples = out / "nvidia_smi_memory_mib.txt"
used = [int(v) for line in (samples.read_text().splitlines() if samples.exists() else []) for v in line.split(",") if v.strip().isdigit()]
gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None
result = {**bench, "gpu": gpu, "nvidia_smi_peak_bytes": max(used) * 2**20 if used else None}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
kind = next(iter(bench["runs"].values()))["peak_memory_kind"]  # CUDA allocator peak on a GPU, process RSS on a CPU
rows = [f"| memory | s/chunk | memory module s | peak GiB ({kind}) |", "|---|---:|---:|---:|"]
for mode, run in bench["runs"].items():
    rows.append(f"| {mode} | {run['seconds_per_chunk']:.2f} | {run['memory_module_seconds']:.3f} | {run['peak_memory_bytes'] / 2**30:.2f} |")
smi = result["nvidia_smi_peak_bytes"]
rows.append("")
rows.append(f"{bench['resolution']}, {bench['chunks']} chunks of {bench['chunk_frames']} frames, {bench['steps']} steps on "
            f"{gpu or bench['device']}; nvidia-smi peak: {'n/a' if smi is None else f'{smi / 2**30:.2f} GiB'}")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
