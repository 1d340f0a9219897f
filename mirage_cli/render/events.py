"""What a render hands back to its caller: ``RenderResult`` (where the video is, what the render did)
and ``RenderEvents`` (the progress callbacks the CLI draws from; the library never prints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mirage_cli.profiling.profiler import WRITE_WAIT
from mirage_cli.rundir.layout import RunDir


@dataclass
class RenderResult:
    """What ``render`` returns: where the video is and what the render did."""

    run_dir: Path
    video: Path
    frames: int
    chunks: int
    resumed_from_chunk: int | None
    wall_seconds: float
    report: dict = field(repr=False, default_factory=dict)
    already_complete: bool = False

    def summary(self) -> dict:
        """What ``mirage render --json`` prints."""
        return {
            "run_dir": str(self.run_dir),
            "video": str(self.video),
            "report": str(RunDir(self.run_dir).report_json),
            "frames": self.frames,
            "chunks": self.chunks,
            "resumed_from_chunk": self.resumed_from_chunk,
            "already_complete": self.already_complete,
            "wall_seconds": round(self.wall_seconds, 3),
            "fps_rendered": self.report.get("frames_per_second") if self.report else None,
        }


STAGE_WORDS = {
    "memory_query": "memory",
    "vae_encode": "encoding the memory",
    "denoise": "denoising",
    "decode": "decoding",
    "depth_estimation": "depth",
    "memory_insert": "memory",
    WRITE_WAIT: "writing",
}
"""The profiler's stages of a chunk as the progress names them (others are parts of these)."""


def start_summary(plan, run_dir: Path, checkpoint) -> dict:
    """What ``RenderEvents.run_started`` receives: the run directory, the plan's size, and where the
    render resumes from (``checkpoint``: the ``Checkpoint`` it resumes from, or None)."""
    meta = {} if checkpoint is None else checkpoint.meta
    return {
        "run_dir": str(run_dir), "spec": str(plan.spec_path), "frames": plan.frames, "chunks": len(plan.chunks),
        "steps": plan.steps, "width": plan.width, "height": plan.height, "fps": plan.fps, "memory": str(plan.memory.mode),
        "resume_chunk": meta.get("chunk"), "resume_step": meta.get("mid_chunk_step"),
    }


class RenderEvents:
    """Progress callbacks; the CLI draws Rich bars from these. The library never prints."""

    def setup(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def chunk_started(self, index: int, total: int, steps: int, start_step: int) -> None: ...

    def step_done(self, index: int, step: int, steps: int) -> None: ...

    def stage_started(self, index: int, stage: str) -> None:
        """Chunk ``index`` enters ``stage``, one of ``STAGE_WORDS``' values (denoising, decoding, ...)."""

    def stopping(self, message: str) -> None:
        """A stop signal arrived: ``message`` says what the render finishes first, and for how long.
        Called from the signal handler: write without locks the interrupted code may hold."""

    def chunk_done(self, index: int, total: int, stats: dict) -> None: ...

    def run_started(self, summary: dict) -> None:
        """The render begins (``summary``: run directory, frames, chunks, steps, size, memory, resume point)."""

    def checkpoint_saved(self, info: dict) -> None:
        """A checkpoint was written (``info``: name, next chunk, mid-chunk step, seconds)."""
