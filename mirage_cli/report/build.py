"""``report.json``: the render's configuration, device, versions, per-stage and per-chunk costs.

``build_report`` gathers everything into one dict (``"version": "mirage-report/1"``, described by
``schema.json`` beside this file; the tests validate reports against it with ``jsonschema``).
The stage helpers (pipeline order, nesting) are shared by the HTML page and the Rich summary.
"""

from __future__ import annotations

import datetime as _dt
import importlib.resources
import json
import os
import platform
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mirage_cli.base.jsonable import to_jsonable
from mirage_cli.base.versions import package_versions
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.profiling import profiler as P

REPORT_VERSION = "mirage-report/1"


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

    Timer and peak-memory kind follow ``mirage_cli.profiling.profiler.Profiler`` on the same device.
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
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def load_schema() -> dict[str, Any]:
    """The report's JSON Schema (draft 2020-12), shipped as package data (``report/schema.json``)."""
    text = importlib.resources.files("mirage_cli.report").joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


# --- stages ----------------------------------------------------------------------------------------


def _stage_order(names: Iterable[str]) -> list[str]:
    """Known stages in pipeline order, then the others in first-seen order."""
    names = list(dict.fromkeys(names))
    known = [s for s in P.STAGES if s in names]
    return known + [s for s in names if s not in P.STAGES]


def _default_parents(names: Iterable[str]) -> dict[str, str | None]:
    return {n: (P.DENOISE if n == P.DENOISE_STEP else None) for n in names}


def top_level_stages(report: dict) -> list[str]:
    """Stage names with no parent, in pipeline order (these do not overlap and may be stacked)."""
    return [n for n, s in report["stages"].items() if s["parent"] is None]


def display_order(report: dict) -> list[str]:
    """Top-level stages in order, each followed by its children."""
    stages = report["stages"]
    out: list[str] = []
    for name in top_level_stages(report):
        out.append(name)
        out.extend(n for n, st in stages.items() if st["parent"] == name)
    out.extend(n for n in stages if n not in out)
    return out


def other_seconds(report: dict) -> float:
    """Wall time no top-level stage accounts for (Python glue, progress bars, final assembly)."""
    timed = sum(report["stages"][n]["seconds"] for n in top_level_stages(report))
    return max(0.0, report["wall_seconds"] - timed)


def per_call(stage: dict) -> float | None:
    """Mean seconds per call of a stage entry, or None when it never ran."""
    return stage["seconds"] / stage["calls"] if stage["calls"] else None


# --- building --------------------------------------------------------------------------------------


def _stage_entries(setup: dict, setup_calls: dict, chunks: list[dict], parents_given: dict | None, wall: float) -> dict:
    """The report's ``stages``: inclusive totals, setup part, calls, share of wall and parent."""
    names = _stage_order(list(setup) + [n for c in chunks for n in c["stages"]])
    parents = _default_parents(names)
    parents.update({k: v for k, v in (parents_given or {}).items() if k in parents})
    stages: dict[str, dict[str, Any]] = {}
    for name in names:
        total = setup.get(name, 0.0) + sum(c["stages"].get(name, 0.0) for c in chunks)
        stages[name] = {
            "seconds": total,
            "setup_seconds": setup.get(name, 0.0),
            "calls": setup_calls.get(name, 0) + int(sum(c["stage_calls"].get(name, 0) for c in chunks)),
            "share": total / wall if wall > 0 else 0.0,
            "parent": parents[name],
        }
    return stages


def _summary(chunks: list[dict], stages: dict, device: dict) -> dict:
    """The report's ``summary``: peaks, final cache size, memory-module time, mean step time."""
    last = chunks[-1] if chunks else {}
    steps = [s for c in chunks for s in c["step_seconds"]]
    return {
        "chunks": len(chunks),
        "peak_memory_bytes": max((c["peak_memory_bytes"] for c in chunks), default=0),
        "peak_memory_kind": device.get("peak_memory_kind", P.PEAK_RSS),
        "peak_rss_bytes": max((c["peak_rss_bytes"] for c in chunks), default=0),
        "cache_points": last.get("cache_points"),
        "cache_bytes": last.get("cache_bytes"),
        "memory_module_seconds": sum(stages[s]["seconds"] for s in P.MEMORY_MODULE_STAGES if s in stages),
        "denoise_step_mean_seconds": (sum(steps) / len(steps)) if steps else None,
    }


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
    lineage: dict | None = None,
) -> dict[str, Any]:
    """Assemble the report dict (``version`` ``"mirage-report/1"``; see schema.json).

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
        packages: version map (default ``mirage_cli.base.versions.package_versions()``).
        created: ISO 8601 UTC time stamp (default now).
        lineage: a branch's parent (``run.json``'s ``lineage``: parent, chunk, checkpoint,
            checkpoint_sha256), or None for a run rendered from its start image.

    ``Profiler.report_inputs()`` returns ``chunks``, ``setup``, ``setup_calls``, ``stage_parents``
    and ``timer``.
    """
    chunk_dicts = [c.to_dict() if isinstance(c, P.ChunkProfile) else P.ChunkProfile.from_dict(c).to_dict() for c in chunks]
    chunk_dicts.sort(key=lambda c: c["index"])
    setup = {str(k): float(v) for k, v in (setup or {}).items()}
    setup_calls = {k: int((setup_calls or {}).get(k, 1)) for k in setup}
    wall_seconds = float(wall_seconds)
    stages = _stage_entries(setup, setup_calls, chunk_dicts, stage_parents, wall_seconds)
    frame_end = 0
    for c in chunk_dicts:
        frame_end += c["frames"]
        c["frame_end"] = frame_end
        c["frames_per_second"] = c["frames"] / c["wall_seconds"] if c["wall_seconds"] > 0 else 0.0
    device = dict(device_info)
    if timer is not None:
        device["timer"] = timer
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
        "setup": {"seconds": sum(s for n, s in setup.items() if stages[n]["parent"] is None), "stages": setup},
        "summary": _summary(chunk_dicts, stages, device),
        "chunks": chunk_dicts,
        "camera": _camera_entry(trajectory),
        "lineage": dict(lineage) if lineage else None,
    }
    return to_jsonable(report, nonfinite="null")


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


