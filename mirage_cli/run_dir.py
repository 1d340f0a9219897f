"""The run directory of one render: every path and file of ``RUN/``.

Layout::

    RUN/
      video.mp4              the whole video: the segments' packets joined (no re-encode)
      video.mkv              with --lossless: the same frames exactly (FFV1)
      segments/              chunk_0000.mp4 ... one per finished chunk, without the first frame it shares
                             with the chunk before (and chunk_0000.mkv ... with --lossless)
      latents/               chunk_0000.safetensors ... every chunk's final latents (re-decodable)
      state/                 checkpoints (``mirage_cli.checkpoint.CheckpointStore``)
      run.json               the render configuration and its fingerprint
      spec.resolved.yaml     the spec as rendered (defaults and command-line overrides filled in)
      report.json            where the time and memory went (``mirage_cli.report``)
      report.html
      .lock                  the one writer (``mirage_cli.runlock``)

Nothing else in the package spells a path inside a run directory. This module also owns what is
read back from one: the configuration fingerprint and its diff (a changed spec is refused naming
the keys), ``mirage inspect`` and ``mirage cache export``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from mirage_cli.atomic import atomic_write_json, atomic_write_text
from mirage_cli.errors import InputError, Problem, RenderError
from mirage_cli.jsonable import canonical_json, to_jsonable

VIDEO = "video.mp4"
VIDEO_LOSSLESS = "video.mkv"
SEGMENTS = "segments"
LATENTS = "latents"
STATE = "state"
RUN_JSON = "run.json"
RESOLVED_SPEC = "spec.resolved.yaml"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
LOCK = ".lock"


class RunDir:
    """The files of one run directory. Creating the object touches nothing on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths -----------------------------------------------------------------------------------

    @property
    def video(self) -> Path:
        return self.path / VIDEO

    @property
    def video_lossless(self) -> Path:
        return self.path / VIDEO_LOSSLESS

    @property
    def segments_dir(self) -> Path:
        return self.path / SEGMENTS

    def segment(self, index: int, lossless: bool = False) -> Path:
        """The segment of chunk ``index`` (0-based): its MP4, or its lossless MKV."""
        return self.segments_dir / f"chunk_{index:04d}.{'mkv' if lossless else 'mp4'}"

    @property
    def latents_dir(self) -> Path:
        return self.path / LATENTS

    def latents(self, index: int) -> Path:
        """The safetensors file of chunk ``index``'s final latents."""
        return self.latents_dir / f"chunk_{index:04d}.safetensors"

    @property
    def state_dir(self) -> Path:
        return self.path / STATE

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def resolved_spec(self) -> Path:
        return self.path / RESOLVED_SPEC

    @property
    def report_json(self) -> Path:
        return self.path / REPORT_JSON

    @property
    def report_html(self) -> Path:
        return self.path / REPORT_HTML

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    # --- the parts that have their own module ----------------------------------------------------

    def checkpoints(self):
        """The ``CheckpointStore`` of ``state/``."""
        from mirage_cli.checkpoint import CheckpointStore

        return CheckpointStore(self.state_dir)

    def lock(self):
        """The ``RunLock`` of this directory (a context manager; one writer at a time)."""
        from mirage_cli.runlock import RunLock

        return RunLock(self.lock_file)

    # --- writing ---------------------------------------------------------------------------------

    def create(self) -> None:
        """Make the directory (and its parents). Raises RenderError when that is impossible."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RenderError(f"cannot create run directory {self.path}: {e.strerror or e}") from None

    def clear(self) -> None:
        """Remove every output of a previous render (``--restart``); the lock stays."""
        for directory in (self.state_dir, self.segments_dir, self.latents_dir):
            shutil.rmtree(directory, ignore_errors=True)
        for path in (self.video, self.video_lossless, self.report_json, self.report_html, self.run_json, self.resolved_spec):
            path.unlink(missing_ok=True)

    def check_config(self, config: dict) -> None:
        """Refuse a configuration that differs from the one this directory was rendered with.

        Raises:
            InputError: ``run.json`` holds another fingerprint; the message names the keys that differ.
        """
        if not self.run_json.exists():
            return
        try:
            old = json.loads(self.run_json.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("fingerprint") == fingerprint(config):
            return
        keys = diff_config(old.get("config", {}), config) or ["(unreadable run.json)"]
        raise InputError(
            f"{self.path} holds a render with different settings ({', '.join(keys)}); "
            "use --restart to discard it and start over, or another --out",
            file=str(self.run_json),
            field=None,
        )

    def write_config(self, config: dict) -> None:
        """``run.json``: the mirage version, the configuration and its fingerprint."""
        from mirage_cli import __version__

        atomic_write_json(self.run_json, {"mirage_cli": __version__, "fingerprint": fingerprint(config), "config": config})

    def write_resolved_spec(self, summary: dict) -> None:
        """``spec.resolved.yaml`` from ``Plan.summary()`` (its ``output`` is this directory and left out)."""
        plain = to_jsonable({k: v for k, v in summary.items() if k != "output"})
        header = "# The spec as rendered (defaults and overrides filled in)\n"
        atomic_write_text(self.resolved_spec, header + yaml.safe_dump(plain, sort_keys=False))

    def write_report(self, report: dict) -> tuple[Path, Path]:
        """``report.json`` and ``report.html``, each atomically; returns both paths."""
        from mirage_cli.report import render_html

        atomic_write_json(self.report_json, report)
        atomic_write_text(self.report_html, render_html(report))
        return self.report_json, self.report_html

    def read_report(self) -> dict:
        """``report.json``, or an empty dict when it is missing or unreadable."""
        try:
            return json.loads(self.report_json.read_text())
        except (OSError, ValueError):
            return {}


# --- configuration fingerprints ----------------------------------------------------------------------


def fingerprint(config: dict) -> str:
    """sha256 (hex) of the canonical JSON of ``config``; equal configs give equal fingerprints."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def diff_config(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like configs (added, removed or changed).

    Nested dicts are compared key by key (``"sampling.seed"``); lists of equal length element by
    element (``"frames.3.K"``); lists of different length, and values of different types, are
    reported at their own key. Returns a sorted list; empty when the configs agree. Differing
    non-dict values at the top level with an empty ``prefix`` give ``["<root>"]``.
    """
    out: list[str] = []
    _diff_into(json.loads(canonical_json(old)), json.loads(canonical_json(new)), prefix, out)
    return sorted(out)


def _diff_into(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            child = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(child)
            else:
                _diff_into(old[key], new[key], child, out)
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _diff_into(a, b, f"{prefix}.{i}" if prefix else str(i), out)
        return
    if type(old) is not type(new) or old != new:
        out.append(prefix or "<root>")


# --- mirage inspect ----------------------------------------------------------------------------------


def _resumability(run: RunDir, infos: list, latest, meta: dict, lock: dict | None) -> tuple[bool, str]:
    """(resumable, reason) for ``inspect_run``."""
    chunk, num_chunks = meta.get("chunk"), meta.get("num_chunks")
    done = bool(meta.get("done"))
    if lock is not None and lock["alive"] is not False:
        return False, f"in use: {lock['message']}"
    if not run.state_dir.is_dir():
        return False, "no state/ directory (no checkpoint was written yet)"
    if not infos:
        return False, "no checkpoint in state/ yet"
    if latest is None:
        return False, f"all {len(infos)} checkpoints are corrupt ({infos[-1].problem})"
    if done and run.video.is_file():
        return False, "finished: every chunk is rendered and video.mp4 exists"
    if done:
        return True, "every chunk is rendered but video.mp4 is missing: re-run to assemble it"
    step = meta.get("mid_chunk_step")
    where = f"chunk {chunk + 1}" if num_chunks is None else f"chunk {chunk + 1} of {num_chunks}"
    if step is not None:
        where += f", denoising step {step}"
    return True, f"resumes at {where} from {latest.name}"


def inspect_run(run_dir: str | os.PathLike) -> dict:
    """What ``mirage inspect`` prints: progress of a run and whether it can be resumed, and why.

    Read-only: verifies checksums but never cleans or rewrites anything. Returns a JSON-able dict
    with keys ``run_dir``, ``chunks_done``, ``num_chunks``, ``frames_written``, ``cache_points``,
    ``cache_bytes``, ``mid_chunk_step``, ``last_checkpoint``, ``last_checkpoint_time``,
    ``checkpoints`` (list of {name, ok, problem, created, size_bytes}), ``video`` (path or None),
    ``finished``, ``lock`` (holder info or None), ``resumable`` and ``reason``, ``warnings``.

    Raises:
        InputError: ``run_dir`` does not exist or is not a directory.
    """
    from mirage_cli.runlock import lock_status

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise InputError(Problem(file=str(run.path), field=None, message="run directory does not exist"))
    infos = run.checkpoints().list(verify=True)
    good = [i for i in infos if i.ok]
    latest = good[-1] if good else None
    meta = latest.meta if latest else {}
    lock = lock_status(run.lock_file)
    warnings = []
    for info in infos:
        if not info.ok and (latest is None or info.seq > latest.seq):
            fallback = f"resuming from {latest.name}" if latest else "no good checkpoint is left"
            warnings.append(f"checkpoint {info.name} is corrupt ({info.problem}); {fallback}")
    resumable, reason = _resumability(run, infos, latest, meta, lock)
    return {
        "run_dir": str(run.path),
        "chunks_done": meta.get("chunk"),
        "num_chunks": meta.get("num_chunks"),
        "frames_written": meta.get("frames_written"),
        "cache_points": meta.get("cache_points"),
        "cache_bytes": meta.get("cache_bytes"),
        "mid_chunk_step": meta.get("mid_chunk_step"),
        "last_checkpoint": latest.name if latest else None,
        "last_checkpoint_time": latest.created if latest else None,
        "checkpoints": [
            {"name": i.name, "ok": i.ok, "problem": i.problem, "created": i.created, "size_bytes": i.size_bytes}
            for i in infos
        ],
        "video": str(run.video) if run.video.is_file() else None,
        "finished": bool(meta.get("done")) and run.video.is_file(),
        "lock": lock,
        "resumable": resumable,
        "reason": reason,
        "warnings": warnings,
    }


def describe_inspection(info: dict) -> str:
    """Human-readable lines for ``mirage inspect`` (the CLI prints them)."""

    def num(v: Any) -> str:
        return "?" if v is None else str(v)

    lines = [f"run directory     {info['run_dir']}"]
    lines.append(f"chunks done       {num(info['chunks_done'])} / {num(info['num_chunks'])}")
    if info["mid_chunk_step"] is not None:
        lines.append(f"mid-chunk step    {info['mid_chunk_step']}")
    lines.append(f"frames written    {num(info['frames_written'])}")
    cache_bytes = info["cache_bytes"]
    size = "?" if cache_bytes is None else f"{cache_bytes / 2**20:.1f} MiB"
    lines.append(f"cache             {num(info['cache_points'])} points, {size}")
    when = info["last_checkpoint_time"] or "-"
    lines.append(f"last checkpoint   {info['last_checkpoint'] or '-'} ({when})")
    lines.append(f"video             {info['video'] or '-'}")
    lines.append(f"resumable         {'yes' if info['resumable'] else 'no'}: {info['reason']}")
    return "\n".join(lines)


# --- mirage cache export -----------------------------------------------------------------------------


def export_cache_ply(run_dir: str | os.PathLike, ply_path: str | os.PathLike) -> dict:
    """Write the latent memory of the run's newest good checkpoint as a PLY point cloud.

    Returns ``{"checkpoint": name, "ply": path, "warnings": [...]}``.

    Raises:
        InputError: no run directory, or no good checkpoint with a ``memory`` part.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise InputError(Problem(file=str(run.path), field=None, message="run directory does not exist"))
    store = run.checkpoints()
    ckpt = store.load_latest()
    if ckpt is None:
        why = "; ".join(store.warnings) or "no checkpoint in state/"
        raise InputError(Problem(file=str(run.path), field=None, message=f"nothing to export: {why}"))
    if "memory" not in ckpt.tensors:
        raise InputError(
            Problem(file=str(ckpt.path), field=None, message="the checkpoint holds no memory (rendered with --memory none?)")
        )
    from mirage_cli.memory import LatentSpatialMemory

    memory = LatentSpatialMemory.from_state_dict(ckpt.tensors["memory"])
    memory.export_ply(Path(ply_path))
    return {"checkpoint": ckpt.name, "ply": str(ply_path), "warnings": list(store.warnings)}
