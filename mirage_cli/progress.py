"""Progress display for ``mirage render`` on stderr (CLI side only).

When stderr is a terminal: a Rich bar over chunks and one over the current chunk's denoising steps,
each with ETA. Otherwise (logs, SLURM output files): one plain line per chunk. ``quiet`` silences
both; warnings are always printed.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mirage_cli.session import RenderEvents


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
        self.step_task = self.progress.add_task(f"chunk {index + 1} steps", total=steps, completed=start_step)

    def step_done(self, index: int, step: int, steps: int) -> None:
        if self.progress is not None and self.step_task is not None:
            self.progress.update(self.step_task, completed=step)

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
