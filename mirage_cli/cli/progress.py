"""Progress of ``mirage render`` on stderr (CLI side only), for people or for programs.

- ``RichRenderEvents`` (``--progress auto``): when stderr is a terminal, a Rich bar over chunks and
  one over the current chunk's denoising steps, each with ETA; otherwise (logs, SLURM output files)
  one plain line per chunk. ``quiet`` silences both; warnings are always printed.
- ``JsonlRenderEvents`` (``--progress jsonl``): one JSON object per line and nothing else on
  stderr, for shell pipelines and schedulers. Every object has ``event`` and ``t`` (seconds since
  the command started); the events and their fields are listed in ``EVENTS`` and in docs/reliability.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mirage_cli.base.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, InputError, MirageError
from mirage_cli.base.jsonable import to_jsonable
from mirage_cli.render.events import RenderEvents


def write_unlocked(stream: TextIO, text: str) -> None:
    """``text`` and a newline on ``stream`` from a signal handler: straight to its file descriptor, past
    Python's buffered writer, whose lock the interrupted code may hold (a stream without one, as in
    tests, is written as usual)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(text + "\n")
        return
    try:
        os.write(fd, (text + "\n").encode("utf-8", "replace"))
    except OSError:
        pass  # stderr closed or full: the stop goes on without the message


class RichRenderEvents(RenderEvents):
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.interactive = self.console.is_terminal and not quiet
        self.progress: Progress | None = None
        self.chunk_task = None
        self.step_task = None
        self._t_chunk = 0.0

    def __enter__(self) -> RichRenderEvents:
        if self.interactive:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def setup(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"[dim]{message}[/dim]")
        else:
            self._line(message)

    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def chunk_started(self, index: int, total: int, steps: int, start_step: int) -> None:
        self._t_chunk = time.perf_counter()
        if self.progress is None:
            return
        if self.chunk_task is None:
            self.chunk_task = self.progress.add_task("chunks", total=total, completed=index)
        if self.step_task is not None:
            self.progress.remove_task(self.step_task)
        self.step_task = self.progress.add_task(f"chunk {index + 1} denoising", total=steps, completed=start_step)

    def step_done(self, index: int, step: int, steps: int) -> None:
        if self.progress is not None and self.step_task is not None:
            self.progress.update(self.step_task, completed=step)

    def stage_started(self, index: int, stage: str) -> None:
        if self.progress is not None and self.step_task is not None:
            self.progress.update(self.step_task, description=f"chunk {index + 1} {stage}")

    def stopping(self, message: str) -> None:
        write_unlocked(sys.stderr, message)

    def chunk_done(self, index: int, total: int, stats: dict) -> None:
        secs = time.perf_counter() - self._t_chunk
        if self.progress is not None:
            self.progress.update(self.chunk_task, completed=index + 1)
        else:
            cov = stats.get("memory_coverage")
            cov_s = f", memory coverage {cov:.0%}" if isinstance(cov, float) else ""
            self._line(
                f"chunk {index + 1}/{total} done in {secs:.1f}s (frames {stats.get('start')}-{stats.get('end')}"
                f"{cov_s}, cache {stats.get('cache_points', 0)} points)"
            )

    def failed(self, error: MirageError) -> None:
        """Nothing to add: the CLI prints the error itself."""

    def crashed(self, error: Exception, report) -> None:
        """Nothing to add: the CLI prints the internal error and names ``report`` itself."""

    def finish(self, result) -> None:
        """Print the summary table (stderr) at the end of a render."""
        if self.quiet or not result.report:
            return
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        try:
            from mirage_cli.report import summary_table

            self.console.print(summary_table(result.report))
        except Exception as e:  # the video is done; a summary problem must not fail the render
            self.warning(f"could not print the summary table: {e}")


PROGRESS_SCHEMA = "mirage-progress/1"
EVENTS = {
    "start": "schema, run_dir, spec, frames, chunks, steps, width, height, fps, memory, resume_chunk, resume_step",
    "setup": "message",
    "warning": "message",
    "log": "level, message (a library log record)",
    "chunk_start": "chunk (0-based), chunks, steps, start_step",
    "step": "chunk, step (1-based, of steps), steps, chunk_elapsed_s",
    "stage": "chunk, stage (memory, encoding the memory, denoising, decoding, depth, writing)",
    "stopping": "message (a stop signal arrived: what is finished first, and about how long it takes)",
    "chunk_done": "chunk, chunks, chunk_elapsed_s, stats",
    "checkpoint": "name, next_chunk, mid_chunk_step, done, seconds",
    "done": "exit_code (0), run_dir, video, frames, chunks, wall_seconds, already_complete",
    "interrupted": "exit_code (75), message",
    "failed": "exit_code (1 or 2), message, problems ([{file, line, field, message}] for bad input), "
              "crash_report (an internal error: the file holding its traceback)",
}
"""The events of ``--progress jsonl`` and their fields (besides ``event`` and ``t``)."""


class JsonlRenderEvents(RenderEvents):
    """``--progress jsonl``: every event as one JSON line on ``stream`` (stderr), and nothing else.

    While active, the library's log records become ``log`` events too, so every line parses.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._t_chunk = self.t0
        self._handler: logging.Handler | None = None
        self._saved_handlers: list[logging.Handler] = []

    def emit(self, event: str, *, unlocked: bool = False, **fields: Any) -> None:
        """One line; ``unlocked``: from a signal handler (``write_unlocked``)."""
        line = {"event": event, "t": round(time.perf_counter() - self.t0, 3), **fields}
        text = json.dumps(to_jsonable(line, nonfinite="null"))
        if unlocked:
            write_unlocked(self.stream, text)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> JsonlRenderEvents:
        events = self

        class _ToEvents(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                events.emit("log", level=record.levelname.lower(), message=record.getMessage())

        root = logging.getLogger()
        self._saved_handlers = list(root.handlers)
        for handler in self._saved_handlers:
            root.removeHandler(handler)
        self._handler = _ToEvents(level=logging.WARNING)
        root.addHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
        for handler in self._saved_handlers:
            root.addHandler(handler)

    def run_started(self, summary: dict) -> None:
        self.emit("start", schema=PROGRESS_SCHEMA, **summary)

    def setup(self, message: str) -> None:
        self.emit("setup", message=message)

    def warning(self, message: str) -> None:
        self.emit("warning", message=message)

    def chunk_started(self, index: int, total: int, steps: int, start_step: int) -> None:
        self._t_chunk = time.perf_counter()
        self.emit("chunk_start", chunk=index, chunks=total, steps=steps, start_step=start_step)

    def step_done(self, index: int, step: int, steps: int) -> None:
        self.emit("step", chunk=index, step=step, steps=steps, chunk_elapsed_s=round(time.perf_counter() - self._t_chunk, 3))

    def stage_started(self, index: int, stage: str) -> None:
        self.emit("stage", chunk=index, stage=stage)

    def stopping(self, message: str) -> None:
        self.emit("stopping", message=message, unlocked=True)

    def chunk_done(self, index: int, total: int, stats: dict) -> None:
        elapsed = round(time.perf_counter() - self._t_chunk, 3)
        self.emit("chunk_done", chunk=index, chunks=total, chunk_elapsed_s=elapsed, stats=stats)

    def checkpoint_saved(self, info: dict) -> None:
        self.emit("checkpoint", **{**info, "seconds": round(info["seconds"], 3)})

    def finish(self, result) -> None:
        """The ``done`` event (exit code 0)."""
        self.emit("done", exit_code=EXIT_OK, **{k: v for k, v in result.summary().items() if k != "report"})

    def failed(self, error: MirageError) -> None:
        """The ``interrupted`` (exit 75) or ``failed`` event of an error that ends the command."""
        if error.exit_code == EXIT_INTERRUPTED:
            self.emit("interrupted", exit_code=error.exit_code, message=str(error))
            return
        problems = [p.__dict__ for p in error.problems] if isinstance(error, InputError) else []
        self.emit("failed", exit_code=error.exit_code, message=str(error), problems=problems)

    def crashed(self, error: Exception, report) -> None:
        """The ``failed`` event of an internal error (a bug): exit code 1 and the crash report's path."""
        from mirage_cli.base.crash import one_line

        self.emit("failed", exit_code=EXIT_FAILURE, message=f"internal error: {one_line(error)}", problems=[],
                  crash_report=str(report))
