"""Long renders survive anything: kill -9 at several moments, SIGTERM, corrupt checkpoints, a second writer.

Real processes and real signals. The render to kill runs in a child process with
``--progress jsonl`` (the test reads its events to know where it is) and a test-only pause
(``mirage_cli.testing.pauses``: a sleep after every denoising step, or inside a checkpoint write) that
makes each moment wide enough to hit; pauses change when things happen, never what is computed.
After the kill the render is resumed with the same command (in this process) and must give what a
user gets from an uninterrupted render: the same ``video.mp4`` bytes and the same final checkpoint
tensors as the session's reference render (conftest.py ``renders["latent"]``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from render_helpers import Child, cli, file_hash, final_checkpoint_tensors, render_args, same_tensors, step_of

from mirage_cli.rundir.checkpoint import MANIFEST


def checkpoints(run: Path) -> list[str]:
    state = run / "state"
    return sorted(p.name for p in state.glob("ckpt-*")) if state.exists() else []


def resume_and_compare(scene: Path, run: Path, reference: Path) -> str:
    result = cli(*render_args(scene, run))
    assert result.exit_code == 0, result.stderr
    assert file_hash(run / "video.mp4") == file_hash(reference / "video.mp4")
    assert same_tensors(final_checkpoint_tensors(run), final_checkpoint_tensors(reference))
    return result.stderr


@pytest.fixture
def reference(renders) -> Path:
    return renders["latent"][0]


def test_sigkill_before_first_checkpoint(tmp_path, small_scene, reference):
    run = tmp_path / "run"
    child = Child(small_scene, run, "denoise_step=0.5")
    child.wait_for(step_of(0))
    assert checkpoints(run) == []
    child.kill()
    resume_and_compare(small_scene, run, reference)


def test_sigkill_after_first_chunk(tmp_path, small_scene, reference):
    run = tmp_path / "run"
    child = Child(small_scene, run, "denoise_step=0.5")
    child.wait_for(lambda e: e["event"] == "checkpoint" and e["next_chunk"] == 1)
    child.wait_for(step_of(1))  # inside chunk 1's denoising
    child.kill()
    assert (run / "segments" / "chunk_0000.mp4").exists() and not (run / "segments" / "chunk_0001.mp4").exists()
    resume_and_compare(small_scene, run, reference)


def test_sigkill_during_checkpoint_write(tmp_path, small_scene, reference):
    run = tmp_path / "run"
    child = Child(small_scene, run, "checkpoint_write=3")
    state = run / "state"

    def writing() -> list[Path]:
        return [d for d in state.glob(".tmp-ckpt-*") if any(d.iterdir())] if state.exists() else []

    deadline = time.monotonic() + 120
    while not writing() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writing(), "the checkpoint write window was never seen"
    child.kill()
    assert writing() and checkpoints(run) == []  # killed inside the first write: half a checkpoint on disk
    resume_and_compare(small_scene, run, reference)
    assert not list(state.glob(".tmp-ckpt-*"))  # the leftover was cleaned up


def test_sigterm_saves_mid_chunk_and_resumes(tmp_path, small_scene, reference):
    run = tmp_path / "run"
    child = Child(small_scene, run, "denoise_step=0.5")
    child.wait_for(step_of(1))
    child.proc.send_signal(signal.SIGTERM)
    assert child.finish() == 75
    last = child.events[-1]
    assert last["event"] == "interrupted" and last["exit_code"] == 75 and "checkpoint saved" in last["message"]
    saved = [e for e in child.events if e["event"] == "checkpoint"]
    assert saved[-1]["next_chunk"] == 1 and saved[-1]["mid_chunk_step"] >= 1
    info = cli("inspect", run, "--json")
    assert info.exit_code == 0 and json.loads(info.stdout)["resumable"] is True
    resume_and_compare(small_scene, run, reference)


def test_corrupt_checkpoint_falls_back(tmp_path, small_scene, reference):
    run = tmp_path / "run"
    child = Child(small_scene, run, "denoise_step=0.5")
    child.wait_for(step_of(1))
    child.proc.send_signal(signal.SIGTERM)  # leaves a chunk-boundary checkpoint and a mid-chunk one
    assert child.finish() == 75
    names = checkpoints(run)
    assert len(names) >= 2
    target = next((run / "state" / names[-1]).glob("*.safetensors"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    err = resume_and_compare(small_scene, run, reference)
    assert "unusable" in err and names[-1] in err


def test_second_writer_is_refused(tmp_path, small_scene):
    run = tmp_path / "run"
    child = Child(small_scene, run, "denoise_step=2")
    try:
        child.wait_for(step_of(0))
        second = cli(*render_args(small_scene, run))
        assert second.exit_code == 2
        assert "in use" in second.stderr
    finally:
        child.kill()


def test_unwritable_output_is_exit_2_before_anything_is_written(tmp_path, small_scene):
    if os.geteuid() == 0:
        # root ignores directory permissions; a file in the way of the run directory works for anyone.
        blocker = tmp_path / "file"
        blocker.write_text("x")
        run = blocker / "run"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        run = ro / "run"
    result = cli(*render_args(small_scene, run))
    assert result.exit_code == 2, "an --out that cannot be written is bad usage"
    assert result.stderr.startswith("error: --out: ")
    assert not run.exists()


def test_latents_that_stop_being_finite_end_the_render_resumably(tmp_path, small_scene, reference, monkeypatch):
    """A step whose velocity is NaN in chunk 2 stops the render with exit 1 naming the chunk and the
    step; chunk 1's checkpoint stays the newest, nothing is marked finished, and the same command
    resumes to the reference bytes. The NaN is injected by wrapping the real velocity prediction
    (a model that overflows in one chunk only cannot be built on a tiny CPU model; this is the one
    mock, and it only replaces the transformer's output at one step)."""
    from mirage_cli.denoise import loop

    real, calls = loop._predict_velocity, []

    def nan_in_chunk_2_step_2(*args, **kwargs):
        velocity = real(*args, **kwargs)
        calls.append(1)
        return velocity * float("nan") if len(calls) == 5 else velocity  # SMALL: 3 steps a chunk

    monkeypatch.setattr(loop, "_predict_velocity", nan_in_chunk_2_step_2)
    run = tmp_path / "run"
    result = cli(*render_args(small_scene, run))
    assert result.exit_code == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "chunk 2/2, step 2/3: the latents are not finite" in errors[0], result.stderr
    assert "resumes from the start of chunk 2" in errors[0]
    assert checkpoints(run) and json.loads((run / "state" / checkpoints(run)[-1] / MANIFEST).read_text())["meta"]["chunk"] == 1
    assert not (run / "video.mp4").exists() and not list(run.glob("crash-*"))
    monkeypatch.setattr(loop, "_predict_velocity", real)
    resume_and_compare(small_scene, run, reference)


def test_the_finite_watch_names_the_first_bad_step_a_step_late_and_at_flush():
    import torch

    from mirage_cli.denoise.loop import FiniteWatch, NonFiniteLatents

    watch = FiniteWatch(steps=4)
    watch.after_step(0, torch.zeros(3))
    watch.after_step(1, torch.tensor([0.0, float("inf"), 0.0]))  # read at the next step
    with pytest.raises(NonFiniteLatents) as e:
        watch.after_step(2, torch.zeros(3))
    assert (e.value.step, e.value.steps) == (1, 4)
    last = FiniteWatch(steps=2)
    last.after_step(0, torch.zeros(3))
    last.after_step(1, torch.tensor([float("nan")]))
    with pytest.raises(NonFiniteLatents, match="step 2/2"):
        last.flush()
