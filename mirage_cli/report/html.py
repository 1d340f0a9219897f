"""``report.html``: one self-contained page from a ``report.json`` dict.

The page is ``template.html`` (Jinja2, autoescaped: user text such as the prompt cannot inject
markup) filled with rows prepared here; figures are embedded as base64 PNG, styles are inline,
nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup

from mirage_cli.profiling import profiler as P
from mirage_cli.report import figures as F
from mirage_cli.report.build import display_order, other_seconds, per_call, top_level_stages
from mirage_cli.report.format import fmt_bytes, fmt_count, fmt_fps, fmt_seconds, fmt_share, share_of
from mirage_cli.report.summary import calls_text

CHUNK_COLUMNS = ("chunk", "frames", "wall", "frames/s", "denoise", "memory", "coverage", "pinned tokens",
                 "points added", "cache points", "cache size", "peak memory")
BAR_PIXELS = 160  # width of a 100% share bar in the stage table


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def _shown(pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    """(key, value as text cut to 300 characters) for a key/value table."""
    out = []
    for key, value in pairs:
        text = value if isinstance(value, str) else json.dumps(value)
        out.append((key, text if len(text) <= 300 else text[:297] + "..."))
    return out


def _cards(report: dict) -> list[dict]:
    s, wall = report["summary"], report["wall_seconds"]
    cache = "-" if s["cache_points"] is None else fmt_count(s["cache_points"]) + " pts"
    step = s["denoise_step_mean_seconds"]
    return [
        {"key": "frames", "value": fmt_count(report["frames"]), "sub": f"{len(report['chunks'])} chunks"},
        {"key": "wall time", "value": fmt_seconds(wall), "sub": f"outside chunks {fmt_seconds(report['setup']['seconds'])}"},
        {"key": "frames / s", "value": fmt_fps(report["frames_per_second"]), "sub": f"step {fmt_seconds(step)}" if step else ""},
        {"key": "peak memory", "value": fmt_bytes(s["peak_memory_bytes"]),
         "sub": "GPU max allocated" if s["peak_memory_kind"] == P.PEAK_CUDA else "process RSS"},
        {"key": "memory cache", "value": cache, "sub": fmt_bytes(s["cache_bytes"]) if s["cache_bytes"] is not None else "no memory"},
        {"key": "memory module", "value": fmt_seconds(s["memory_module_seconds"]),
         "sub": f"{share_of(s['memory_module_seconds'], wall)} of wall"},
    ]


def _stage_rows(report: dict) -> list[dict]:
    top = top_level_stages(report)
    rows = []
    for name in display_order(report):
        st = report["stages"][name]
        rows.append({
            "name": name,
            "css": "child" if st["parent"] is not None else "",
            "color": F.stage_color(name, top.index(name) if name in top else 0),
            "total": fmt_seconds(st["seconds"]),
            "share": fmt_share(st["share"]),
            "bar": f"{max(0.0, min(1.0, st['share'])) * BAR_PIXELS:.0f}",
            "calls": calls_text(st),
            "per_call": fmt_seconds(per_call(st)),
        })
    other, wall = other_seconds(report), report["wall_seconds"]
    if other > 0:
        rows.append({"name": "other (untimed)", "css": "other", "color": F.STAGE_COLORS["other"], "total": fmt_seconds(other),
                     "share": share_of(other, wall), "bar": f"{(other / wall if wall > 0 else 0) * BAR_PIXELS:.0f}",
                     "calls": "-", "per_call": "-"})
    return rows


def _chunk_rows(report: dict) -> list[list[str]]:
    rows = []
    for c in report["chunks"]:
        memory = sum(c["stages"].get(s, 0.0) for s in P.MEMORY_MODULE_STAGES)
        coverage = "-" if c["memory_coverage"] is None else f"{100 * c['memory_coverage']:.1f}%"
        rows.append([
            str(c["index"]), str(c["frames"]), fmt_seconds(c["wall_seconds"]), fmt_fps(c["frames_per_second"]),
            fmt_seconds(c["stages"].get(P.DENOISE)), fmt_seconds(memory), coverage, fmt_count(c["pinned_tokens"]),
            fmt_count(c["points_added"]), fmt_count(c["cache_points"]), fmt_bytes(c["cache_bytes"]),
            fmt_bytes(c["peak_memory_bytes"]),
        ])
    return rows


def _headline(config: Mapping, lineage: Mapping | None = None) -> str:
    """A one-line summary of the most telling config keys that exist, and a branch's parent."""
    keys = ("scene", "preset", "model", "memory", "pin", "steps", "seed", "resolution", "width", "height", "chunks")
    parts = [f"{k} {config[k]}" for k in keys if k in config and not isinstance(config[k], (dict, list))]
    if lineage:
        parts.append(f"branch of {lineage['parent']} after chunk {lineage['chunk']}")
    return " · ".join(parts)


def _figures(report: dict) -> dict[str, Markup]:
    made = {
        "stage": (F.figure_stage_time, "Time per stage per chunk"),
        "steps": (F.figure_step_times, "Denoising step time"),
        "cache": (F.figure_cache, "Memory cache along the trajectory"),
        "peak": (F.figure_peak_memory, "Peak memory per chunk"),
        "coverage": (F.figure_coverage, "Memory coverage per chunk"),
        "camera": (F.figure_camera_path, "Camera path from above"),
    }
    return {key: Markup(F.figure_to_img(draw(report), alt)) for key, (draw, alt) in made.items()}


def _template():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("mirage_cli.report", ""), autoescape=select_autoescape(["html"]))
    return env.get_template("template.html")


def render_html(report: dict, sheet_jpeg: bytes | None = None, video_name: str | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS, figures as base64 PNG). ``sheet_jpeg``: a
    contact sheet of the video (``report.contact_sheet``), embedded; ``video_name``: the video's file
    name beside the page, played in it (a page opened elsewhere still shows the sheet)."""
    dev = report["device"]
    hardware = dev.get("gpu_name") or dev.get("cpu_model") or dev["name"]
    environment = [("device", f"{dev['name']} · {hardware}"), ("timer", dev["timer"]), ("torch threads", dev["torch_threads"]),
                   ("cuda", dev.get("cuda_version") or "-"), ("cpus", dev.get("cpu_count") or "-"), *report["packages"].items()]
    if dev["timer"] == P.TIMER_CUDA_EVENTS:
        timer_note = "Stages were timed with CUDA events (GPU stream time); chunk wall times are host time."
    else:
        timer_note = "Stages were timed with the host clock (perf_counter)."
    return _template().render(
        report=report,
        headline=_headline(report["config"], report.get("lineage")),
        hardware=hardware,
        cards=_cards(report),
        stage_rows=_stage_rows(report),
        chunk_columns=CHUNK_COLUMNS,
        chunk_rows=_chunk_rows(report),
        figures=_figures(report),
        config_pairs=_shown(_flatten(report["config"])),
        environment_pairs=_shown(environment),
        timer_note=timer_note,
        sheet=None if sheet_jpeg is None else base64.b64encode(sheet_jpeg).decode("ascii"),
        video_name=video_name,
    )
