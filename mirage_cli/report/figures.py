"""The report's figures (matplotlib, Agg): time per stage and per step, cache size, peak memory,
coverage and the camera path, each from a ``report.json`` dict; ``figure_to_img`` embeds one in HTML."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from mirage_cli.camera.plot import SEGMENT_COLORS, draw_path
from mirage_cli.profiling import profiler as P
from mirage_cli.report.build import top_level_stages

STAGE_COLORS = {
    P.MODEL_LOAD: "#9e9e9e",
    P.TEXT_ENCODING: "#b39ddb",
    P.START_ENCODE: "#80cbc4",
    P.MEMORY_QUERY: "#26a69a",
    P.DENOISE: "#3f6fd8",
    P.DENOISE_STEP: "#7f9ee8",
    P.DECODE: "#f29d38",
    P.MP4_WRITE: "#e6c229",
    P.OUTPUTS_WRITE: "#c9b458",
    P.DEPTH_ESTIMATION: "#9c5ec2",
    P.MEMORY_INSERT: "#5cb85c",
    P.VAE_ENCODE: "#e0544b",
    P.CHECKPOINT_WRITE: "#8d6e63",
    "other": "#d5d8dc",
}
_EXTRA_COLORS = ("#17becf", "#bcbd22", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2")
_INK = "#2b2f36"
_GRID = "#e6e8eb"


def stage_color(name: str, i: int) -> str:
    return STAGE_COLORS.get(name, _EXTRA_COLORS[i % len(_EXTRA_COLORS)])


def new_figure(width: float = 5.6, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    style_axes(ax)
    return fig, ax


def style_axes(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa1a9")
    ax.tick_params(colors=_INK, labelsize=9)
    ax.grid(axis="y", color=_GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.title.set_color(_INK)
    ax.xaxis.label.set_color(_INK)
    ax.yaxis.label.set_color(_INK)


def empty_axes(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#7a828c", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)


def _chunk_axis(ax, chunks: list[dict]) -> list[int]:
    idx = [c["index"] for c in chunks]
    ax.set_xlabel("chunk")
    ax.set_xticks(idx if len(idx) <= 24 else idx[:: max(1, len(idx) // 12)])
    if idx:
        ax.set_xlim(min(idx) - 0.6, max(idx) + 0.6)
    return idx


def figure_stage_time(report: dict):
    """Stacked bars: seconds per top-level stage per chunk, plus untimed 'other'."""
    fig, ax = new_figure(11.2, 3.6)
    chunks = report["chunks"]
    if not chunks:
        empty_axes(ax, "no chunks")
        return fig
    idx = _chunk_axis(ax, chunks)
    names = [n for n in top_level_stages(report) if any(c["stages"].get(n, 0) > 0 for c in chunks)]
    bottom = np.zeros(len(chunks))
    for i, name in enumerate(names):
        vals = np.array([c["stages"].get(name, 0.0) for c in chunks])
        ax.bar(idx, vals, bottom=bottom, width=0.7, color=stage_color(name, i), label=name, edgecolor="white", linewidth=0.4)
        bottom += vals
    other = np.array([max(0.0, c["wall_seconds"] - b) for c, b in zip(chunks, bottom)])
    if other.sum() > 0:
        ax.bar(idx, other, bottom=bottom, width=0.7, color=STAGE_COLORS["other"], label="other (untimed)", edgecolor="white", linewidth=0.4)
    ax.set_ylabel("seconds")
    ax.set_title("Time per stage per chunk", loc="left", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def figure_cache(report: dict):
    """Cache points (left axis) and MiB (right axis) after each chunk, along the trajectory."""
    fig, ax = new_figure()
    chunks = [c for c in report["chunks"] if c["cache_points"] is not None]
    ax.set_title("Memory cache along the trajectory", loc="left", fontsize=11)
    if not chunks:
        empty_axes(ax, "no memory in this run")
        return fig
    x = [c["frame_end"] for c in chunks]
    pts = [c["cache_points"] for c in chunks]
    ax.plot(x, pts, marker="o", color="#3f6fd8", linewidth=2, markersize=5, label="points")
    ax.fill_between(x, pts, color="#3f6fd8", alpha=0.08)
    ax.set_xlabel("frames rendered")
    ax.set_ylabel("points", color="#3f6fd8")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0, right=max(x) * 1.03 if max(x) > 0 else 1)
    ax.yaxis.set_major_formatter(_thousands())
    if any(c["cache_bytes"] is not None for c in chunks):
        ax2 = ax.twinx()
        top = max(c["cache_bytes"] or 0 for c in chunks)
        scale, unit = next(((2**e, u) for e, u in ((30, "GiB"), (20, "MiB"), (10, "KiB")) if top >= 2**e), (1, "bytes"))
        size = [(c["cache_bytes"] or 0) / scale for c in chunks]
        ax2.plot(x, size, marker="s", linestyle="--", color="#e0544b", linewidth=1.5, markersize=4, label=unit)
        ax2.set_ylabel(unit, color="#e0544b")
        ax2.set_ylim(bottom=0)
        ax2.tick_params(labelsize=9, colors=_INK)
        for side in ("top",):
            ax2.spines[side].set_visible(False)
        ax2.spines["right"].set_color("#9aa1a9")
        lines = ax.get_lines()[:1] + ax2.get_lines()[:1]
        ax.legend(lines, [line.get_label() for line in lines], loc="lower right", frameon=False, fontsize=9)
    return fig


def _thousands():
    from matplotlib.ticker import FuncFormatter

    def fmt(v, _pos):
        if abs(v) >= 1e6:
            return f"{v / 1e6:g}M"
        if abs(v) >= 1e3:
            return f"{v / 1e3:g}k"
        return f"{v:g}"

    return FuncFormatter(fmt)


def figure_peak_memory(report: dict):
    """Bars: peak memory per chunk (GiB or MiB, whichever reads better)."""
    fig, ax = new_figure()
    chunks = report["chunks"]
    kind = "GPU max allocated" if report["summary"]["peak_memory_kind"] == P.PEAK_CUDA else "process RSS"
    ax.set_title(f"Peak memory per chunk ({kind})", loc="left", fontsize=11)
    if not chunks:
        empty_axes(ax, "no chunks")
        return fig
    idx = _chunk_axis(ax, chunks)
    peak = max(c["peak_memory_bytes"] for c in chunks)
    scale, unit = (2**30, "GiB") if peak >= 2**30 else (2**20, "MiB")
    vals = [c["peak_memory_bytes"] / scale for c in chunks]
    bars = ax.bar(idx, vals, width=0.7, color="#9c5ec2")
    if len(chunks) <= 16:
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=8, color=_INK, padding=2)
    ax.set_ylabel(unit)
    ax.set_ylim(0, max(vals) * 1.15 if max(vals) > 0 else 1)
    return fig


def figure_coverage(report: dict):
    """Bars: percentage of latent cells the memory covered per chunk."""
    fig, ax = new_figure()
    ax.set_title("Memory coverage per chunk", loc="left", fontsize=11)
    chunks = [c for c in report["chunks"] if c["memory_coverage"] is not None]
    if not chunks:
        empty_axes(ax, "no memory in this run")
        return fig
    idx = _chunk_axis(ax, chunks)
    vals = [100 * c["memory_coverage"] for c in chunks]
    bars = ax.bar(idx, vals, width=0.7, color="#26a69a")
    if len(chunks) <= 16:
        ax.bar_label(bars, labels=[f"{v:.0f}%" for v in vals], fontsize=8, color=_INK, padding=2)
    ax.set_ylim(0, 109)
    ax.set_ylabel("% of latent cells covered")
    return fig


def figure_camera_path(report: dict):
    """The camera path seen from above (``camera.plot.draw_path``), coloured by chunk, with viewing
    directions and chunk ends marked."""
    fig, ax = new_figure()
    ax.set_title("Camera path from above (x-z)", loc="left", fontsize=11)
    cam = report.get("camera")
    if not cam or not cam["positions"]:
        empty_axes(ax, "no camera path")
        return fig
    ax.grid(axis="both", color=_GRID, linewidth=0.8)
    ends = [c["frame_end"] for c in report["chunks"]] or None
    draw_path(ax, np.asarray(cam["positions"]), view="above", forward=np.asarray(cam["forward"]), segment_ends=ends)
    return fig


def _chunk_color(i: int) -> str:
    return SEGMENT_COLORS[i % 2]


def figure_step_times(report: dict):
    """Line: seconds of every denoising step, chunk after chunk."""
    fig, ax = new_figure(11.2, 2.6)
    ax.set_title("Denoising step time", loc="left", fontsize=11)
    chunks = [c for c in report["chunks"] if c["step_seconds"]]
    if not chunks:
        empty_axes(ax, "no denoising steps timed")
        return fig
    offset = 0
    markers = sum(len(c["step_seconds"]) for c in chunks) <= 150
    scale, unit = (1.0, "s") if max(max(c["step_seconds"]) for c in chunks) >= 1 else (1000.0, "ms")
    for i, c in enumerate(chunks):
        steps = np.asarray(c["step_seconds"]) * scale
        xs = np.arange(offset, offset + len(steps))
        ax.plot(xs, steps, color=_chunk_color(i), linewidth=1.4, marker="." if markers else None)
        offset += len(steps)
    ax.set_xlabel("step (all chunks, alternating colour per chunk)")
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=0)
    return fig


def figure_to_img(fig, alt: str) -> str:
    """An ``<img>`` tag with the figure as an embedded base64 PNG (2x pixels for sharp screens)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=200, facecolor="white")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
