"""``mirage calibrate-cache``: the per-step residual magnitude ratios MagCache needs, measured on the
user's model at the scene's size, written atomically to a JSON file the renders read
(``step_cache.calibration``).

The first chunk of the scene is rendered once with diffusers' MagCache in calibration mode (it skips
nothing and records, at every step, the mean ratio of the residual's magnitude to the previous
step's, per CFG branch). The file keeps both branches and the settings it was measured with; a
render (and ``mirage validate``) refuses a calibration of another model, size or step count (exit 2;
``mirage_cli.spec.step_cache.read_calibration`` checks the file, ``calibration_misfit`` the fit).
MagCache takes one curve for both branches: the prompt branch's is used (``ratios``).

File (``format`` ``mirage-magcache-calibration``, version 1)::

    {"format": ..., "version": 1, "model": "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "resolution": "1280x704",
     "chunk_frames": 121, "steps": 50, "shift": 5.0, "guidance": 5.0, "seed": 0,
     "ratios": [1.0, ...], "ratios_by_branch": {"cond": [...], "uncond": [...]}, "created": "..."}
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from mirage_cli.base.atomic import atomic_write_text
from mirage_cli.base.options import BackboneOptions, RenderOptions
from mirage_cli.denoise.step_cache import CALIBRATING, calibration_ratios
from mirage_cli.render.config import render_config
from mirage_cli.render.events import RenderEvents
from mirage_cli.render.session import load_backbone_for, render
from mirage_cli.spec.plan import Plan, trim_plan
from mirage_cli.spec.step_cache import CALIBRATION_FORMAT, StepCacheSettings


def calibrate_mag_cache(plan: Plan, options: BackboneOptions, out: Path, work_dir: Path | None = None) -> dict:
    """Measure the ratios on the first chunk of ``plan`` and write them to ``out``; returns the file's content."""
    first = replace(trim_plan(plan, 1), step_cache=StepCacheSettings(CALIBRATING))
    backbone = load_backbone_for(first, options)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="mirage-calibrate-") as tmp:
        render(first, RenderOptions(out=Path(tmp) / "run", backbone=options, restart=True), RenderEvents(), backbone=backbone)
    by_branch = calibration_ratios(backbone.transformer)
    if "cond" not in by_branch or len(by_branch["cond"]) != plan.steps:
        raise RuntimeError(f"the calibration pass recorded {len(by_branch.get('cond', []))} ratios, expected {plan.steps}")
    config = render_config(first, RenderOptions(backbone=options))
    content = {
        "format": CALIBRATION_FORMAT, "version": 1, "model": config["model"], "resolution": f"{plan.width}x{plan.height}",
        "chunk_frames": plan.chunk_frames, "steps": plan.steps, "shift": plan.shift, "guidance": plan.guidance, "seed": plan.seed,
        "ratios": by_branch["cond"], "ratios_by_branch": by_branch,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(out, json.dumps(content, indent=2) + "\n")
    return content


