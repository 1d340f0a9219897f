"""Stage timers and peak memory per chunk: where the time and the memory of a render went.

A ``Profiler`` times named stages (``with prof.stage(DENOISE_STEP): ...``) and groups them by
chunk (``prof.begin_chunk(i)`` ... ``prof.end_chunk(extra)``). Stages outside a chunk (model load,
text encoding, checkpoint writes between chunks, final assembly) go to the *setup* bucket, which
is the "outside chunks" bucket: totals include it, per-chunk numbers do not.

Timing:
- On CUDA each stage records a pair of ``torch.cuda.Event`` on the current stream. Nothing is
  synchronised inside a stage: elapsed times are resolved lazily, after one
  ``torch.cuda.synchronize`` at ``end_chunk`` (and at ``begin_chunk`` for the setup bucket). A
  stage's time is therefore its span on the GPU stream timeline: for GPU work that is the true
  kernel time; for CPU-only work queued behind GPU work it can read shorter than the host time.
- On CPU, ``time.perf_counter``.
- A chunk's ``wall_seconds`` is host wall time from ``begin_chunk`` to ``end_chunk`` (after the
  synchronisation on CUDA), so it includes everything, timed or not.

Peak memory per chunk: on CUDA ``torch.cuda.max_memory_allocated`` (reset at ``begin_chunk``); on
CPU the process resident set size (psutil), sampled at every stage boundary and kept as a maximum,
with ``ru_maxrss`` (whole-process peak) as a fallback when psutil cannot read it. The sampled RSS is
kept on CUDA too (``peak_rss_bytes``): it shows host memory under CPU offload.

Stages may nest (``denoise_step`` inside ``denoise``). Times are inclusive; the profiler records
each stage's parent (the stage open when it first ran) so a report can stack only top-level
stages and show nested ones as a breakdown.

``state_dict()`` / ``load_state_dict()`` are plain JSON so a resumed render's report includes the
chunks done before the interruption.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mirage_cli.base.atomic import atomic_path
from mirage_cli.base.jsonable import to_jsonable
from mirage_cli.profiling.tensor_bytes import active_stage

# --- stage names (the rollout uses these constants, the report orders and colours by them) --------

MODEL_LOAD = "model_load"
TEXT_ENCODING = "text_encoding"
START_ENCODE = "start_encode"  # VAE-encode the start image (every memory mode)
MEMORY_QUERY = "memory_query"
DENOISE = "denoise"  # the whole denoising loop of one chunk
DENOISE_STEP = "denoise_step"  # one scheduler step (nested in DENOISE)
DECODE = "decode"
MP4_WRITE = "mp4_write"  # the chunk's MP4 segment, and the final assembly
OUTPUTS_WRITE = "outputs_write"  # the chunk's latents, and its PNG frames / lossless segment when asked for
DEPTH_ESTIMATION = "depth_estimation"
MEMORY_INSERT = "memory_insert"
VAE_ENCODE = "vae_encode"  # RGB baseline: encode the point-cloud renders
CHECKPOINT_WRITE = "checkpoint_write"
WRITE_WAIT = "write_wait"  # the main thread waits for the background writer (mirage_cli.render.write_behind)

BACKGROUND = "background"
"""Parent of the stages the background writer runs beside the next chunk: they overlap the top-level
stages, so they are never stacked with them and do not count in a chunk's wall time."""
BACKGROUND_WRITE = "background_write"  # the writer's whole job for a chunk: its files, their records, its checkpoint
BACKGROUND_STAGES: dict[str, str] = {
    MP4_WRITE: "background_mp4_write",
    OUTPUTS_WRITE: "background_outputs_write",
    CHECKPOINT_WRITE: "background_checkpoint_write",
}
"""The name a write stage takes when the background writer runs it (a child of ``BACKGROUND_WRITE``)."""

STAGES: tuple[str, ...] = (
    MODEL_LOAD,
    TEXT_ENCODING,
    START_ENCODE,
    MEMORY_QUERY,
    DENOISE,
    DENOISE_STEP,
    DECODE,
    MP4_WRITE,
    OUTPUTS_WRITE,
    DEPTH_ESTIMATION,
    MEMORY_INSERT,
    VAE_ENCODE,
    CHECKPOINT_WRITE,
    WRITE_WAIT,
    BACKGROUND_WRITE,
    *BACKGROUND_STAGES.values(),
)

# Stages that make up the memory module's cost (what `mirage bench` compares between modes).
MEMORY_MODULE_STAGES: tuple[str, ...] = (MEMORY_QUERY, MEMORY_INSERT, VAE_ENCODE)

# Extra per-chunk numbers the rollout passes to ``end_chunk``; they become top-level chunk fields.
CHUNK_FIELDS: tuple[str, ...] = (
    "cache_points",
    "cache_bytes",
    "memory_coverage",
    "pinned_tokens",
    "points_added",
)

TIMER_CUDA_EVENTS = "cuda_events"
TIMER_PERF_COUNTER = "perf_counter"
PEAK_CUDA = "cuda_max_allocated"
PEAK_RSS = "process_rss"

STATE_VERSION = 1


@dataclass
class ChunkProfile:
    """What one chunk cost.

    Attributes:
        index: chunk index (0-based).
        frames: pixel frames this chunk added to the video.
        wall_seconds: host wall time from ``begin_chunk`` to ``end_chunk``.
        stages: inclusive seconds per stage name (nested stages included in their parent too).
        stage_calls: how many times each stage ran.
        step_seconds: seconds of each ``denoise_step``, in order.
        peak_memory_bytes: CUDA max allocated (GPU) or peak process RSS (CPU) during the chunk.
        peak_memory_kind: ``"cuda_max_allocated"`` or ``"process_rss"``.
        peak_rss_bytes: peak sampled process RSS during the chunk (both devices).
        cache_points, cache_bytes, memory_coverage, pinned_tokens, points_added: what the memory
            did (``None`` when not given, e.g. ``--memory none``).
        extra: any other numbers passed to ``end_chunk``.
    """

    index: int
    frames: int = 0
    wall_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    stage_calls: dict[str, int] = field(default_factory=dict)
    step_seconds: list[float] = field(default_factory=list)
    peak_memory_bytes: int = 0
    peak_memory_kind: str = PEAK_RSS
    peak_rss_bytes: int = 0
    cache_points: int | None = None
    cache_bytes: int | None = None
    memory_coverage: float | None = None
    pinned_tokens: int | None = None
    points_added: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the report's chunk entry)."""
        return {
            "index": int(self.index),
            "frames": int(self.frames),
            "wall_seconds": float(self.wall_seconds),
            "stages": {k: float(v) for k, v in self.stages.items()},
            "stage_calls": {k: int(v) for k, v in self.stage_calls.items()},
            "step_seconds": [float(s) for s in self.step_seconds],
            "peak_memory_bytes": int(self.peak_memory_bytes),
            "peak_memory_kind": self.peak_memory_kind,
            "peak_rss_bytes": int(self.peak_rss_bytes),
            "cache_points": _opt_int(self.cache_points),
            "cache_bytes": _opt_int(self.cache_bytes),
            "memory_coverage": _opt_float(self.memory_coverage),
            "pinned_tokens": _opt_int(self.pinned_tokens),
            "points_added": _opt_int(self.points_added),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChunkProfile:
        """Inverse of ``to_dict`` (unknown keys go to ``extra``)."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = dict(kwargs.pop("extra", None) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**kwargs, extra=extra)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


# --- memory sampling -------------------------------------------------------------------------------


def _ru_maxrss_bytes() -> int:
    """Whole-process peak RSS from getrusage (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _RssSampler:
    """Current process RSS via psutil; falls back to ru_maxrss when psutil cannot read it."""

    def __init__(self) -> None:
        try:
            import psutil

            self._proc = psutil.Process(os.getpid())
            self._proc.memory_info()
        except Exception:  # psutil missing or not permitted: use the getrusage peak
            self._proc = None

    def __call__(self) -> int:
        if self._proc is not None:
            try:
                return int(self._proc.memory_info().rss)
            except Exception:
                self._proc = None
        return _ru_maxrss_bytes()


# --- the profiler ----------------------------------------------------------------------------------


class _Bucket:
    """Open measurements of one chunk (or the setup bucket): raw timings until resolved."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.pending: list[tuple[str, Any, Any]] = []  # (name, start event, end event) on CUDA
        self.peak_rss = 0

    def add(self, name: str, seconds: float) -> None:
        self.seconds.setdefault(name, []).append(float(seconds))

    def resolve(self) -> None:
        """Turn recorded CUDA event pairs into seconds (events must be complete: synchronise first)."""
        for name, start, end in self.pending:
            self.add(name, start.elapsed_time(end) / 1000.0)
        self.pending.clear()


def _resolve_device(device: torch.device | str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class Profiler:
    """Per-stage wall time and peak memory, grouped by chunk.

    Usage::

        prof = Profiler(device)
        with prof.stage(TEXT_ENCODING):        # outside a chunk: setup bucket
            ...
        prof.begin_chunk(0)
        with prof.stage(DENOISE):
            for t in timesteps:
                with prof.stage(DENOISE_STEP):
                    ...
        chunk = prof.end_chunk({"frames": 121, "cache_points": n, ...})

    Args:
        device: the device the render runs on; CUDA devices are timed with CUDA events.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = _resolve_device(device)
        self.use_cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.timer = TIMER_CUDA_EVENTS if self.use_cuda else TIMER_PERF_COUNTER
        self.peak_memory_kind = PEAK_CUDA if self.use_cuda else PEAK_RSS
        self.chunks: list[ChunkProfile] = []
        self.stage_parents: dict[str, str | None] = {}
        self._setup = _Bucket()
        self._setup_prev: dict[str, list[float]] = {}  # setup from runs before a resume
        self._chunk: _Bucket | None = None
        self._chunk_index: int | None = None
        self._chunk_t0 = 0.0
        self._stack: list[str] = []
        self._rss = _RssSampler()
        self.on_stage: Callable[[str], None] | None = None
        """Called with a stage's name as it begins (the render names its stage in its progress)."""

    # -- stages ---------------------------------------------------------------------------------

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage ``name`` (in the open chunk, else in the setup bucket)."""
        with active_stage(name):  # a LiveTensorBytes tracker, when one measures this run (tests/test_vram.py)
            yield from self._timed_stage(name)

    @property
    def current_stage(self) -> str | None:
        """The innermost stage open now, or None."""
        return self._stack[-1] if self._stack else None

    def typical_seconds(self, name: str) -> float | None:
        """The median seconds stage ``name`` took in the chunks finished so far, or None (never ran)."""
        seconds = sorted(c.stages[name] for c in self.chunks if name in c.stages)
        return seconds[len(seconds) // 2] if seconds else None

    def _timed_stage(self, name: str) -> Iterator[None]:
        bucket = self._chunk if self._chunk is not None else self._setup
        self.stage_parents.setdefault(name, self._stack[-1] if self._stack else None)
        self._stack.append(name)
        if self.on_stage is not None:  # after the push: whoever hears of the stage finds it open
            self.on_stage(name)
        self._sample_rss(bucket)
        if self.use_cuda:
            stream = torch.cuda.current_stream(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            try:
                yield
            finally:
                end.record(stream)
                bucket.pending.append((name, start, end))
                self._stack.pop()
                self._sample_rss(bucket)
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                bucket.add(name, time.perf_counter() - t0)
                self._stack.pop()
                self._sample_rss(bucket)

    def _sample_rss(self, bucket: _Bucket) -> None:
        bucket.peak_rss = max(bucket.peak_rss, self._rss())

    def _synchronize(self) -> None:
        if self.use_cuda:
            torch.cuda.synchronize(self.device)

    # -- chunks ---------------------------------------------------------------------------------

    @property
    def in_chunk(self) -> bool:
        return self._chunk is not None

    def begin_chunk(self, index: int) -> None:
        """Start measuring chunk ``index`` (resets the CUDA peak-memory counter)."""
        if self._chunk is not None:
            raise RuntimeError(f"begin_chunk({index}): chunk {self._chunk_index} is still open")
        if self._stack:
            raise RuntimeError(f"begin_chunk({index}): stage {self._stack[-1]!r} is still open")
        self._synchronize()
        self._setup.resolve()
        if self.use_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self._chunk = _Bucket()
        self._chunk_index = int(index)
        self._sample_rss(self._chunk)
        self._chunk_t0 = time.perf_counter()

    def end_chunk(self, extra: dict[str, Any] | None = None, *, frames: int | None = None) -> ChunkProfile:
        """Close the open chunk and return its profile (also kept in ``self.chunks``).

        Args:
            extra: numbers from the rollout: ``frames`` (if not passed as keyword), ``cache_points``,
                ``cache_bytes``, ``memory_coverage`` (0..1), ``pinned_tokens``, ``points_added``;
                any other key lands in ``ChunkProfile.extra``.
            frames: pixel frames this chunk added to the video.
        """
        if self._chunk is None:
            raise RuntimeError("end_chunk(): no chunk is open (call begin_chunk first)")
        if self._stack:
            raise RuntimeError(f"end_chunk(): stage {self._stack[-1]!r} is still open")
        bucket = self._chunk
        self._synchronize()  # the one synchronisation per chunk
        wall = time.perf_counter() - self._chunk_t0
        bucket.resolve()
        self._sample_rss(bucket)

        extra = dict(extra or {})
        n_frames = frames if frames is not None else extra.pop("frames", 0)
        extra.pop("frames", None)
        fields = {k: extra.pop(k) for k in CHUNK_FIELDS if k in extra}
        peak = torch.cuda.max_memory_allocated(self.device) if self.use_cuda else bucket.peak_rss
        profile = ChunkProfile(
            index=int(self._chunk_index),
            frames=int(n_frames or 0),
            wall_seconds=wall,
            stages={k: sum(v) for k, v in bucket.seconds.items()},
            stage_calls={k: len(v) for k, v in bucket.seconds.items()},
            step_seconds=list(bucket.seconds.get(DENOISE_STEP, [])),
            peak_memory_bytes=int(peak),
            peak_memory_kind=self.peak_memory_kind,
            peak_rss_bytes=int(bucket.peak_rss),
            extra=to_jsonable(extra, nonfinite="null"),
            **fields,
        )
        profile = ChunkProfile.from_dict(profile.to_dict())  # normalise types (int/float/None)
        self._store_chunk(profile)
        self._chunk = None
        self._chunk_index = None
        return profile

    def _store_chunk(self, profile: ChunkProfile) -> None:
        """Keep one profile per chunk index (a chunk redone after a resume replaces the old one)."""
        self.chunks = [c for c in self.chunks if c.index != profile.index]
        self.chunks.append(profile)
        self.chunks.sort(key=lambda c: c.index)

    # -- totals ---------------------------------------------------------------------------------

    def add_setup_seconds(self, name: str, seconds: float) -> None:
        """Record a stage timed elsewhere (e.g. model loading before the profiler existed) as setup."""
        self.stage_parents.setdefault(name, None)
        self._setup.add(name, seconds)

    def add_chunk_seconds(self, index: int, name: str, seconds: float) -> None:
        """Add a stage timed on the host after chunk ``index`` was closed (its checkpoint write).

        The chunk's wall time grows by the same amount, so the stacked bars still add up.
        """
        for c in self.chunks:
            if c.index == index:
                c.stages[name] = c.stages.get(name, 0.0) + float(seconds)
                c.stage_calls[name] = c.stage_calls.get(name, 0) + 1
                c.wall_seconds += float(seconds)
                self.stage_parents.setdefault(name, None)
                return
        raise KeyError(f"add_chunk_seconds(): no finished chunk with index {index}")

    def add_overlapped_seconds(self, index: int, name: str, seconds: float, parent: str) -> None:
        """Add a stage that ran on another thread beside the chunks after chunk ``index`` (its files
        written in the background), under ``parent`` (``BACKGROUND`` or a background stage).

        Unlike ``add_chunk_seconds`` the chunk's wall time stays as it is: the stage overlapped others.
        """
        for c in self.chunks:
            if c.index == index:
                c.stages[name] = c.stages.get(name, 0.0) + float(seconds)
                c.stage_calls[name] = c.stage_calls.get(name, 0) + 1
                self.stage_parents.setdefault(name, parent)
                return
        raise KeyError(f"add_overlapped_seconds(): no finished chunk with index {index}")

    def _setup_values(self) -> dict[str, list[float]]:
        if self._setup.pending and not self.in_chunk:
            self._synchronize()
            self._setup.resolve()
        out: dict[str, list[float]] = {}
        for source in (self._setup_prev, self._setup.seconds):
            for name, values in source.items():
                out.setdefault(name, []).extend(values)
        return out

    def setup_seconds(self) -> dict[str, float]:
        """Seconds per stage outside any chunk (this process plus any loaded state)."""
        return {name: sum(v) for name, v in self._setup_values().items()}

    def setup_calls(self) -> dict[str, int]:
        """How many times each stage ran outside any chunk."""
        return {name: len(v) for name, v in self._setup_values().items()}

    def totals(self) -> dict[str, float]:
        """Seconds per stage over setup and every finished chunk."""
        out = self.setup_seconds()
        for c in self.chunks:
            for name, s in c.stages.items():
                out[name] = out.get(name, 0.0) + s
        return out

    def report_inputs(self) -> dict[str, Any]:
        """Keyword arguments for ``mirage_cli.report.build_report`` that come from the profiler."""
        return {
            "chunks": [c.to_dict() for c in self.chunks],
            "setup": self.setup_seconds(),
            "setup_calls": self.setup_calls(),
            "stage_parents": dict(self.stage_parents),
            "timer": self.timer,
        }

    # -- resume ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: finished chunks, setup seconds and calls, stage parents."""
        return {
            "version": STATE_VERSION,
            "timer": self.timer,
            "setup": self.setup_seconds(),
            "setup_calls": self.setup_calls(),
            "stage_parents": dict(self.stage_parents),
            "chunks": [c.to_dict() for c in self.chunks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Merge a saved state into this profiler.

        Chunks from the saved state are kept unless this profiler already has the same index;
        saved setup seconds are added to this process's own (a resumed render loads its model
        again, and the report counts the time actually spent).
        """
        if int(state.get("version", -1)) != STATE_VERSION:
            raise ValueError(f"profiler state: expected version {STATE_VERSION}, got {state.get('version')!r}")
        mine = {c.index for c in self.chunks}
        for d in state.get("chunks", []):
            c = ChunkProfile.from_dict(d)
            if c.index not in mine:
                self.chunks.append(c)
        self.chunks.sort(key=lambda c: c.index)
        calls = state.get("setup_calls", {})
        for name, s in state.get("setup", {}).items():
            n = max(1, int(calls.get(name, 1)))
            self._setup_prev.setdefault(name, []).extend([float(s) / n] * n)  # the mean n times
        for name, parent in state.get("stage_parents", {}).items():
            self.stage_parents.setdefault(name, parent)


# --- torch.profiler trace of one chunk -------------------------------------------------------------


@contextmanager
def trace_chunk(
    out_dir: str | os.PathLike, *, chunk_index: int = 0, device: torch.device | str | None = None
) -> Iterator[Path]:
    """Record the body with ``torch.profiler`` and export a Chrome trace JSON into ``out_dir``.

    Activities: CPU, plus CUDA when ``device`` is a CUDA device (default: when CUDA is available).
    Yields the path the trace is written to (``trace_chunk_{index:04d}.json``, atomically, when
    the body finishes without error); open it in chrome://tracing or https://ui.perfetto.dev.
    """
    from torch.profiler import ProfilerActivity, profile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"trace_chunk_{int(chunk_index):04d}.json"
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU]
    if cuda and torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as prof:
        yield dest
    with atomic_path(dest, suffix=".json") as tmp:
        prof.export_chrome_trace(str(tmp))
