"""The render report: ``report.json`` (versioned, schema-checked), ``report.html`` and a Rich summary.

- ``build_report(...)`` gathers run configuration, device, package versions, per-stage totals,
  per-chunk profiles (``mirage_cli.profiling.ChunkProfile``) and the camera path into one dict.
- ``validate_report(report)`` checks it against ``report_schema.json`` (package data, JSON Schema
  draft 2020-12) with a small validator for the subset of keywords the schema uses.
- ``render_html(report)`` is ``report.html``: one self-contained file (figures embedded as base64
  PNG from matplotlib's Agg backend, inline styles, nothing fetched from the network).
  ``RunDir.write_report`` writes both files atomically.
- ``summary_table(report)`` is the end-of-render table the CLI prints on stderr.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import importlib.resources
import io
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mirage_cli import profiling as P
from mirage_cli.camera.trajectory import Trajectory

REPORT_VERSION = "mirage-report/1"

# Packages whose versions shape speed or output; those not installed are left out.
_PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "numpy",
    "av",
    "pycolmap",
    "scipy",
    "matplotlib",
)


# --- environment -----------------------------------------------------------------------------------


def _cpu_model() -> str | None:
    """CPU model name from /proc/cpuinfo (Linux) or platform (elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def describe_device(device: Any) -> dict[str, Any]:
    """The report's ``device`` entry for ``device`` (torch.device or string).

    Timer and peak-memory kind follow ``mirage_cli.profiling.Profiler`` on the same device.
    """
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda" and torch.cuda.is_available()
    gpu_name = gpu_mem = None
    name = str(dev)
    if cuda:
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        gpu_name, gpu_mem = str(props.name), int(props.total_memory)
        name = f"cuda:{index}"
    return {
        "name": name,
        "type": dev.type if dev.type in ("cpu", "cuda", "mps", "xpu") else "other",
        "timer": P.TIMER_CUDA_EVENTS if cuda else P.TIMER_PERF_COUNTER,
        "peak_memory_kind": P.PEAK_CUDA if cuda else P.PEAK_RSS,
        "torch_threads": int(torch.get_num_threads()),
        "cuda_version": torch.version.cuda,
        "gpu_name": gpu_name,
        "gpu_memory_bytes": gpu_mem,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def package_versions() -> dict[str, str]:
    """Python, mirage-cli and the installed packages of ``_PACKAGES`` -> version strings."""
    from mirage_cli import __version__

    out = {"python": platform.python_version(), "mirage-cli": __version__}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


# --- building --------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: Paths -> str, numpy/torch scalars -> numbers, non-finite floats -> None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch tensors
        return _jsonable(obj.tolist())
    return str(obj)


def _stage_order(names: Iterable[str]) -> list[str]:
    """Known stages in pipeline order, then the others in first-seen order."""
    names = list(dict.fromkeys(names))
    known = [s for s in P.STAGES if s in names]
    return known + [s for s in names if s not in P.STAGES]


def _default_parents(names: Iterable[str]) -> dict[str, str | None]:
    return {n: (P.DENOISE if n == P.DENOISE_STEP else None) for n in names}


def build_report(
    *,
    config: dict,
    device_info: dict,
    chunks: Sequence[P.ChunkProfile | dict],
    setup: dict,
    trajectory: Trajectory | None,
    frames: int,
    wall_seconds: float,
    setup_calls: dict[str, int] | None = None,
    stage_parents: dict[str, str | None] | None = None,
    timer: str | None = None,
    packages: dict[str, str] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """Assemble the report dict (``version`` ``"mirage-report/1"``; see report_schema.json).

    Args:
        config: the resolved run configuration (any JSON-able values; Paths become strings).
        device_info: ``describe_device(device)``.
        chunks: per-chunk profiles (``ChunkProfile`` or their ``to_dict()``), any order.
        setup: seconds per stage outside chunks (``Profiler.setup_seconds()``).
        setup_calls: calls per stage outside chunks (``Profiler.setup_calls()``); default 1 each.
        trajectory: the render's camera path (positions for the top-down plot), or None.
        frames: pixel frames in the final video.
        wall_seconds: wall time of the whole render.
        stage_parents: stage -> enclosing stage (``Profiler.stage_parents``); default: denoise_step
            inside denoise, every other stage top-level.
        timer: ``Profiler.timer``; overrides ``device_info["timer"]`` when given.
        packages: version map (default ``package_versions()``).
        created: ISO 8601 UTC time stamp (default now).

    ``Profiler.report_inputs()`` returns ``chunks``, ``setup``, ``setup_calls``, ``stage_parents``
    and ``timer``.
    """
    chunk_dicts = [c.to_dict() if isinstance(c, P.ChunkProfile) else P.ChunkProfile.from_dict(c).to_dict() for c in chunks]
    chunk_dicts.sort(key=lambda c: c["index"])
    setup = {str(k): float(v) for k, v in (setup or {}).items()}
    setup_calls = {k: int((setup_calls or {}).get(k, 1)) for k in setup}
    wall_seconds = float(wall_seconds)

    names = _stage_order(list(setup) + [n for c in chunk_dicts for n in c["stages"]])
    parents = _default_parents(names)
    parents.update({k: v for k, v in (stage_parents or {}).items() if k in parents})

    stages: dict[str, dict[str, Any]] = {}
    for name in names:
        in_chunks = sum(c["stages"].get(name, 0.0) for c in chunk_dicts)
        total = setup.get(name, 0.0) + in_chunks
        stages[name] = {
            "seconds": total,
            "setup_seconds": setup.get(name, 0.0),
            "calls": setup_calls.get(name, 0) + int(sum(c["stage_calls"].get(name, 0) for c in chunk_dicts)),
            "share": total / wall_seconds if wall_seconds > 0 else 0.0,
            "parent": parents[name],
        }

    frame_end = 0
    for c in chunk_dicts:
        frame_end += c["frames"]
        c["frame_end"] = frame_end
        c["frames_per_second"] = c["frames"] / c["wall_seconds"] if c["wall_seconds"] > 0 else 0.0

    device = dict(device_info)
    if timer is not None:
        device["timer"] = timer
    last = chunk_dicts[-1] if chunk_dicts else {}
    steps = [s for c in chunk_dicts for s in c["step_seconds"]]
    summary = {
        "chunks": len(chunk_dicts),
        "peak_memory_bytes": max((c["peak_memory_bytes"] for c in chunk_dicts), default=0),
        "peak_memory_kind": device.get("peak_memory_kind", P.PEAK_RSS),
        "peak_rss_bytes": max((c["peak_rss_bytes"] for c in chunk_dicts), default=0),
        "cache_points": last.get("cache_points"),
        "cache_bytes": last.get("cache_bytes"),
        "memory_module_seconds": sum(stages[s]["seconds"] for s in P.MEMORY_MODULE_STAGES if s in stages),
        "denoise_step_mean_seconds": (sum(steps) / len(steps)) if steps else None,
    }

    report = {
        "version": REPORT_VERSION,
        "created": created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": config,
        "device": device,
        "packages": packages if packages is not None else package_versions(),
        "frames": int(frames),
        "wall_seconds": wall_seconds,
        "frames_per_second": frames / wall_seconds if wall_seconds > 0 else 0.0,
        "stages": stages,
        "setup": {
            "seconds": sum(s for n, s in setup.items() if parents.get(n) is None),
            "stages": setup,
        },
        "summary": summary,
        "chunks": chunk_dicts,
        "camera": _camera_entry(trajectory),
    }
    return _jsonable(report)


def _camera_entry(trajectory: Trajectory | None) -> dict[str, Any] | None:
    if trajectory is None:
        return None
    positions = np.round(trajectory.positions, 6)  # [N, 3]
    forward = np.round(trajectory.world_from_cam[:, :3, 2], 6)  # [N, 3]
    return {
        "frames": len(trajectory),
        "width": int(trajectory.width),
        "height": int(trajectory.height),
        "fps": float(trajectory.fps),
        "positions": positions.tolist(),
        "forward": forward.tolist(),
    }


# --- schema ----------------------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    """The report JSON Schema shipped with the package (``mirage_cli/report_schema.json``)."""
    text = importlib.resources.files("mirage_cli").joinpath("report_schema.json").read_text(encoding="utf-8")
    return json.loads(text)


_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    """JSON type name of a Python value ('integer' for ints, 'number' for floats)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    for t, name in _TYPE_NAMES.items():
        if isinstance(value, t):
            return name
    return type(value).__name__


def _type_ok(value: Any, expected: str) -> bool:
    actual = _json_type(value)
    if expected == "number":
        return actual in ("integer", "number") and math.isfinite(value)
    return actual == expected


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve_ref(root: dict, ref: str) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"schema: only local $ref are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _validate(value: Any, schema: dict, root: dict, path: str, problems: list[str]) -> None:
    """Check ``value`` against ``schema`` (subset: $ref, type, enum, required, properties,
    additionalProperties, items, minItems, maxItems, minimum, maximum), appending problems."""
    if "$ref" in schema:
        _validate(value, _resolve_ref(root, schema["$ref"]), root, path, problems)
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in allowed):
            problems.append(f"{path}: expected {' or '.join(allowed)}, got {_json_type(value)} {_show(value)}")
            return
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: expected one of {', '.join(map(_show, schema['enum']))}, got {_show(value)}")
        return
    if _json_type(value) in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: must be >= {schema['minimum']}, got {_show(value)}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: must be <= {schema['maximum']}, got {_show(value)}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{path}: missing required field '{key}'")
        props = schema.get("properties", {})
        extra_schema = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key in props:
                _validate(item, props[key], root, sub, problems)
            elif extra_schema is False:
                problems.append(f"{path}: unexpected field '{key}'")
            elif isinstance(extra_schema, dict):
                _validate(item, extra_schema, root, sub, problems)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{path}: expected at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: expected at most {schema['maxItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                _validate(item, schema["items"], root, f"{path}[{i}]", problems)


def validate_report(report: Any, schema: dict | None = None) -> list[str]:
    """Problems of ``report`` against the report schema, one line each (empty list: valid).

    Each line names the field as a path from the root (``$.chunks[2].wall_seconds``) and says
    what was expected and what was found.
    """
    schema = schema if schema is not None else load_schema()
    problems: list[str] = []
    _validate(report, schema, schema, "$", problems)
    return problems


# --- formatting helpers ----------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'; None -> '-'."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_seconds(s: float | None) -> str:
    """Seconds for people: '12 ms', '3.40 s', '2 min 05 s'; None -> '-'."""
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1000:.1f} ms" if s < 0.1 else f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def fmt_fps(fps: float) -> str:
    """Frames per second with sensible precision: 0.987, 13.4, 1295."""
    return f"{fps:.0f}" if fps >= 100 else f"{fps:.1f}" if fps >= 10 else f"{fps:.3f}"


def fmt_count(n: float | None) -> str:
    return "-" if n is None else f"{int(n):,}"


def top_level_stages(report: dict) -> list[str]:
    """Stage names with no parent, in pipeline order (these do not overlap and may be stacked)."""
    return [n for n, s in report["stages"].items() if s["parent"] is None]


# --- Rich summary ----------------------------------------------------------------------------------


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
    for name in _display_order(report):
        st = report["stages"][name]
        label = name if st["parent"] is None else f"  └ {name}"
        calls = st["calls"]
        per_call = _per_call(st)
        table.add_row(
            label,
            fmt_seconds(st["seconds"]),
            fmt_share(st["share"]),
            _calls_text(st),
            fmt_seconds(per_call),
            style="dim" if st["parent"] is not None else None,
        )
    other = _other_seconds(report)
    if other > 0:
        table.add_row("other", fmt_seconds(other), _share(other, wall), "-", "-", style="dim")
    table.add_section()
    table.add_row("frames/s", fmt_fps(report["frames_per_second"]), "", "", "")
    cache = "-" if s["cache_points"] is None else f"{fmt_count(s['cache_points'])} pts"
    table.add_row("cache", cache, fmt_bytes(s["cache_bytes"]) if s["cache_bytes"] is not None else "", "", "")
    kind = "GPU allocated" if s["peak_memory_kind"] == P.PEAK_CUDA else "process RSS"
    table.add_row("peak memory", fmt_bytes(s["peak_memory_bytes"]), kind, "", "")
    table.add_row("memory module", fmt_seconds(s["memory_module_seconds"]), _share(s["memory_module_seconds"], wall), "", "")
    return table


def fmt_share(fraction: float) -> str:
    """A share for people: 0.8132 -> '81.3%', 0.00031 -> '0.03%', 0 -> '0%'."""
    pct = 100 * fraction
    if pct == 0:
        return "0%"
    if pct < 0.1:
        return f"{pct:.2f}%" if pct >= 0.01 else "<0.01%"
    return f"{pct:.1f}%"


def _share(seconds: float, wall: float) -> str:
    return fmt_share(seconds / wall) if wall > 0 else "-"


def _calls_text(stage: dict) -> str:
    return str(stage["calls"]) if stage["calls"] else "-"


def _per_call(stage: dict) -> float | None:
    return stage["seconds"] / stage["calls"] if stage["calls"] else None


def _display_order(report: dict) -> list[str]:
    """Top-level stages in order, each followed by its children."""
    stages = report["stages"]
    out: list[str] = []
    for name in top_level_stages(report):
        out.append(name)
        out.extend(n for n, st in stages.items() if st["parent"] == name)
    out.extend(n for n in stages if n not in out)
    return out


def _other_seconds(report: dict) -> float:
    """Wall time no top-level stage accounts for (Python glue, progress bars, final assembly)."""
    timed = sum(report["stages"][n]["seconds"] for n in top_level_stages(report))
    return max(0.0, report["wall_seconds"] - timed)


# --- figures ---------------------------------------------------------------------------------------

STAGE_COLORS = {
    P.MODEL_LOAD: "#9e9e9e",
    P.TEXT_ENCODING: "#b39ddb",
    P.START_ENCODE: "#80cbc4",
    P.MEMORY_QUERY: "#26a69a",
    P.DENOISE: "#3f6fd8",
    P.DENOISE_STEP: "#7f9ee8",
    P.DECODE: "#f29d38",
    P.MP4_WRITE: "#e6c229",
    P.DEPTH_ESTIMATION: "#9c5ec2",
    P.MEMORY_INSERT: "#5cb85c",
    P.VAE_ENCODE: "#e0544b",
    P.CHECKPOINT_WRITE: "#8d6e63",
    "other": "#d5d8dc",
}
_EXTRA_COLORS = ("#17becf", "#bcbd22", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2")
_INK = "#2b2f36"
_GRID = "#e6e8eb"


def _stage_color(name: str, i: int) -> str:
    return STAGE_COLORS.get(name, _EXTRA_COLORS[i % len(_EXTRA_COLORS)])


def _new_figure(width: float = 5.6, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    _style_axes(ax)
    return fig, ax


def _style_axes(ax) -> None:
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


def _empty(ax, text: str) -> None:
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
    fig, ax = _new_figure(11.2, 3.6)
    chunks = report["chunks"]
    if not chunks:
        _empty(ax, "no chunks")
        return fig
    idx = _chunk_axis(ax, chunks)
    names = [n for n in top_level_stages(report) if any(c["stages"].get(n, 0) > 0 for c in chunks)]
    bottom = np.zeros(len(chunks))
    for i, name in enumerate(names):
        vals = np.array([c["stages"].get(name, 0.0) for c in chunks])
        ax.bar(idx, vals, bottom=bottom, width=0.7, color=_stage_color(name, i), label=name, edgecolor="white", linewidth=0.4)
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
    fig, ax = _new_figure()
    chunks = [c for c in report["chunks"] if c["cache_points"] is not None]
    ax.set_title("Memory cache along the trajectory", loc="left", fontsize=11)
    if not chunks:
        _empty(ax, "no memory in this run")
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
        ax.legend(lines, [l.get_label() for l in lines], loc="lower right", frameon=False, fontsize=9)
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
    fig, ax = _new_figure()
    chunks = report["chunks"]
    kind = "GPU max allocated" if report["summary"]["peak_memory_kind"] == P.PEAK_CUDA else "process RSS"
    ax.set_title(f"Peak memory per chunk ({kind})", loc="left", fontsize=11)
    if not chunks:
        _empty(ax, "no chunks")
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
    fig, ax = _new_figure()
    ax.set_title("Memory coverage per chunk", loc="left", fontsize=11)
    chunks = [c for c in report["chunks"] if c["memory_coverage"] is not None]
    if not chunks:
        _empty(ax, "no memory in this run")
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
    """The camera path seen from above (x right, z up on the page; OpenCV world y is down),
    coloured by chunk, with viewing directions and chunk ends marked."""
    fig, ax = _new_figure()
    ax.set_title("Camera path from above (x-z)", loc="left", fontsize=11)
    cam = report.get("camera")
    if not cam or not cam["positions"]:
        _empty(ax, "no camera path")
        return fig
    ax.grid(axis="both", color=_GRID, linewidth=0.8)
    pos = np.asarray(cam["positions"], dtype=np.float64)  # [N, 3]
    fwd = np.asarray(cam["forward"], dtype=np.float64)  # [N, 3]
    x, z = pos[:, 0], pos[:, 2]
    ends = [min(c["frame_end"], len(pos)) for c in report["chunks"]] or [len(pos)]
    start = 0
    for i, end in enumerate(ends):
        seg = slice(max(0, start - 1), end)
        ax.plot(x[seg], z[seg], color=_chunk_color(i), linewidth=2.2, solid_capstyle="round")
        start = end
    if ends[-1] < len(pos):
        ax.plot(x[ends[-1] - 1 :], z[ends[-1] - 1 :], color="#c3c8ce", linewidth=1.6, linestyle="--", label="not rendered")
    span = max(float(np.ptp(x)), float(np.ptp(z)), 1e-6)
    n_arrows = min(len(pos), 16)
    picks = np.unique(np.linspace(0, len(pos) - 1, n_arrows).round().astype(int))
    dirs = fwd[picks][:, [0, 2]]  # [n, 2]
    norms = np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs = np.where(norms > 1e-9, dirs / np.maximum(norms, 1e-9), 0.0)
    ax.quiver(x[picks], z[picks], dirs[:, 0], dirs[:, 1], angles="xy", scale_units="xy", scale=1 / (0.07 * span),
              color="#5f6b78", width=0.004, headwidth=4, headlength=4, alpha=0.8)
    ax.scatter([x[0]], [z[0]], s=60, color="#2e7d32", zorder=5, label="start")
    ax.scatter([x[-1]], [z[-1]], s=60, marker="s", color="#c62828", zorder=5, label="end")
    inner = [e - 1 for e in ends[:-1] if 0 < e <= len(pos)]
    if inner and len(inner) <= 24:
        ax.scatter(x[inner], z[inner], s=28, facecolor="white", edgecolor=_INK, zorder=6, label="chunk boundary")
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.12)
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.legend(loc="best", frameon=False, fontsize=8)
    return fig


def _chunk_color(i: int) -> str:
    return ("#3f6fd8", "#f29d38")[i % 2]


def figure_step_times(report: dict):
    """Line: seconds of every denoising step, chunk after chunk."""
    fig, ax = _new_figure(11.2, 2.6)
    ax.set_title("Denoising step time", loc="left", fontsize=11)
    chunks = [c for c in report["chunks"] if c["step_seconds"]]
    if not chunks:
        _empty(ax, "no denoising steps timed")
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


# --- HTML ------------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#2b2f36; --muted:#6b7480; --line:#e3e6ea; --bg:#f6f7f9; --card:#ffffff; --accent:#3f6fd8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { font-size: 22px; margin: 0 0 4px; font-weight: 650; }
header .sub { color: var(--muted); font-size: 13px; }
h2 { font-size: 15px; margin: 28px 0 10px; font-weight: 650; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 12px; margin-top: 18px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 20px; font-weight: 650; margin-top: 2px; white-space: nowrap; }
.card .s { color: var(--muted); font-size: 12px; margin-top: 2px; }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.grid2 { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 14px; }
.figs { display: grid; gap: 14px; }
.panel img { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.child td:first-child { padding-left: 24px; color: var(--muted); }
tr.other td { color: var(--muted); }
td.key { color: var(--muted); white-space: nowrap; width: 1%; }
td.val { word-break: break-word; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.bar { display: inline-block; height: 8px; border-radius: 4px; background: var(--accent); vertical-align: middle; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
.scroll { max-height: 420px; overflow: auto; }
footer { color: var(--muted); font-size: 12px; margin-top: 28px; }
@media (max-width: 900px) { .cards { grid-template-columns: repeat(3, minmax(0, 1fr)); } .grid2 { grid-template-columns: minmax(0, 1fr); } }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def _kv_table(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = []
    for k, v in pairs:
        text = v if isinstance(v, str) else json.dumps(v)
        if len(text) > 300:
            text = text[:297] + "..."
        rows.append(f'<tr><td class="key">{_e(k)}</td><td class="val">{_e(text)}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def _card(key: str, value: str, sub: str = "") -> str:
    return f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div><div class="s">{_e(sub)}</div></div>'


def _stage_table(report: dict) -> str:
    wall = report["wall_seconds"]
    top = top_level_stages(report)
    rows = []
    for name in _display_order(report):
        st = report["stages"][name]
        calls = st["calls"]
        per_call = _per_call(st)
        color = _stage_color(name, top.index(name) if name in top else 0)
        cls = ' class="child"' if st["parent"] is not None else ""
        width = max(0.0, min(1.0, st["share"])) * 160
        rows.append(
            f"<tr{cls}><td><span class=\"swatch\" style=\"background:{color}\"></span>{_e(name)}</td>"
            f'<td class="num">{_e(fmt_seconds(st["seconds"]))}</td>'
            f'<td class="num">{fmt_share(st["share"])}</td>'
            f'<td><span class="bar" style="width:{width:.0f}px;background:{color}"></span></td>'
            f'<td class="num">{_e(_calls_text(st))}</td>'
            f'<td class="num">{_e(fmt_seconds(per_call))}</td></tr>'
        )
    other = _other_seconds(report)
    if other > 0:
        width = (other / wall if wall > 0 else 0) * 160
        rows.append(
            f'<tr class="other"><td><span class="swatch" style="background:{STAGE_COLORS["other"]}"></span>other (untimed)</td>'
            f'<td class="num">{_e(fmt_seconds(other))}</td><td class="num">{_share(other, wall)}</td>'
            f'<td><span class="bar" style="width:{width:.0f}px;background:{STAGE_COLORS["other"]}"></span></td>'
            f'<td class="num">-</td><td class="num">-</td></tr>'
        )
    head = ('<tr><th>stage</th><th class="num">total</th><th class="num">share</th><th></th>'
            '<th class="num">calls</th><th class="num">per call</th></tr>')
    return f"<table>{head}{''.join(rows)}</table>"


def _chunk_table(report: dict) -> str:
    head = ("<tr><th class=\"num\">chunk</th><th class=\"num\">frames</th><th class=\"num\">wall</th>"
            "<th class=\"num\">frames/s</th><th class=\"num\">denoise</th><th class=\"num\">memory</th>"
            "<th class=\"num\">coverage</th><th class=\"num\">pinned tokens</th><th class=\"num\">points added</th>"
            "<th class=\"num\">cache points</th><th class=\"num\">cache size</th><th class=\"num\">peak memory</th></tr>")
    rows = []
    for c in report["chunks"]:
        mem = sum(c["stages"].get(s, 0.0) for s in P.MEMORY_MODULE_STAGES)
        cov = "-" if c["memory_coverage"] is None else f"{100 * c['memory_coverage']:.1f}%"
        cells = [
            str(c["index"]), str(c["frames"]), fmt_seconds(c["wall_seconds"]), fmt_fps(c["frames_per_second"]),
            fmt_seconds(c["stages"].get(P.DENOISE)), fmt_seconds(mem), cov, fmt_count(c["pinned_tokens"]),
            fmt_count(c["points_added"]), fmt_count(c["cache_points"]), fmt_bytes(c["cache_bytes"]),
            fmt_bytes(c["peak_memory_bytes"]),
        ]
        rows.append("<tr>" + "".join(f'<td class="num">{_e(x)}</td>' for x in cells) + "</tr>")
    return f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'


def _config_headline(config: Mapping) -> str:
    """A one-line summary of the most telling config keys that exist."""
    keys = ("scene", "preset", "model", "memory", "pin", "steps", "seed", "resolution", "width", "height", "chunks")
    parts = [f"{k} {config[k]}" for k in keys if k in config and not isinstance(config[k], (dict, list))]
    return " · ".join(parts)


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page (inline CSS, figures as base64 PNG)."""
    s = report["summary"]
    dev = report["device"]
    wall = report["wall_seconds"]
    hw = dev.get("gpu_name") or dev.get("cpu_model") or dev["name"]
    cache = "-" if s["cache_points"] is None else fmt_count(s["cache_points"])
    cards = "".join([
        _card("frames", fmt_count(report["frames"]), f"{len(report['chunks'])} chunks"),
        _card("wall time", fmt_seconds(wall), f"outside chunks {fmt_seconds(report['setup']['seconds'])}"),
        _card("frames / s", fmt_fps(report["frames_per_second"]),
              f"step {fmt_seconds(s['denoise_step_mean_seconds'])}" if s["denoise_step_mean_seconds"] else ""),
        _card("peak memory", fmt_bytes(s["peak_memory_bytes"]),
              "GPU max allocated" if s["peak_memory_kind"] == P.PEAK_CUDA else "process RSS"),
        _card("memory cache", cache + (" pts" if s["cache_points"] is not None else ""),
              fmt_bytes(s["cache_bytes"]) if s["cache_bytes"] is not None else "no memory"),
        _card("memory module", fmt_seconds(s["memory_module_seconds"]), f"{_share(s['memory_module_seconds'], wall)} of wall"),
    ])
    figs = {
        "stage": figure_to_img(figure_stage_time(report), "Time per stage per chunk"),
        "steps": figure_to_img(figure_step_times(report), "Denoising step time"),
        "cache": figure_to_img(figure_cache(report), "Memory cache along the trajectory"),
        "peak": figure_to_img(figure_peak_memory(report), "Peak memory per chunk"),
        "coverage": figure_to_img(figure_coverage(report), "Memory coverage per chunk"),
        "camera": figure_to_img(figure_camera_path(report), "Camera path from above"),
    }
    headline = _config_headline(report["config"])
    env = [("device", f"{dev['name']} · {hw}"), ("timer", dev["timer"]), ("torch threads", dev["torch_threads"]),
           ("cuda", dev.get("cuda_version") or "-"), ("cpus", dev.get("cpu_count") or "-")]
    env += [(k, v) for k, v in report["packages"].items()]
    title = f"Mirage render report · {report['frames']} frames"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
  <h1>Mirage render report</h1>
  <div class="sub">{_e(headline)}</div>
  <div class="sub">{_e(report['created'])} · {_e(dev['name'])} · {_e(hw)} · {_e(report['version'])}</div>
</header>
<div class="cards">{cards}</div>

<h2>Where the time went</h2>
<div class="panel">{_stage_table(report)}</div>
<div class="figs" style="margin-top:14px">
  <div class="panel">{figs['stage']}</div>
  <div class="panel">{figs['steps']}</div>
</div>

<h2>Memory</h2>
<div class="grid2">
  <div class="panel">{figs['cache']}</div>
  <div class="panel">{figs['peak']}</div>
  <div class="panel">{figs['coverage']}</div>
  <div class="panel">{figs['camera']}</div>
</div>

<h2>Chunks</h2>
<div class="panel">{_chunk_table(report)}</div>

<h2>Configuration</h2>
<div class="grid2">
  <div class="panel">{_kv_table(_flatten(report['config']))}</div>
  <div class="panel">{_kv_table(env)}</div>
</div>
<footer>Stage times are inclusive (nested stages, indented, are part of their parent). {_e(_timer_note(dev['timer']))}</footer>
</main>
</body>
</html>
"""


def _timer_note(timer: str) -> str:
    if timer == P.TIMER_CUDA_EVENTS:
        return "Stages were timed with CUDA events (GPU stream time); chunk wall times are host time."
    return "Stages were timed with the host clock (perf_counter)."
