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
# Then one line per step cache in MIRAGE_GPU_CHECK_CACHES (default "first-block taylorseer mag"; empty:
# none): `mirage bench --cache` on the first chunk (mag after `mirage calibrate-cache`), s/step without
# and with the cache, the share of blocks computed and the change of the frames (max-abs, PSNR), into
# OUT_DIR/cache-<name>.json and table.md. About 1-2 minutes per cache on one H100 (each stopped
# after MIRAGE_GPU_CHECK_CACHE_TIMEOUT, default 240 s). MIRAGE_GPU_CHECK_CACHE_ARGS replaces their
# arguments (default: the real size, one chunk of 33 frames, 8 steps, one round).
#
# Then the few-step line (MIRAGE_GPU_CHECK_SAMPLER, default dmd; empty: none): `mirage bench --sampler`
# with one 121-frame chunk at 1280x704, latent memory, the few-step sampler beside UniPC (8 steps, to
# keep the budget: its s/step is what counts), seconds per chunk by stage and the stage a few-step chunk
# waits on most, into OUT_DIR/sampler.json and table.md. About 2-3 minutes on one H100 (stopped after
# MIRAGE_GPU_CHECK_SAMPLER_TIMEOUT, default 300 s); MIRAGE_GPU_CHECK_SAMPLER_ARGS replaces its arguments.
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

DEFAULT_ARGS="--random-weights --random-text-encoder --device cuda --resolution 1280x704 --frames 65 --chunk-frames 33 --steps 8 --full --repeat 1"
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

from mirage_cli.vram.plan import flags

out = Path(sys.argv[1])
bench = json.loads((out / "bench.json").read_text())
samples = out / "nvidia_smi_memory_mib.txt"
used = [int(v) for line in (samples.read_text().splitlines() if samples.exists() else []) for v in line.split(",") if v.strip().isdigit()]
gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None
result = {**bench, "gpu": gpu, "nvidia_smi_peak_bytes": max(used) * 2**20 if used else None}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
kind = next(iter(bench["runs"].values()))["peak_memory_kind"]  # CUDA allocator peak on a GPU, process RSS on a CPU
plan = bench.get("memory_plan") or {}
predicted = (plan.get("predicted") or {}).get("peak_gib")  # the memory plan's meta-device prediction (GPU only)
rows = [f"| memory | s/chunk | memory module s | peak GiB ({kind}) | predicted GiB |", "|---|---:|---:|---:|---:|"]
for mode, run in bench["runs"].items():
    rows.append(f"| {mode} | {run['seconds_per_chunk']:.2f} | {run['memory_module_seconds']:.3f} | {run['peak_memory_bytes'] / 2**30:.2f} | "
                f"{'n/a' if predicted is None else f'{predicted:.2f}'} |")
smi = result["nvidia_smi_peak_bytes"]
options = flags(plan["offload"], plan["vae_tiling"]) if plan else "options as given: no GPU memory plan"
rows.append("")
rows.append(f"{bench['resolution']}, {bench['chunks']} chunks of {bench['chunk_frames']} frames, {bench['steps']} steps on "
            f"{gpu or bench['device']} ({options}); nvidia-smi peak: {'n/a' if smi is None else f'{smi / 2**30:.2f} GiB'}")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY

CACHE_ARGS_DEFAULT="--random-weights --random-text-encoder --device cuda --resolution 1280x704 --frames 33 --chunk-frames 33 --steps 8"
read -r -a CACHE_ARGS <<< "${MIRAGE_GPU_CHECK_CACHE_ARGS:-$CACHE_ARGS_DEFAULT}"
CACHE_TIMEOUT=${MIRAGE_GPU_CHECK_CACHE_TIMEOUT:-240}
CACHE_ROWS=()
for cache in ${MIRAGE_GPU_CHECK_CACHES-first-block taylorseer mag}; do
    extra=()
    if [[ "$cache" == "mag" ]]; then
        if ! timeout "$CACHE_TIMEOUT" "$PYTHON" -m mirage_cli calibrate-cache examples/room/scene.yaml "${CACHE_ARGS[@]}" \
                --out "$OUT_DIR/mag-calibration.json" > /dev/null 2> "$OUT_DIR/calibrate-cache.log"; then
            CACHE_ROWS+=("| mag | calibration failed: see calibrate-cache.log | | | | |")
            continue
        fi
        extra=(--cache-calibration "$OUT_DIR/mag-calibration.json")
    fi
    if timeout "$CACHE_TIMEOUT" "$PYTHON" -m mirage_cli bench "${CACHE_ARGS[@]}" --chunks 1 --repeat 1 --cache "$cache" "${extra[@]}" \
            --json > "$OUT_DIR/cache-$cache.json" 2> "$OUT_DIR/cache-$cache.log"; then
        CACHE_ROWS+=("$("$PYTHON" - "$OUT_DIR/cache-$cache.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
runs, c = r["runs"], r["change"]
name = r["cache"]["method"]
print(f"| {name} | {runs['none']['step_seconds']:.3f} | {runs[name]['step_seconds']:.3f} | {r['speedup_step']:.2f}x | "
      f"{r['blocks_computed_share']:.0%} | {c['max_abs']} / {c['psnr_db']:.1f} dB |")
PY
)")
    else
        CACHE_ROWS+=("| $cache | failed: see cache-$cache.log | | | | |")
    fi
done
if [[ ${#CACHE_ROWS[@]} -gt 0 ]]; then
    {
        echo ""
        echo "| step cache | s/step none | s/step cached | speed-up | blocks computed | frames max-abs / PSNR |"
        echo "|---|---:|---:|---:|---:|---:|"
        printf '%s\n' "${CACHE_ROWS[@]}"
    } | tee -a "$OUT_DIR/table.md"
fi

SAMPLER_ARGS_DEFAULT="--random-weights --random-text-encoder --device cuda --resolution 1280x704 --frames 121 --chunk-frames 121 --steps 8"
read -r -a SAMPLER_ARGS <<< "${MIRAGE_GPU_CHECK_SAMPLER_ARGS:-$SAMPLER_ARGS_DEFAULT}"
for sampler in ${MIRAGE_GPU_CHECK_SAMPLER-dmd}; do
    if timeout "${MIRAGE_GPU_CHECK_SAMPLER_TIMEOUT:-300}" "$PYTHON" -m mirage_cli bench "${SAMPLER_ARGS[@]}" --chunks 1 --repeat 1 \
            --sampler "$sampler" --json > "$OUT_DIR/sampler.json" 2> "$OUT_DIR/sampler.log"; then
        "$PYTHON" - "$OUT_DIR/sampler.json" <<'PY' | tee -a "$OUT_DIR/table.md"
import json, sys
r = json.loads(open(sys.argv[1]).read())
names = list(r["runs"])
groups = ["denoise", "decode", "encode", "outputs", "depth", "memory", "write_wait"]
print("")
print("| sampler | steps | s/chunk | " + " | ".join(groups) + " |")
print("|---|---:|---:|" + "---:|" * len(groups))
for name in names:
    run = r["runs"][name]
    print(f"| {name} | {r['settings'][name]['steps']} | {run['wall']:.2f} | " + " | ".join(f"{run[g]:.2f}" for g in groups) + " |")
base, fast = r["runs"][names[0]], r["runs"][names[1]]
per_step = base["denoise"] / r["settings"][names[0]]["steps"]
print(f"\n{r['resolution']}, {r['frames']} frames in one chunk on {r['device']}: {names[1]} chunk {fast['wall']:.2f} s end to end "
      f"(UniPC at 50 steps would denoise for about {per_step * 50:.1f} s); it waits most on {r['dominant_stage']}.")
PY
    else
        echo "few-step bench ($sampler) failed: see $OUT_DIR/sampler.log" | tee -a "$OUT_DIR/table.md" >&2
    fi
done
