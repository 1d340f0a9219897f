"""``mirage eval --html OUT``: one self-contained page of an eval document.

The metrics table and notes, the errors along the path (per frame pair), the requested camera path
from above with the path chained from the frames (after the similarity fit), and the worst pairs side
by side (largest reprojection error, lowest revisit PSNR, largest seam). Figures are base64 PNG,
frames base64 JPEG; Jinja2 autoescapes every text; nothing is fetched from the network; the file is
written atomically.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from mirage_cli.base.atomic import atomic_write_text
from mirage_cli.report import figures as F

WORST = 3
THUMB_WIDTH = 480

TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>mirage eval: {{ doc.video }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; color: #2b2f36; margin: 24px auto; max-width: 1180px; padding: 0 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; } td, th { padding: 4px 10px; border-bottom: 1px solid #e6e8eb; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .note { color: #8a5a00; }
.pair { display: inline-block; margin: 0 18px 18px 0; vertical-align: top; } .pair img { display: block; max-width: 100%; }
.figs img { max-width: 100%; } h2 { margin-top: 28px; }
</style></head><body>
<h1>mirage eval</h1>
<p>{{ doc.video }} &middot; {{ doc.frames }} frames at {{ "%g"|format(doc.fps) }} fps &middot; camera {{ doc.camera }}
&middot; depth: {{ doc.depth or "none" }} &middot; schema {{ doc.schema }}</p>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>value</th><th>unit</th><th>better</th><th>pairs</th><th>what</th></tr>
{% for name, m in doc.metrics.items() %}<tr><td>{{ name }}</td>
<td class="num">{{ "-" if m.value is none else "%.4g"|format(m.value) }}</td><td>{{ m.unit }}</td><td>{{ m.direction }}</td>
<td class="num">{{ m.pairs|length }}</td><td>{{ m.what }}</td></tr>
{% endfor %}</table>
{% for note in doc.notes %}<p class="note">note: {{ note }}</p>{% endfor %}
<h2>Along the path</h2><div class="figs">{% for fig in figures %}{{ fig }}{% endfor %}</div>
{% for group in worst %}<h2>{{ group.title }}</h2>
{% if not group.pairs %}<p>none</p>{% endif %}
{% for p in group.pairs %}<div class="pair"><b>{{ p.caption }}</b><br>{{ p.a }}{{ p.b }}</div>{% endfor %}
{% endfor %}
</body></html>
"""


def _jpeg(frame: np.ndarray, alt: str) -> str:
    from markupsafe import Markup, escape
    from PIL import Image

    image = Image.fromarray(frame)
    if image.width > THUMB_WIDTH:
        image = image.resize((THUMB_WIDTH, round(image.height * THUMB_WIDTH / image.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return Markup(f'<img alt="{escape(alt)}" src="data:image/jpeg;base64,{data}">')


def _errors_figure(doc: dict):
    """One panel per error along the path: per pair at its first frame (a dot per pair, all strides)."""
    from matplotlib.figure import Figure

    details = doc["details"]
    ate = details["trajectory_error"]
    panels = [
        ("rotation error (deg)", [(p["i"], p["rotation_error_deg"]) for p in details["camera_following"]["pairs"]], False),
        ("reprojection error (px)", [(r["i"], r["epe_median_px"]) for r in details["reprojection"]], False),
        ("trajectory error (path units)", list(zip(ate["keyframes"], ate["errors"], strict=True)), True),
    ]
    fig = Figure(figsize=(11.2, 6.4), dpi=100, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True)
    for k, (ax, (label, points, joined)) in enumerate(zip(axes, panels, strict=True)):
        F.style_axes(ax)
        ax.set_ylabel(label, fontsize=9)
        if not points:
            F.empty_axes(ax, "nothing measured")
            continue
        points = sorted(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linestyle="-" if joined else "none", color=F.stage_color("", k))
        ax.set_ylim(bottom=0)
        for boundary in details["seams"]["boundaries"]:
            ax.axvline(boundary["j"], color="#9aa1a9", linestyle=":", linewidth=1)
    axes[-1].set_xlabel("frame (the first frame of a pair; dotted: chunk boundaries)")
    return fig


def _path_figure(doc: dict, world_from_cam: np.ndarray):
    fig, ax = F.new_figure(5.6, 4.2)
    ate = doc["details"]["trajectory_error"]
    requested = world_from_cam[:, :3, 3]
    fitted = np.asarray(ate["fitted"])
    ax.plot(requested[:, 0], requested[:, 2], color="#2b2f36", linewidth=1.6, label="requested path")
    ax.plot(fitted[:, 0], fitted[:, 2], color="#d62728", marker=".", linewidth=1.2, label="chained from the frames (fitted)")
    ax.set_xlabel("x")
    ax.set_ylabel("z (seen from above)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(frameon=False, fontsize=9)
    return fig


def _worst(doc: dict, frames: np.ndarray) -> list[dict]:
    details = doc["details"]

    def pairs(rows, key, caption, reverse):
        rows = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[key], reverse=reverse)[:WORST]
        return [{"caption": caption(r), "a": _jpeg(frames[r["i"]], f"frame {r['i']}"), "b": _jpeg(frames[r["j"]], f"frame {r['j']}")}
                for r in rows]

    return [
        {"title": "Largest reprojection error",
         "pairs": pairs(details["reprojection"], "epe_median_px",
                        lambda r: f"frames {r['i']} and {r['j']}: {r['epe_median_px']:.2f} px", True)},
        {"title": "Lowest revisit PSNR",
         "pairs": pairs(details["revisits"], "psnr_db", lambda r: f"frames {r['i']} and {r['j']}: {r['psnr_db']:.1f} dB", False)},
        {"title": "Largest seam",
         "pairs": pairs(details["seams"]["boundaries"], "ratio",
                        lambda r: f"frames {r['i']} and {r['j']}: {r['ratio']:.2f}x the typical change", True)},
    ]


def render_page(doc: dict, frames: np.ndarray, world_from_cam: np.ndarray) -> str:
    """The page's HTML for an eval document and the frames and cameras it measured."""
    from jinja2 import Environment
    from markupsafe import Markup

    figures = [Markup(F.figure_to_img(_errors_figure(doc), "errors along the path")),
               Markup(F.figure_to_img(_path_figure(doc, world_from_cam), "camera path"))]
    return Environment(autoescape=True).from_string(TEMPLATE).render(doc=doc, figures=figures, worst=_worst(doc, frames))


def write_page(path: Path, doc: dict, frames: np.ndarray, world_from_cam: np.ndarray) -> None:
    """Write the page to ``path`` atomically."""
    atomic_write_text(path, render_page(doc, frames, world_from_cam))
