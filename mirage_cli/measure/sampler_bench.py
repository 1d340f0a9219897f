"""``mirage bench --sampler dmd``: a few-step sampler beside 50-step UniPC, on one scene and seed.

One process, one loaded backbone (with the ``--lora`` stack, when given, in both), latent memory. A
warm-up render of each, then ``repeat`` rounds alternating the two (drift in the machine's speed hits
both alike); numbers are medians over the rounds, ratios are taken between medians of this one run.

Per chunk, from each render's report: the chunk's wall seconds and its stages grouped as a user reads
them (``STAGE_GROUPS``): denoise, decode, encode (the MP4 segment), outputs (latents, PNGs,
checkpoint), depth, memory (query and insert), and the wait for the background writer. Encode and
outputs run behind the next chunk's denoising (``mirage_cli.render.write_behind``): their seconds are
work done, not all of it waited for; ``write_wait`` is what the render thread waited. The stage that
takes the most of a few-step chunk's wall time is named: it is the next thing to make faster.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from mirage_cli.base.options import BackboneOptions, MemoryMode, RenderOptions
from mirage_cli.measure.rounds import alternating_rounds, medians
from mirage_cli.profiling.profiler import (
    BACKGROUND_STAGES,
    CHECKPOINT_WRITE,
    DECODE,
    DENOISE,
    DEPTH_ESTIMATION,
    MEMORY_INSERT,
    MEMORY_QUERY,
    MP4_WRITE,
    OUTPUTS_WRITE,
    WRITE_WAIT,
)
from mirage_cli.render.events import RenderEvents
from mirage_cli.render.session import load_backbone_for, render
from mirage_cli.report.format import fmt_seconds
from mirage_cli.spec.plan import Plan

STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "denoise": (DENOISE,),
    "decode": (DECODE,),
    "encode": (MP4_WRITE, BACKGROUND_STAGES[MP4_WRITE]),
    "outputs": (OUTPUTS_WRITE, BACKGROUND_STAGES[OUTPUTS_WRITE], CHECKPOINT_WRITE, BACKGROUND_STAGES[CHECKPOINT_WRITE]),
    "depth": (DEPTH_ESTIMATION,),
    "memory": (MEMORY_QUERY, MEMORY_INSERT),
    "write_wait": (WRITE_WAIT,),
}
"""The columns of the per-chunk split: group -> the profiler stages summed into it."""

ON_THE_CRITICAL_PATH = ("denoise", "decode", "depth", "memory", "write_wait")
"""Groups the render thread waits for (encode and outputs overlap the next chunk's denoising)."""


def chunk_split(report: dict) -> dict:
    """Seconds per chunk (mean over the render's chunks): ``wall`` and one entry per ``STAGE_GROUPS``."""
    chunks = report["chunks"]
    split = {"wall": statistics.fmean(c["wall_seconds"] for c in chunks)}
    for group, names in STAGE_GROUPS.items():
        split[group] = statistics.fmean(sum(c["stages"].get(name, 0.0) for name in names) for c in chunks)
    return split


def _render(plan: Plan, backbone, options: BackboneOptions, out: Path) -> dict:
    result = render(plan, RenderOptions(out=out, backbone=options, restart=True), RenderEvents(), backbone=backbone)
    return {"end_to_end_seconds": float(result.report["wall_seconds"]), **chunk_split(result.report)}


def run_sampler_bench(baseline: Plan, few_step: Plan, options: BackboneOptions, *, repeat: int = 3,
                      work_dir: Path | None = None, on_run=None) -> dict:
    """Render ``baseline`` (UniPC) and ``few_step`` (the same scene with a few-step sampler), latent
    memory; returns per-chunk splits (medians), the speed-ups and the stage that dominates few-step chunks.

    Raises:
        ValueError: ``repeat`` below 1, or plans that differ in more than sampler, steps and guidance.
    """
    latent = replace(baseline.memory, mode=MemoryMode.LATENT)
    variants = {"unipc": replace(baseline, memory=latent), few_step.sampler.name: replace(few_step, memory=latent)}
    if baseline.sampler.few_step or not few_step.sampler.few_step:
        raise ValueError("expected a UniPC baseline and a few-step plan")
    backbone = load_backbone_for(variants["unipc"], options)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="mirage-bench-sampler-") as tmp:
        rows = alternating_rounds(variants, lambda plan, out: _render(plan, backbone, options, out), repeat=repeat,
                                  folder=Path(tmp), on_run=on_run)
    runs = medians(rows)
    base, fast = runs["unipc"], runs[few_step.sampler.name]
    waited = {group: fast[group] for group in ON_THE_CRITICAL_PATH}
    return {
        "scene": str(baseline.spec_path), "frames": baseline.frames, "chunks": len(baseline.chunks),
        "resolution": f"{baseline.width}x{baseline.height}", "device": str(backbone.device), "repeats": repeat,
        "settings": {name: {"sampler": plan.sampler.summary(), "steps": plan.steps, "guidance": plan.guidance}
                     for name, plan in variants.items()},
        "loras": [lora.summary() for lora in baseline.loras],
        "runs": runs,
        "speedup_chunk": base["wall"] / fast["wall"] if fast["wall"] > 0 else None,
        "speedup_denoise": base["denoise"] / fast["denoise"] if fast["denoise"] > 0 else None,
        "dominant_stage": max(waited, key=waited.get),
    }


def sampler_bench_table(result: dict):
    """The result as a Rich table: one row per stage group, one column per sampler, seconds per chunk."""
    from rich.table import Table

    names = list(result["runs"])
    table = Table(title=f"{result['resolution']}, {result['frames']} frames, {result['chunks']} chunk(s), "
                        f"{result['device']}, median of {result['repeats']}: seconds per chunk")
    table.add_column("stage")
    for name in names:
        settings = result["settings"][name]
        table.add_column(f"{name} ({settings['steps']} steps, guidance {settings['guidance']:g})", justify="right")
    table.add_column(f"{names[0]} / {names[1]}", justify="right")
    for group in ["wall", *STAGE_GROUPS]:
        a, b = (result["runs"][name][group] for name in names)
        table.add_row("chunk" if group == "wall" else group, fmt_seconds(a), fmt_seconds(b), f"{a / b:.1f}x" if b > 0 else "-")
    table.caption = (f"a few-step chunk waits most on {result['dominant_stage']}; encode and outputs overlap the next "
                     f"chunk's denoising")
    return table
