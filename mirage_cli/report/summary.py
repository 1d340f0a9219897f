"""The end-of-render summary table (Rich) that ``mirage render`` prints on stderr."""

from __future__ import annotations

from mirage_cli.profiling import profiler as P
from mirage_cli.report.build import display_order, other_seconds, per_call
from mirage_cli.report.format import fmt_bytes, fmt_count, fmt_fps, fmt_seconds, fmt_share, share_of


def calls_text(stage: dict) -> str:
    """A stage's call count, or "-" when it never ran."""
    return str(stage["calls"]) if stage["calls"] else "-"


def summary_table(report: dict):
    """A ``rich.table.Table`` for the end of a render: per-stage totals and share, frames/s,
    cache size and peak memory."""
    from rich.table import Table

    wall = report["wall_seconds"]
    s = report["summary"]
    table = Table(title=f"Mirage render: {report['frames']} frames in {fmt_seconds(wall)}", title_justify="left")
    table.add_column("stage")
    table.add_column("total", justify="right")
    table.add_column("share", justify="right")
    table.add_column("calls", justify="right")
    table.add_column("per call", justify="right")
    for name in display_order(report):
        st = report["stages"][name]
        label = name if st["parent"] is None else f"  └ {name}"
        table.add_row(
            label,
            fmt_seconds(st["seconds"]),
            fmt_share(st["share"]),
            calls_text(st),
            fmt_seconds(per_call(st)),
            style="dim" if st["parent"] is not None else None,
        )
    other = other_seconds(report)
    if other > 0:
        table.add_row("other", fmt_seconds(other), share_of(other, wall), "-", "-", style="dim")
    table.add_section()
    table.add_row("frames/s", fmt_fps(report["frames_per_second"]), "", "", "")
    cache = "-" if s["cache_points"] is None else f"{fmt_count(s['cache_points'])} pts"
    table.add_row("cache", cache, fmt_bytes(s["cache_bytes"]) if s["cache_bytes"] is not None else "", "", "")
    kind = "GPU allocated" if s["peak_memory_kind"] == P.PEAK_CUDA else "process RSS"
    table.add_row("peak memory", fmt_bytes(s["peak_memory_bytes"]), kind, "", "")
    table.add_row("memory module", fmt_seconds(s["memory_module_seconds"]), share_of(s["memory_module_seconds"], wall), "", "")
    return table
