"""``mirage bench``: the same scene rendered with latent memory, RGB memory and no memory, side by side.

One process, one loaded backbone. A warm-up render first, of every mode or of the first (first-call
costs: allocator, kernels, caches), then ``repeat`` rounds that alternate the modes (latent, rgb,
none, latent, ...) so that drift in the machine's speed hits every mode alike. Each number is the
median over the rounds; ratios are taken between medians measured in this one run. ``mirage bench``
is quick by default (the first chunk, one round after one warm-up render); ``--full`` measures every
chunk in 3 rounds after a warm-up of every mode.

Per mode: end-to-end seconds (the whole render: conditioning, denoising, decoding, depth, memory,
MP4 and checkpoint writing), memory-module seconds (memory query + memory insert + the VAE encode of
the renders that only the RGB mode needs), cache bytes at the end, peak memory. The prompts are embedded
once, in the warm-up; the text encoder is then freed, as a render frees it after its text encoding, so
the measured rounds hold what a render holds (and skip the text encoding, a setup cost of each render).
"""

from __future__ import annotations

import re
import statistics
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from mirage_cli.base.errors import Interrupted
from mirage_cli.base.options import BackboneOptions, MemoryMode, RenderOptions
from mirage_cli.evaluation.document import evaluate
from mirage_cli.evaluation.inputs import load_inputs
from mirage_cli.render.events import RenderEvents
from mirage_cli.render.session import load_backbone_for, render
from mirage_cli.report.format import fmt_bytes, fmt_seconds
from mirage_cli.spec.plan import Plan, read_spec_yaml, trim_plan
from mirage_cli.vram.plan import vram_plan_for_render


def bench_overrides(spec: Path, *, steps=None, resolution=None, frames=None, chunk_frames=None) -> dict:
    """Spec overrides for a bench at another size. With ``frames``, a spec's inline keyframes are
    stretched over the new length (frame k of a path ending at L moves to round(k * (frames-1) / L)):
    the same camera motion, slower or faster, so any scene benches at any length."""
    overrides = {"steps": steps, "resolution": resolution, "frames": frames, "chunk_frames": chunk_frames}
    if frames is None:
        return overrides
    data, _ = read_spec_yaml(spec)
    camera = data.get("camera") if isinstance(data, dict) else None
    keyframes = camera.get("keyframes") if isinstance(camera, dict) else None
    if isinstance(keyframes, list) and keyframes and all(isinstance(k, dict) and type(k.get("frame")) is int for k in keyframes):
        last = max(k["frame"] for k in keyframes)
        if last > 0:
            stretched = [{**k, "frame": round(k["frame"] * (frames - 1) / last)} for k in keyframes]
            overrides["camera"] = {**camera, "keyframes": stretched}
    return overrides


def _run_once(plan: Plan, memory: MemoryMode, options: BackboneOptions, backbone, out: Path, stop=None) -> dict:
    p = replace(plan, memory=replace(plan.memory, mode=memory))
    result = render(p, RenderOptions(out=out, backbone=options, restart=True), RenderEvents(), backbone=backbone, stop=stop)
    s = result.report["summary"]
    return {
        "end_to_end_seconds": float(result.report["wall_seconds"]),
        "memory_module_seconds": float(s["memory_module_seconds"]),
        "cache_bytes": int(s["cache_bytes"] or 0),
        "cache_points": int(s["cache_points"] or 0),
        "peak_memory_bytes": int(s["peak_memory_bytes"]),
        "peak_memory_kind": s["peak_memory_kind"],
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def run_bench(
    plan: Plan,
    options: BackboneOptions,
    *,
    chunks: int | None = None,
    repeat: int = 3,
    work_dir: Path | None = None,
    on_run=None,
    on_done=None,
    evaluate: bool = False,
    warm_up_every_mode: bool = True,
    stop=None,
) -> dict:
    """Render ``plan`` in every memory mode; returns ``{"runs": {mode: {...}}, "ratios": {...}}``.

    A stop signal ends the measuring: the renders finished by then are the result (``"interrupted"``
    says where it stopped, and the modes not measured are missing from ``"runs"``); a stop before any
    measured render raises ``Interrupted``. The run directories are temporary: nothing is resumable.

    Args:
        plan: the scene (``mirage_cli.spec.plan.load_plan``).
        options: how the backbone runs (preset, random weights, device, dtype, speed features).
        chunks: render only the first N chunks.
        repeat: measured rounds after the warm-up (>= 1).
        work_dir: where the throw-away run directories go (default: a temporary directory).
        on_run: optional callback ``(memory_mode, round_index)`` before each render (progress; round -1
            is the warm-up); ``on_done``: ``(memory_mode, round_index, seconds)`` after it.
        evaluate: measure the first round's videos with ``mirage eval`` (after each render, outside
            its timing) and add ``"eval": {mode: {metric: value}}``.
        warm_up_every_mode: a warm-up render of each mode (else of the first mode only: first-call costs
            are mostly the backbone's, which every mode shares).
        stop: the installed ``GracefulStop`` every render obeys, so a stop between two renders ends the
            bench too (None: each render installs its own).
    """
    if repeat < 1:
        raise ValueError(f"repeat: expected at least 1, got {repeat}")
    plan = trim_plan(plan, chunks)

    vram_plan = vram_plan_for_render(plan, options)  # on a GPU: the offload and tiling that fit --vram-budget
    if vram_plan is not None:
        options = vram_plan.apply(options)
    backbone = load_backbone_for(plan, options)
    samples: dict[str, list[dict]] = {m.value: [] for m in MemoryMode}
    measured: dict[str, dict] = {}
    warm_up = list(MemoryMode) if warm_up_every_mode else [MemoryMode.LATENT]
    schedule = [(memory, -1) for memory in warm_up] + [(memory, r) for r in range(repeat) for memory in MemoryMode]
    interrupted = None
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="mirage-bench-") as tmp:
        for memory, r in schedule:  # warm-ups (discarded), then rounds alternating the modes
            if on_run:
                on_run(memory.value, r)
            out = Path(tmp) / (f"warmup-{memory}" if r < 0 else f"{memory}-{r}")
            try:
                row = _run_once(plan, memory, options, backbone, out, stop)
            except Interrupted as e:
                interrupted = _where_stopped(e, memory, r, repeat)
                break
            if on_done:
                on_done(memory.value, r, row["end_to_end_seconds"])
            if r < 0:
                backbone.release_text_encoder()  # prompts embedded (Backbone.embedded): measured rounds hold what a render holds
                continue
            samples[memory.value].append(row)
            if evaluate and r == 0:
                measured[memory.value] = _evaluate_run(out)
    if interrupted is not None and not any(samples.values()):
        raise Interrupted(f"bench {interrupted}, before anything was measured")
    runs = {memory: _median_run(rows, len(plan.chunks)) for memory, rows in samples.items() if rows}
    return {**_setting(plan, options, backbone, vram_plan), "rounds": repeat, "warm_up": [m.value for m in warm_up],
            "runs": runs, "ratios": _ratios(runs), "interrupted": interrupted, **({"eval": measured} if evaluate else {})}


def _setting(plan: Plan, options: BackboneOptions, backbone, vram_plan) -> dict:
    """What a bench result says about what it measured: the scene, its size, the device and options."""
    return {
        "scene": str(plan.spec_path),
        "frames": plan.frames,
        "chunks": len(plan.chunks),
        "chunk_frames": plan.chunk_frames,
        "resolution": f"{plan.width}x{plan.height}",
        "steps": plan.steps,
        "device": str(backbone.device),
        "preset": options.preset,
        "random_weights": options.random_weights,
        "random_text_encoder": options.random_text_encoder,
        "options": asdict(options.resolved()),
        "memory_plan": None if vram_plan is None else vram_plan.to_dict(),
    }


def _where_stopped(error: Interrupted, memory: MemoryMode, round_index: int, repeat: int) -> str:
    """"stopped by SIGINT during the rgb render of round 2/3" (the render's own message names a
    checkpoint in a directory the bench deletes: it is not repeated)."""
    which = "the warm-up" if round_index < 0 else f"round {round_index + 1}/{repeat}"
    return f"stopped by {stop_signal_of(error)} during the {memory} render of {which}"


def stop_signal_of(error: Interrupted) -> str:
    """The signal a render's ``Interrupted`` names ("SIGINT"), or "a stop signal"."""
    signal = re.match(r"stopped by (\S+?)[\s:;,]", str(error))
    return signal.group(1) if signal else "a stop signal"


def _median_run(rows: list[dict], chunks: int) -> dict:
    """One memory mode's measured rounds as their medians (``_run_once``'s keys) and seconds per chunk."""
    run = {
        key: statistics.median(row[key] for row in rows)
        for key in ("end_to_end_seconds", "memory_module_seconds", "cache_bytes", "cache_points", "peak_memory_bytes")
    }
    run["seconds_per_chunk"] = run["end_to_end_seconds"] / chunks
    run["peak_memory_kind"] = rows[0]["peak_memory_kind"]
    run["repeats"] = len(rows)
    return run


def _ratios(runs: dict[str, dict]) -> dict:
    """The headline ratios between the memory modes, measured in one run (None where a mode is missing)."""

    def ratio(key: str, a: str, b: str) -> float | None:
        return _ratio(runs[a][key], runs[b][key]) if a in runs and b in runs else None

    return {
        "memory_time_rgb_over_latent": ratio("memory_module_seconds", "rgb", "latent"),
        "cache_bytes_rgb_over_latent": ratio("cache_bytes", "rgb", "latent"),
        "end_to_end_latent_over_none": ratio("end_to_end_seconds", "latent", "none"),
        "end_to_end_rgb_over_latent": ratio("end_to_end_seconds", "rgb", "latent"),
    }


EVAL_HEADLINES = {  # metric: its column in the table
    "rotation_error_median": "rotation err",
    "trajectory_error_relative": "ATE/len",
    "reprojection_error": "reproj err",
    "revisit_psnr": "revisit PSNR",
    "temporal_consistency": "stability",
    "seam_ratio_max": "seam ratio",
}


def _evaluate_run(run: Path) -> dict:
    """The headline ``mirage eval`` metrics of a bench render (value, unit, direction) and its notes."""
    document = evaluate(load_inputs(run))
    return {"metrics": {name: document["metrics"][name] for name in EVAL_HEADLINES}, "depth": document["depth"],
            "notes": document["notes"]}


def eval_table(result: dict):
    """A Rich table of the ``eval`` part of a ``run_bench(..., evaluate=True)`` result."""
    from rich.table import Table

    t = Table(title="mirage bench --eval: each mode's video measured (first round)")
    t.add_column("memory")
    units = next(iter(result["eval"].values()))["metrics"]
    for name, column in EVAL_HEADLINES.items():
        arrow = "↓" if units[name]["direction"] == "lower" else "↑"
        t.add_column(f"{column} {arrow}", justify="right")
    for memory, measured in result["eval"].items():
        values = [measured["metrics"][name]["value"] for name in EVAL_HEADLINES]
        t.add_row(memory, *("-" if v is None else f"{v:.3g}" for v in values))
    t.caption = "↓ lower is better, ↑ higher; units and definitions: `mirage eval --json` (docs/eval.md)"
    return t


def bench_table(result: dict):
    """A Rich table of a ``run_bench`` result."""
    from rich.table import Table

    chunks = f"{result['chunks']} chunk{'s' if result['chunks'] > 1 else ''}"
    t = Table(title=f"mirage bench: {result['scene']} ({chunks}, {result['frames']} frames, "
              f"{result['resolution']}, {result['steps']} steps, {result['device']}; {rounds_note(result)})")
    for col in ("memory", "end-to-end", "memory module", "cache", "peak memory"):
        t.add_column(col, justify="right" if col != "memory" else "left")
    for memory, r in result["runs"].items():
        t.add_row(
            memory,
            fmt_seconds(r["end_to_end_seconds"]),
            fmt_seconds(r["memory_module_seconds"]),
            fmt_bytes(r["cache_bytes"]),
            fmt_bytes(r["peak_memory_bytes"]),
        )
    q = result["ratios"]

    def f(x):
        return "n/a" if x is None else f"{x:.2f}x"

    t.caption = (
        f"memory time rgb/latent {f(q['memory_time_rgb_over_latent'])} | cache bytes rgb/latent "
        f"{f(q['cache_bytes_rgb_over_latent'])} | end-to-end latent/none {f(q['end_to_end_latent_over_none'])}"
    )
    if result.get("interrupted"):
        missing = [m.value for m in MemoryMode if m.value not in result["runs"]]
        t.caption += (f"\n{result['interrupted']}: what was measured before"
                      + (f" (not measured: {', '.join(missing)})" if missing else ""))
    return t


def rounds_note(result: dict) -> str:
    """How much the bench measured: "1 round after 1 warm-up render" and, when it was chosen, that it is
    the quick default."""
    warm = len(result["warm_up"])
    note = f"{result['rounds']} round{'s' if result['rounds'] > 1 else ''} after {warm} warm-up render{'s' if warm > 1 else ''}"
    return note + (": the quick default, --full for every chunk in 3 rounds" if result.get("quick") else "")
