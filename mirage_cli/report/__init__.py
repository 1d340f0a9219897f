"""The render report: ``report.json`` (versioned, described by ``schema.json``), ``report.html`` and
a Rich summary.

- ``build``: ``build_report`` gathers the configuration, device, versions, per-stage totals,
  per-chunk profiles (``mirage_cli.profiling.profiler``) and the camera path into one dict;
  ``describe_device``; ``load_schema``.
- ``figures``: the matplotlib figures of the page.
- ``html``: ``render_html`` fills ``template.html``.
- ``summary``: ``summary_table``, the table ``mirage render`` prints at the end.
- ``format``: numbers for people, shared with ``mirage bench``.

``RunDir.write_report`` writes both files into a run directory.
"""

from mirage_cli.report.build import REPORT_VERSION, build_report, describe_device, load_schema
from mirage_cli.report.format import fmt_bytes, fmt_count, fmt_fps, fmt_seconds, fmt_share
from mirage_cli.report.html import render_html
from mirage_cli.report.summary import summary_table

__all__ = [
    "REPORT_VERSION",
    "build_report",
    "describe_device",
    "load_schema",
    "render_html",
    "summary_table",
    "fmt_bytes",
    "fmt_count",
    "fmt_fps",
    "fmt_seconds",
    "fmt_share",
]
