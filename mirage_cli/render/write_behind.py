"""Write behind: a chunk's files are written while the next chunk denoises.

Once chunk k is decoded, the render thread copies what its files are made of to the host
(``RenderOutputs.host_copy``: uint8 frames, float32 latents) and the checkpoint that records chunk k
as done (its state tensors copied to the host, its meta), and hands both to a ``ChunkWriter``. One
worker thread then writes the chunk's latents, segment(s) and PNG frames, records their hashes
(``file_record``) and only then saves that checkpoint: a checkpoint never counts a chunk whose files
are not all written and recorded. Meanwhile the render thread denoises chunk k + 1.

What a kill leaves, at any moment: while chunk k's files are written the newest checkpoint is still
the one before chunk k, so a resumed render renders chunk k again (same inputs, same bytes); its
half-written files are temporary files (every write is atomic) that stage 1 removes.

Bounded: one job at most is in flight (``submit`` refuses a second one), so one chunk's frames are
held besides the chunk being rendered. The job works only on its own host copies, and the encoder's
thread count is fixed (``mirage_cli.base.video``), so the bytes are those of writing in the render
thread. An error of the job (a full disk: ``RenderError``) is kept and raised, unchanged, by the
``wait`` that collects it; nothing of a failed job is counted.

``ChunkWriter(background=False)`` runs each job at once in the caller's thread: the sequential
render, same files, same checkpoints (benchmarks compare the two).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from mirage_cli.profiling.profiler import CHECKPOINT_WRITE
from mirage_cli.render.outputs import ChunkFiles, RenderOutputs
from mirage_cli.rundir.checkpoint import CheckpointStore
from mirage_cli.testing import pauses as test_hooks


class StageClock:
    """Seconds per stage name, summed, for work timed off the render thread (the ``Profiler`` is the
    render thread's own)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@dataclass(frozen=True)
class ChunkCheckpoint:
    """The checkpoint that records a chunk as done, ready to save from any thread.

    ``tensors``: ``{key: {name: tensor}}`` on the CPU, copies owned by the checkpoint. ``meta``: its
    meta (``mirage_cli.rundir.meta``); its ``outputs`` are the records of the chunks before, and the
    chunk's own records are added once its files are written.
    """

    tensors: dict
    meta: dict


@dataclass(frozen=True)
class WriteResult:
    """What a finished job did: the chunk, the records of its files, the checkpoint saved
    (``info``: as ``RenderEvents.checkpoint_saved`` takes it), and seconds per stage
    (``mp4_write``, ``outputs_write``, ``checkpoint_write``) and in all."""

    chunk_index: int
    records: dict[str, dict]
    info: dict
    seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0


def host_tensors(tensors: dict) -> dict:
    """``{key: {name: tensor}}`` copied to the CPU (new memory, also for tensors already there)."""
    return {key: {name: t.detach().to("cpu", copy=True) for name, t in group.items()} for key, group in tensors.items()}


def write_chunk_then_checkpoint(outputs: RenderOutputs, files: ChunkFiles, store: CheckpointStore,
                                checkpoint: ChunkCheckpoint) -> WriteResult:
    """Write a chunk's files, then save the checkpoint that counts it (with the files' records).

    Raises:
        RenderError: a file or the checkpoint cannot be written (nothing is counted).
    """
    t0 = time.perf_counter()
    clock = StageClock()
    records = outputs.write_files(files, stage=clock.stage)
    test_hooks.pause("chunk_write")  # tests kill the render here, the files written, the checkpoint not yet
    meta = {**checkpoint.meta, "outputs": {**checkpoint.meta["outputs"], **records}}
    with clock.stage(CHECKPOINT_WRITE):
        path = store.save(checkpoint.tensors, meta)
    info = {"name": path.name, "next_chunk": meta["chunk"], "mid_chunk_step": meta["mid_chunk_step"], "done": meta["done"],
            "seconds": clock.seconds[CHECKPOINT_WRITE]}
    return WriteResult(files.chunk.index, records, info, clock.seconds, time.perf_counter() - t0)


WRITER_NICENESS = 10
"""How much the writer thread (and the encoder threads it starts, which inherit it) steps back: the
render thread, which feeds the GPU, runs first when both want a core; the writer takes what is left."""


def yield_to_the_render() -> None:
    """Lower the calling thread's scheduling priority by ``WRITER_NICENESS`` (Linux, where niceness is
    per thread). Elsewhere, or where the system does not allow it, the thread keeps its priority;
    nothing else changes (the bytes do not depend on scheduling)."""
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is no process id: leave it
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + WRITER_NICENESS)
    except OSError:  # a sandbox that forbids it
        pass


class ChunkWriter:
    """Runs write jobs one at a time: on one worker thread (``background``), or at once in the caller.

    At most one job is pending: ``submit`` refuses a second one until ``wait`` (or ``poll``) has
    collected the first. Use as a context manager: leaving it waits for the pending job.
    """

    def __init__(self, background: bool = True):
        self.background = background
        self._pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirage-writer", initializer=yield_to_the_render)
                      if background else None)
        self._pending: Future | None = None

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, job: Callable[[], WriteResult]) -> None:
        """Start ``job`` (in the background, or now); raises RuntimeError while another is pending."""
        if self._pending is not None:
            raise RuntimeError("a chunk's write is still pending: wait() for it first")
        if self._pool is not None:
            self._pending = self._pool.submit(job)
            return
        future: Future = Future()
        try:
            future.set_result(job())
        except Exception as e:  # kept for wait(), as the background thread keeps it
            future.set_exception(e)
        self._pending = future

    @property
    def pending(self) -> bool:
        """A job was submitted and not collected yet (running, finished or failed)."""
        return self._pending is not None

    @property
    def failed(self) -> bool:
        """The pending job finished with an error (``wait`` raises it)."""
        return self._pending is not None and self._pending.done() and self._pending.exception() is not None

    def poll(self) -> WriteResult | None:
        """The pending job's result if it finished well (it is then collected); None while it runs,
        when it failed (``wait`` raises its error) or when nothing is pending."""
        if self._pending is None or not self._pending.done() or self._pending.exception() is not None:
            return None
        return self.wait()

    def wait(self) -> WriteResult | None:
        """Wait for the pending job and collect it: its result, or its error raised; None if none."""
        future, self._pending = self._pending, None
        return None if future is None else future.result()

    def close(self) -> None:
        """Wait for the pending job to end (its outcome is left for ``wait``) and stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
