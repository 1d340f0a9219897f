"""What a render hands back to its caller: ``RenderResult`` (where the video is, what the render did)
and ``RenderEvents`` (the progress callbacks the CLI draws from; the library never prints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


class RenderEvents:
    """Progress callbacks; the CLI draws Rich bars from these. The library never prints."""

    def setup(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def chunk_started(self, index: int, total: int, steps: int, start_step: int) -> None: ...

    def step_done(self, index: int, step: int, steps: int) -> None: ...

    def chunk_done(self, index: int, total: int, stats: dict) -> None: ...

    def run_started(self, summary: dict) -> None:
        """The render begins (``summary``: run directory, frames, chunks, steps, size, memory, resume point)."""

    def checkpoint_saved(self, info: dict) -> None:
        """A checkpoint was written (``info``: name, next chunk, mid-chunk step, seconds)."""
