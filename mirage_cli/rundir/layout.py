"""The run directory of one render: every path and file of ``RUN/``.

Layout::

    RUN/
      video.mp4              the whole video: the segments' packets joined (no re-encode)
      video.mkv              with --lossless: the same frames exactly (FFV1)
      segments/              chunk_0000.mp4 ... one per finished chunk, without the first frame it shares
                             with the chunk before (and chunk_0000.mkv ... with --lossless)
      latents/               chunk_0000.safetensors ... every chunk's final latents (re-decodable)
      state/                 checkpoints (``mirage_cli.rundir.checkpoint.CheckpointStore``)
      run.json               the render configuration and its fingerprint
      spec.resolved.yaml     the spec as rendered (defaults and command-line overrides filled in)
      camera.json            the camera path of every frame, canonical trajectory JSON (``mirage eval`` reads it)
      report.json            where the time and memory went (``mirage_cli.report``)
      report.html
      .lock                  the one writer (``mirage_cli.rundir.lock``)

Nothing else in the package spells a path inside a run directory. This module also owns what is
read back from one: the configuration fingerprint and its diff (a changed spec is refused naming
the keys), ``mirage inspect`` and ``mirage cache export``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from mirage_cli import __version__
from mirage_cli.base.atomic import atomic_write_json, atomic_write_text, temporary_target
from mirage_cli.base.errors import InputError, Problem, RenderError
from mirage_cli.base.jsonable import canonical_json, to_jsonable
from mirage_cli.base.video import read_header, video_problem
from mirage_cli.camera.writers import write_canonical_json
from mirage_cli.memory import LatentSpatialMemory
from mirage_cli.report import render_html
from mirage_cli.report.build import REPORT_VERSION
from mirage_cli.report.contact_sheet import contact_sheet
from mirage_cli.rundir.checkpoint import CheckpointStore
from mirage_cli.rundir.lock import RunLock, lock_status
from mirage_cli.rundir.meta import meta_problem, record_problem

VIDEO = "video.mp4"
VIDEO_LOSSLESS = "video.mkv"
SEGMENTS = "segments"
LATENTS = "latents"
STATE = "state"
RUN_JSON = "run.json"
RESOLVED_SPEC = "spec.resolved.yaml"
CAMERA_JSON = "camera.json"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
LOCK = ".lock"
_TOP_FILES = (VIDEO, VIDEO_LOSSLESS, RUN_JSON, RESOLVED_SPEC, CAMERA_JSON, REPORT_JSON, REPORT_HTML)
_CHUNK_FILE_RE = re.compile(r"^chunk_\d{4,}\.(mp4|mkv|safetensors)$")

log = logging.getLogger(__name__)


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
        """The ``CheckpointStore`` of ``state/``: the last two checkpoints, and the state after every
        finished chunk (a branch can start after any of them)."""
        return CheckpointStore(self.state_dir, keep_chunks=True)

    def lock(self):
        """The ``RunLock`` of this directory (a context manager; one writer at a time)."""
        return RunLock(self.lock_file)

    # --- writing ---------------------------------------------------------------------------------

    def create(self) -> None:
        """Make the directory (and its parents). Raises RenderError when that is impossible."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RenderError(f"cannot create run directory {self.path}: {e.strerror or e}; choose another with --out") from None

    def clear(self) -> None:
        """Remove every output of a previous render (``--restart``); the lock stays."""
        for directory in (self.state_dir, self.segments_dir, self.latents_dir):
            shutil.rmtree(directory, ignore_errors=True)
        for path in (self.video, self.video_lossless, self.report_json, self.report_html, self.run_json, self.resolved_spec):
            path.unlink(missing_ok=True)

    def holds_rendered_work(self) -> bool:
        """Whether anything was rendered here: a checkpoint (a finished chunk or a stopped one's steps), a
        segment, a chunk's latents or a video. Anything unexpected in their place counts too."""
        for directory in (self.state_dir, self.segments_dir, self.latents_dir):
            if directory.is_dir():
                with os.scandir(directory) as entries:
                    if any(True for _ in entries):
                        return True
            elif os.path.lexists(directory):
                return True
        return os.path.lexists(self.video) or os.path.lexists(self.video_lossless)

    def replace_unrendered_attempt(self, config: dict) -> list[str] | None:
        """Clear an earlier attempt with other settings that rendered nothing (``holds_rendered_work``:
        it failed or was stopped before its first step was saved), so that a corrected command starts
        here instead of being refused; returns the keys that differed, or None when nothing was
        cleared (the same settings, no ``run.json``, or work that only ``--restart`` discards)."""
        recorded, _ = self.read_config()
        if recorded is None or recorded["fingerprint"] == fingerprint(config) or self.holds_rendered_work():
            return None
        keys = diff_config(recorded["config"], config)
        self.clear()
        return keys or ["(unknown)"]

    def remove_leftovers(self) -> list[Path]:
        """Remove the temporary files of interrupted atomic writes (``mirage_cli.base.atomic``): only files
        named after one of this directory's own files, in the directory, ``segments/`` and
        ``latents/``. Call it holding the lock. Returns what was removed."""
        removed = []
        for directory, is_ours in ((self.path, _TOP_FILES.__contains__), (self.segments_dir, _CHUNK_FILE_RE.match),
                                   (self.latents_dir, _CHUNK_FILE_RE.match)):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                target = temporary_target(entry.name)
                if target is None or not is_ours(target) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    os.unlink(entry.path)
                except OSError as e:
                    log.warning("could not remove the leftover %s: %s", entry.path, e)
                    continue
                removed.append(Path(entry.path))
        return removed

    def read_config(self) -> tuple[dict | None, str | None]:
        """``run.json`` as ``(content, None)``; ``(None, None)`` when there is none; ``(None, problem)``
        when it cannot be read or is not a run configuration."""
        try:
            text = self.run_json.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as e:
            return None, f"is unreadable ({e})"
        try:
            recorded = json.loads(text)
        except (ValueError, RecursionError) as e:
            return None, f"is not valid JSON ({e})"
        if not isinstance(recorded, dict) or not isinstance(recorded.get("fingerprint"), str) or not isinstance(
            recorded.get("config"), dict
        ):
            return None, "is not a run configuration (no 'fingerprint' and 'config')"
        return recorded, None

    def check_config(self, config: dict) -> str | None:
        """Refuse a configuration that differs from the one ``run.json`` records.

        Returns the problem of an unreadable ``run.json`` (the caller decides from the checkpoints
        whether to rebuild it), or None.

        Raises:
            InputError: ``run.json`` holds another fingerprint; the message names the keys that differ.
        """
        recorded, problem = self.read_config()
        if recorded is None or recorded["fingerprint"] == fingerprint(config):
            return problem
        raise self.different_settings(recorded["config"], config, str(self.run_json))

    def different_settings(self, old_config: dict | None, config: dict, file: str) -> InputError:
        """The refusal of a render whose settings differ from those of ``old_config`` (recorded in ``file``)."""
        keys = diff_config(old_config, config) if isinstance(old_config, dict) else ["(not recorded)"]
        return InputError(
            f"{self.path} holds a render with different settings ({', '.join(keys or ['(unknown)'])}); "
            "use --restart to discard it and start over, or another --out",
            file=file,
            field=None,
        )

    def write_config(self, config: dict, lineage: dict | None = None) -> None:
        """``run.json``: the mirage version, the configuration and its fingerprint, and the ``lineage`` of
        a branch (``mirage_cli.render.branch``; kept from the file when not given)."""
        if lineage is None:
            recorded, _ = self.read_config()
            lineage = (recorded or {}).get("lineage")
        atomic_write_json(self.run_json, {"mirage_cli": __version__, "fingerprint": fingerprint(config), "config": config,
                                          **({"lineage": lineage} if lineage else {})})

    @property
    def camera_json(self) -> Path:
        return self.path / CAMERA_JSON

    def write_camera(self, trajectory) -> None:
        """``camera.json``: the render's camera path, canonical trajectory JSON (atomic)."""
        write_canonical_json(self.camera_json, trajectory)

    def write_resolved_spec(self, summary: dict) -> None:
        """``spec.resolved.yaml`` from ``Plan.summary()`` (its ``output`` is this directory and left out)."""
        plain = to_jsonable({k: v for k, v in summary.items() if k != "output"})
        header = "# The spec as rendered (defaults and overrides filled in)\n"
        atomic_write_text(self.resolved_spec, header + yaml.safe_dump(plain, sort_keys=False))

    def write_report(self, report: dict) -> tuple[Path, Path]:
        """``report.json`` and ``report.html`` (with the video and a contact sheet of its frames when
        ``video.mp4`` is there), each atomically; returns both paths."""
        atomic_write_json(self.report_json, report)
        sheet = None
        if self.video.is_file():
            try:
                sheet = contact_sheet(self.video, int(report["frames"]), read_header(self.video).fps)
            except (OSError, ValueError) as e:  # the report still tells where the time went
                log.warning("report.html without a contact sheet: %s", e)
        video_name = self.video.name if self.video.is_file() else None
        atomic_write_text(self.report_html, render_html(report, sheet, video_name))
        return self.report_json, self.report_html

    def read_report(self) -> dict | None:
        """``report.json`` when it is readable and a mirage report, else None."""
        try:
            report = json.loads(self.report_json.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return report if isinstance(report, dict) and report.get("version") == REPORT_VERSION else None


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


def final_video_problem(run: RunDir, meta: dict) -> str | None:
    """What is wrong with a finished run's ``video.mp4`` (against the final checkpoint's record, or
    probed when the run predates records), or None."""
    record = meta.get("outputs", {}).get(VIDEO)
    if record is not None:
        problem = record_problem(run.video, record)
    else:
        problem = video_problem(run.video, meta.get("frames_total", -1))
    return f"{VIDEO} {problem}" if problem else None


def damaged_outputs(run: RunDir, meta: dict) -> tuple[list[str], list[str]]:
    """The recorded output files of a run that no longer match their records (``mirage_cli.render.outputs``):
    (every ``"<path> <problem>"``, the segments among them whose own latents are damaged too)."""
    problems = {}
    for relative, record in meta.get("outputs", {}).items():
        problem = record_problem(run.path / relative, record)
        if problem:
            problems[relative] = f"{relative} {problem}"
    lost = []
    for relative, line in problems.items():
        stem = Path(relative).stem
        if relative.startswith(f"{SEGMENTS}/") and f"{LATENTS}/{stem}.safetensors" in problems:
            lost.append(f"{line}, and its latents too: it cannot be rebuilt; --restart renders the run again")
    return list(problems.values()), lost


def _resumability(run: RunDir, infos: list, latest, meta: dict, lock: dict | None, video_problem: str | None,
                  lost: list[str]) -> tuple[bool, str]:
    """(resumable, reason) for ``inspect_run``."""
    chunk, num_chunks = meta.get("chunk"), meta.get("num_chunks")
    if lock is not None and lock["alive"] is not False:
        return False, (f"in use: {lock['message']}" if "pid" in lock else f"blocked: {lock['message']}")
    if not run.state_dir.is_dir():
        return False, "no state/ directory (no checkpoint was written yet)"
    if not infos:
        return False, "no checkpoint in state/ yet"
    if latest is None:
        return False, f"all {len(infos)} checkpoints are unusable ({infos[-1].problem})"
    if lost:
        return False, lost[0]
    if meta["done"] and video_problem is None:
        return False, f"finished: every chunk is rendered and {VIDEO} verifies"
    if meta["done"]:
        return True, f"every chunk is rendered but {video_problem}: re-run to rebuild it"
    if chunk == num_chunks:
        return True, f"every chunk is rendered; re-run to assemble {VIDEO}"
    step = meta.get("mid_chunk_step")
    where = f"chunk {chunk + 1} of {num_chunks}"
    if step is not None:
        where += f", denoising step {step}"
    return True, f"resumes at {where} from {latest.name}"


def inspect_run(run_dir: str | os.PathLike) -> dict:
    """What ``mirage inspect`` prints: progress of a run and whether it can be resumed, and why.

    Read-only: verifies checksums (and a finished run's video) but never cleans or rewrites
    anything. Returns a JSON-able dict with keys ``run_dir``, ``chunks_done``, ``num_chunks``,
    ``frames_written``, ``cache_points``, ``cache_bytes``, ``mid_chunk_step``, ``last_checkpoint``,
    ``last_checkpoint_time``, ``checkpoints`` (list of {name, ok, problem, created, size_bytes}),
    ``video`` (path or None), ``lineage`` (a branch's parent, ``run.json``; the CLI adds ``branches``, the
    runs beside it that started from it: ``mirage_cli.rundir.lineage``), ``finished``, ``lock`` (holder info or None), ``resumable`` and
    ``reason``, ``warnings``.

    Raises:
        InputError: ``run_dir`` does not exist or is not a directory.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise InputError(Problem(file=str(run.path), field=None, message="run directory does not exist"))
    infos = run.checkpoints().list(verify=True, accept=meta_problem)
    good = [i for i in infos if i.ok]
    latest = good[-1] if good else None
    meta = latest.meta if latest else {}
    lock = lock_status(run.lock_file)
    warnings = []
    for info in infos:
        if not info.ok and (latest is None or info.seq > latest.seq):
            fallback = f"resuming from {latest.name}" if latest else "no good checkpoint is left"
            warnings.append(f"checkpoint {info.name} is unusable ({info.problem}); {fallback}")
    video_problem = final_video_problem(run, meta) if meta.get("done") else None
    damaged, lost = damaged_outputs(run, meta) if meta and not meta["done"] else ([], [])
    for line in damaged:
        if line.startswith(f"{LATENTS}/"):
            warnings.append(f"{line}; the video is unaffected, but that chunk can no longer be re-decoded")
        elif not any(gone.startswith(line) for gone in lost):
            warnings.append(f"{line}; the next render rebuilds it from the saved latents")
    resumable, reason = _resumability(run, infos, latest, meta, lock, video_problem, lost)
    return {
        "run_dir": str(run.path),
        "chunks_done": meta.get("chunk"),
        "num_chunks": meta.get("num_chunks"),
        "frames_written": meta.get("frames_written"),
        "cache_points": meta.get("cache_points"),
        "cache_bytes": meta.get("cache_bytes"),
        "mid_chunk_step": meta.get("mid_chunk_step"),
        "conditioning": _conditioning_of(meta, run),
        "loras": _loras_of(meta, run),
        "last_checkpoint": latest.name if latest else None,
        "last_checkpoint_time": latest.created if latest else None,
        "checkpoints": [
            {"name": i.name, "ok": i.ok, "problem": i.problem, "created": i.created, "size_bytes": i.size_bytes}
            for i in infos
        ],
        "video": str(run.video) if run.video.is_file() else None,
        "lineage": (run.read_config()[0] or {}).get("lineage"),
        "finished": bool(meta.get("done")) and video_problem is None,
        "lock": lock,
        "resumable": resumable,
        "reason": reason,
        "warnings": warnings,
    }


def _conditioning_of(meta: dict, run: RunDir) -> dict | None:
    """The run's conditioning from its checkpoint's configuration: method and weights by sha256
    (``pin`` without weights when the configuration names none), with the weights' files as the
    resolved spec names them; None without a checkpoint."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else None
    if config is None:
        return None
    recorded = config.get("conditioning")
    out = dict(recorded) if isinstance(recorded, dict) else {"method": "pin", "vace_sha256": None, "lora_sha256": None,
                                                             "lora_scale": None}
    try:
        resolved = yaml.safe_load(run.resolved_spec.read_text(encoding="utf-8"))
        files = resolved.get("conditioning") or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        files = {}
    out["vace_file"], out["lora_file"] = files.get("vace"), files.get("lora")
    return out


def _loras_of(meta: dict, run: RunDir) -> list[dict] | None:
    """The run's LoRA stack from its checkpoint's configuration (sha256 and scale, in fusing order) with the
    files as the resolved spec names them; None without a checkpoint or a stack."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else None
    recorded = config.get("loras") if config is not None else None
    if not isinstance(recorded, list):
        return None
    try:
        resolved = yaml.safe_load(run.resolved_spec.read_text(encoding="utf-8"))
        files = resolved.get("loras") or []
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        files = []
    out = []
    for i, item in enumerate(recorded):
        named = files[i] if i < len(files) else None
        path = named.get("path") if isinstance(named, dict) else named
        out.append({**(item if isinstance(item, dict) else {}), "file": path if isinstance(path, str) else None})
    return out


def describe_inspection(info: dict) -> str:
    """Human-readable lines for ``mirage inspect`` (the CLI prints them)."""

    def num(v: Any) -> str:
        return "?" if v is None else str(v)

    lines = [f"run directory     {info['run_dir']}"]
    if info.get("lineage"):
        lines.append(f"branch of         {info['lineage']['parent']} after chunk {info['lineage']['chunk']} "
                     f"({info['lineage']['checkpoint']})")
    lines.append(f"chunks done       {num(info['chunks_done'])} / {num(info['num_chunks'])}")
    if info["mid_chunk_step"] is not None:
        lines.append(f"mid-chunk step    {info['mid_chunk_step']}")
    lines.append(f"frames written    {num(info['frames_written'])}")
    c = info.get("conditioning")
    if c:
        kinds = (("vace", "vace_sha256"), ("lora", "lora_sha256"))
        weights = [f"{name} {c.get(name + '_file') or '?'} sha256 {c[key][:12]}" for name, key in kinds if c.get(key)]
        scale = f" x{c['lora_scale']:g}" if c.get("lora_scale") is not None else ""
        lines.append(f"conditioning      {c.get('method')}" + (f" ({', '.join(weights)}{scale})" if weights else ""))
    for i, lora in enumerate(info.get("loras") or []):
        sha = str(lora.get("sha256") or "?")[:12]
        lines.append(f"{'lora stack' if i == 0 else '':<18}{lora.get('file') or '?'} x{lora.get('scale', '?')} sha256 {sha}")
    cache_bytes = info["cache_bytes"]
    size = "?" if cache_bytes is None else f"{cache_bytes / 2**20:.1f} MiB"
    lines.append(f"cache             {num(info['cache_points'])} points, {size}")
    when = info["last_checkpoint_time"] or "-"
    lines.append(f"last checkpoint   {info['last_checkpoint'] or '-'} ({when})")
    lines.append(f"video             {info['video'] or '-'}")
    for i, branch in enumerate(info.get("branches") or []):  # added by the CLI (mirage_cli.rundir.lineage)
        lines.append(f"{'branches' if i == 0 else '':<18}{branch['run_dir']} (from chunk {branch['chunk']})")
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

    memory = LatentSpatialMemory.from_state_dict(ckpt.tensors["memory"])
    memory.export_ply(Path(ply_path))
    return {"checkpoint": ckpt.name, "ply": str(ply_path), "warnings": list(store.warnings)}
