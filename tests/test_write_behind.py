"""Chunk files written behind the next chunk's denoising (mirage_cli.render.write_behind).

The render writes chunk k's segment, latents and PNG frames, then the checkpoint counting chunk k, on
a worker thread while chunk k + 1 denoises. These tests hold it to the sequential render's promises:
the same files byte for byte, the same error when a write fails (with the last good checkpoint
resumable), and a kill or a stop while a write is in flight resuming to the reference bytes. Kills
and stops use real processes and signals with the test-only pauses (``mirage_cli.testing.pauses``).
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import time
from pathlib import Path

import pytest
from render_helpers import Child, cli, file_hash, final_checkpoint_tensors, render_args, same_tensors, step_of

from mirage_cli.base.errors import RenderError
from mirage_cli.base.options import BackboneOptions, RenderOptions, VideoOptions
from mirage_cli.render import outputs as outputs_module
from mirage_cli.render.session import render
from mirage_cli.render.write_behind import WRITER_NICENESS, ChunkWriter, WriteResult
from mirage_cli.rundir.checkpoint import MANIFEST
from mirage_cli.spec.plan import load_plan


@pytest.fixture
def reference(renders) -> Path:
    return renders["latent"][0]


def checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "state").glob("ckpt-*")) if (run / "state").exists() else []


def meta(run: Path, name: str) -> dict:
    return json.loads((run / "state" / name / MANIFEST).read_text())["meta"]


def library_render(scene: Path, run: Path, *, write_behind: bool, frames: Path | None = None, lossless: bool = False):
    """``mirage render SCENE --out RUN --memory latent`` with the small options, through the library."""
    plan = load_plan(scene, {"steps": 3, "memory.mode": "latent"})
    options = RenderOptions(out=run, backbone=BackboneOptions(preset="tiny"),
                            video=VideoOptions(lossless=lossless, frames_dir=frames))
    return render(plan, options, write_behind=write_behind)


def files_of(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folders``, keyed by file name."""
    return {p.name: file_hash(p) for folder in folders for p in sorted(folder.iterdir())}


def latents_of(run: Path) -> dict[str, tuple]:
    """Each latents file's tensor bytes and metadata. Not the file's bytes: safetensors writes the
    metadata keys in a random order (a Rust HashMap), in any thread, one call to the next."""
    from safetensors import safe_open

    out = {}
    for path in sorted((run / "latents").iterdir()):
        with safe_open(str(path), "pt") as f:
            out[path.name] = (f.get_tensor("latents").numpy().tobytes(), f.metadata())
    return out


def resume_and_compare(scene: Path, run: Path, reference: Path) -> None:
    result = cli(*render_args(scene, run))
    assert result.exit_code == 0, result.stderr
    assert file_hash(run / "video.mp4") == file_hash(reference / "video.mp4")
    assert files_of(run / "segments") == files_of(reference / "segments")
    assert latents_of(run) == latents_of(reference)
    assert same_tensors(final_checkpoint_tensors(run), final_checkpoint_tensors(reference))


def test_written_behind_gives_the_sequential_files(tmp_path, small_scene, reference):
    """Segments (MP4 and MKV), latents, PNG frames, both videos and the final checkpoint tensors: the
    same bytes written behind the next chunk as written one after the other, and as the reference."""
    runs = {}
    for behind in (False, True):
        run, frames = tmp_path / f"run-{behind}", tmp_path / f"frames-{behind}"
        library_render(small_scene, run, write_behind=behind, frames=frames, lossless=True)
        runs[behind] = (run, frames)
    (seq, seq_frames), (bg, bg_frames) = runs[False], runs[True]
    seq_files = files_of(seq / "segments", seq_frames)
    assert len(seq_files) == 4 + 17
    assert files_of(bg / "segments", bg_frames) == seq_files
    assert latents_of(bg) == latents_of(seq) and len(latents_of(seq)) == 2
    for name in ("video.mp4", "video.mkv"):
        assert file_hash(bg / name) == file_hash(seq / name)
    assert file_hash(bg / "video.mp4") == file_hash(reference / "video.mp4")
    assert same_tensors(final_checkpoint_tensors(bg), final_checkpoint_tensors(seq))
    # the sequential profile keeps today's stages; written behind, the writes are shown apart
    stages = {behind: json.loads((run / "report.json").read_text())["stages"] for behind, (run, _) in runs.items()}
    assert stages[False]["mp4_write"]["parent"] is None and "background_write" not in stages[False]
    assert stages[True]["background_write"]["parent"] == "background"
    assert stages[True]["background_mp4_write"]["calls"] == 2


@pytest.mark.parametrize("failing_chunk", [0, 1])
def test_a_failed_write_ends_in_the_sequential_error_and_resumes(tmp_path, small_scene, reference, monkeypatch, failing_chunk):
    """A full disk while a chunk's segment is encoded ends the render with the RenderError the
    sequential render raises (exit 1 through the CLI); the newest checkpoint is the one before that
    chunk, and the same command resumes to the reference bytes. The full disk is a mock (the encoder
    raises ENOSPC for that one segment): a real full disk cannot be made here."""
    real = outputs_module.write_mp4
    failing = f"chunk_{failing_chunk:04d}.mp4"

    def disk_full_for_one_segment(path, *args, **kwargs):
        if Path(path).name == failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(outputs_module, "write_mp4", disk_full_for_one_segment)
    messages = {}
    for behind in (False, True):
        run = tmp_path / f"run-{behind}"
        with pytest.raises(RenderError) as error:
            library_render(small_scene, run, write_behind=behind)
        messages[behind] = str(error.value).replace(str(run), "RUN")
        assert checkpoints(run) == ([] if failing_chunk == 0 else ["ckpt-000001"])
        if failing_chunk == 1:
            assert meta(run, "ckpt-000001")["chunk"] == 1
    assert messages[True] == messages[False]
    assert messages[True] == f"cannot write RUN/segments/{failing}: No space left on device; the last checkpoint is intact"

    run = tmp_path / "run-cli"
    result = cli(*render_args(small_scene, run))
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {messages[True].replace('RUN', str(run))}"]
    monkeypatch.setattr(outputs_module, "write_mp4", real)
    resume_and_compare(small_scene, run, reference)


def test_sigkill_while_a_chunk_is_written_resumes_to_the_same_bytes(tmp_path, small_scene, reference):
    """Killed while chunk 0's files are written (the writer paused between its files and its
    checkpoint) and chunk 1 already denoises: no checkpoint counts chunk 0 yet, so the resumed render
    renders it again, to the reference bytes."""
    run = tmp_path / "run"
    child = Child(small_scene, run, "chunk_write=30")
    child.wait_for(step_of(1))  # chunk 1 denoises while chunk 0 is being written
    segment, deadline = run / "segments" / "chunk_0000.mp4", time.monotonic() + 120
    while not segment.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert segment.exists() and checkpoints(run) == []  # written, not counted yet
    child.kill()
    resume_and_compare(small_scene, run, reference)


def test_sigterm_while_a_chunk_is_written_finishes_it_then_checkpoints(tmp_path, small_scene, reference):
    """SIGTERM during chunk 1 while chunk 0 is still written: the write ends, its checkpoint is saved,
    then the mid-chunk checkpoint (which records chunk 0's files); exit 75; resuming gives the
    reference bytes."""
    run = tmp_path / "run"
    child = Child(small_scene, run, "chunk_write=3,denoise_step=0.5")
    child.wait_for(step_of(1))
    assert checkpoints(run) == []  # chunk 0's write is still in flight
    child.proc.send_signal(signal.SIGTERM)
    assert child.finish() == 75
    assert checkpoints(run) == ["ckpt-000001", "ckpt-000002"]
    first, mid = meta(run, "ckpt-000001"), meta(run, "ckpt-000002")
    assert (first["chunk"], first["mid_chunk_step"]) == (1, None)
    assert mid["chunk"] == 1 and mid["mid_chunk_step"] >= 1
    assert {"segments/chunk_0000.mp4", "latents/chunk_0000.safetensors"} <= set(mid["outputs"])
    saved = [e["next_chunk"] for e in child.events if e["event"] == "checkpoint"]
    assert saved == [1, 1]
    resume_and_compare(small_scene, run, reference)


def test_chunk_writer_holds_one_job_and_keeps_its_error():
    """One job in flight at most; a job's error is raised unchanged by the wait that collects it."""
    disk_full = RenderError("cannot write x: No space left on device")

    def failing() -> WriteResult:
        raise disk_full

    for background in (False, True):
        with ChunkWriter(background=background) as writer:
            writer.submit(lambda: WriteResult(0, {"a": {}}, {}))
            with pytest.raises(RuntimeError, match="still pending"):
                writer.submit(lambda: WriteResult(1, {}, {}))
            assert writer.wait().chunk_index == 0 and not writer.pending
            writer.submit(failing)
            writer.close()  # waits for the job; its outcome stays for wait()
            assert writer.failed and writer.poll() is None and writer.pending
            with pytest.raises(RenderError) as error:
                writer.wait()
            assert error.value is disk_full and not writer.pending
            assert writer.wait() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_the_writer_thread_steps_back_for_the_render_thread():
    """The writer runs at WRITER_NICENESS above the render thread (its encoder threads inherit it), and
    the render thread keeps its own priority."""
    import os
    import threading

    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {}

    def job() -> WriteResult:
        seen["writer"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return WriteResult(0, {}, {})

    with ChunkWriter(background=True) as writer:
        writer.submit(job)
        writer.wait()
    assert seen["writer"] == min(before + WRITER_NICENESS, 19) and os.getpriority(os.PRIO_PROCESS, 0) == before
