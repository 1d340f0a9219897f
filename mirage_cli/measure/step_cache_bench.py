"""``mirage bench --cache METHOD``: what a step cache buys and what it costs, on one scene and seed.

One process, one loaded backbone, latent memory. A warm-up render without and with the cache, then
``repeat`` rounds alternating the two (so drift in the machine's speed hits both alike); numbers are
medians over the rounds and ratios are taken between medians of this one run. Speed: seconds per
denoising step and end to end, and the share of transformer blocks really computed (counted, so it
does not depend on how busy the machine is). Change: the decoded frames of the cached render against
the uncached one (from each render's lossless ``video.mkv``: exactly the frames), as the largest
absolute difference (0-255) and the PSNR.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from mirage_cli.base.options import BackboneOptions, MemoryMode, RenderOptions, VideoOptions
from mirage_cli.base.video import read_video
from mirage_cli.denoise.step_cache import count_block_computations
from mirage_cli.evaluation.frames import psnr
from mirage_cli.measure.rounds import alternating_rounds, medians
from mirage_cli.render.events import RenderEvents
from mirage_cli.render.session import load_backbone_for, render
from mirage_cli.report.format import fmt_seconds
from mirage_cli.spec.plan import Plan
from mirage_cli.spec.step_cache import StepCacheSettings


def _render(plan: Plan, backbone, options: BackboneOptions, out: Path) -> dict:
    video = VideoOptions(lossless=True)
    with count_block_computations(backbone.transformer) as blocks:
        result = render(plan, RenderOptions(out=out, backbone=options, video=video, restart=True), RenderEvents(), backbone=backbone)
    s = result.report["summary"]
    return {"end_to_end_seconds": float(result.report["wall_seconds"]), "step_seconds": float(s["denoise_step_mean_seconds"]),
            "blocks_computed": blocks[0], "video": out / "video.mkv"}


def frame_change(a: Path, b: Path) -> dict:
    """Largest absolute difference and PSNR of two videos' frames (uint8)."""
    fa, _ = read_video(a)
    fb, _ = read_video(b)
    return {"max_abs": int(np.abs(fa.astype(np.int16) - fb.astype(np.int16)).max()), "psnr_db": psnr(fa, fb)}


def run_cache_bench(plan: Plan, options: BackboneOptions, cache: StepCacheSettings, *, repeat: int = 3,
                    work_dir: Path | None = None, on_run=None) -> dict:
    """Render ``plan`` (latent memory) without and with ``cache``; returns timings, ratios and the change."""
    plain = replace(plan, memory=replace(plan.memory, mode=MemoryMode.LATENT), step_cache=StepCacheSettings())
    cached = replace(plain, step_cache=cache)
    backbone = load_backbone_for(plain, options)
    variants = {"none": plain, cache.method: cached}
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="mirage-bench-cache-") as tmp:
        rows = alternating_rounds(variants, lambda p, out: _render(p, backbone, options, out), repeat=repeat,
                                  folder=Path(tmp), on_run=on_run)
        change = frame_change(rows["none"][0]["video"], rows[cache.method][0]["video"])
    runs = medians(rows, ("end_to_end_seconds", "step_seconds", "blocks_computed"))
    base, fast = runs["none"], runs[cache.method]
    return {
        "scene": str(plan.spec_path), "frames": plan.frames, "resolution": f"{plan.width}x{plan.height}", "steps": plan.steps,
        "device": str(backbone.device), "cache": cache.summary(), "repeats": repeat, "runs": runs,
        "speedup_step": base["step_seconds"] / fast["step_seconds"] if fast["step_seconds"] > 0 else None,
        "speedup_end_to_end": base["end_to_end_seconds"] / fast["end_to_end_seconds"] if fast["end_to_end_seconds"] > 0 else None,
        "blocks_computed_share": fast["blocks_computed"] / base["blocks_computed"] if base["blocks_computed"] else None,
        "change": change,
    }


def cache_bench_table(result: dict):
    """A Rich table of a ``run_cache_bench`` result."""
    from rich.table import Table

    t = Table(title=f"mirage bench --cache {result['cache']['method']}: {result['scene']} ({result['frames']} frames, "
              f"{result['resolution']}, {result['steps']} steps, {result['device']})")
    for column in ("cache", "per step", "end-to-end", "blocks computed"):
        t.add_column(column, justify="left" if column == "cache" else "right")
    for name, run in result["runs"].items():
        t.add_row(name, fmt_seconds(run["step_seconds"]), fmt_seconds(run["end_to_end_seconds"]), f"{run['blocks_computed']:.0f}")
    change = result["change"]
    psnr = "identical" if change["psnr_db"] >= 100 else f"{change['psnr_db']:.1f} dB"
    t.caption = (f"speed-up per step {result['speedup_step']:.2f}x, end to end {result['speedup_end_to_end']:.2f}x, "
                 f"{result['blocks_computed_share']:.0%} of the blocks computed | frames vs no cache: max-abs "
                 f"{change['max_abs']}, PSNR {psnr}")
    return t
