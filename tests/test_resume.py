"""Long renders survive anything: kill -9 at several points, SIGTERM, corrupt checkpoints, a second writer.

Real processes and real signals. Whatever the moment of the kill, a resumed render must decode to
exactly the frames of an uninterrupted one (CPU determinism contract). The kill moments are chosen
by watching the run directory (first step done, first checkpoint written, a checkpoint being
written); where a moment is missed the assertion still holds, it is only a weaker test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mirage_cli.video import read_mp4

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "room" / "scene.yaml"
# Enough steps that a chunk takes a moment, so kills land inside the work.
ARGS = ["--preset", "tiny", "--steps", "24", "--memory", "latent", "--quiet"]


def render_cmd(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mirage_cli", "render", str(EXAMPLE), "--out", str(run), *ARGS, *extra]


def frames_of(run: Path) -> np.ndarray:
    return read_mp4(run / "video.mp4")[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> np.ndarray:
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run(render_cmd(run), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return frames_of(run)


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.005) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False


def start(run: Path) -> subprocess.Popen:
    return subprocess.Popen(render_cmd(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def resume_and_compare(run: Path, reference: np.ndarray) -> str:
    proc = subprocess.run(render_cmd(run), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(frames_of(run), reference)
    return proc.stderr


def checkpoints(run: Path) -> list[str]:
    state = run / "state"
    return sorted(p.name for p in state.glob("ckpt-*")) if state.exists() else []


def test_sigkill_before_first_checkpoint(tmp_path, reference):
    run = tmp_path / "run"
    p = start(run)
    assert wait_for(lambda: (run / "run.json").exists())
    time.sleep(1.0)  # loading / first chunk under way, no checkpoint yet
    p.kill()
    p.wait()
    resume_and_compare(run, reference)


def test_sigkill_after_first_chunk(tmp_path, reference):
    run = tmp_path / "run"
    p = start(run)
    assert wait_for(lambda: len(checkpoints(run)) >= 1)
    time.sleep(0.05)  # inside chunk 1's denoising
    p.kill()
    p.wait()
    assert (run / "segments" / "chunk_0000.mp4").exists()
    resume_and_compare(run, reference)


def test_sigkill_during_checkpoint_write(tmp_path, reference):
    run = tmp_path / "run"
    p = start(run)
    state = run / "state"
    # Kill the moment a checkpoint is being written (a temporary directory exists).
    wait_for(lambda: state.exists() and any(x.name.startswith(".tmp-ckpt-") for x in state.iterdir()), interval=0.0005)
    p.kill()
    p.wait()
    resume_and_compare(run, reference)


def test_sigterm_saves_mid_chunk_and_resumes(tmp_path, reference):
    run = tmp_path / "run"
    p = start(run)
    assert wait_for(lambda: len(checkpoints(run)) >= 1)
    time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 75, err
    assert "checkpoint saved" in err and "Traceback" not in err
    info = subprocess.run([sys.executable, "-m", "mirage_cli", "inspect", str(run), "--json"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    state = json.loads(info.stdout)
    assert state["resumable"] is True
    resume_and_compare(run, reference)


def test_corrupt_checkpoint_falls_back(tmp_path, reference):
    run = tmp_path / "run"
    p = start(run)
    assert wait_for(lambda: len(checkpoints(run)) >= 1)
    time.sleep(0.1)
    p.send_signal(signal.SIGTERM)  # leaves a chunk-boundary checkpoint and a mid-chunk one
    p.communicate(timeout=60)
    assert p.returncode == 75
    names = checkpoints(run)
    assert len(names) >= 2
    newest = run / "state" / names[-1]
    target = next(newest.glob("*.safetensors"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    err = resume_and_compare(run, reference)
    assert "corrupt" in err and names[-1] in err


def test_second_writer_is_refused(tmp_path):
    run = tmp_path / "run"
    p = start(run)
    try:
        assert wait_for(lambda: (run / ".lock").exists() or (run / "run.json").exists())
        second = subprocess.run(render_cmd(run), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert "in use" in second.stderr and "Traceback" not in second.stderr
    finally:
        p.kill()
        p.wait()


def test_unwritable_output_is_exit_1(tmp_path):
    if os.geteuid() == 0:
        # root ignores directory permissions; a file in the way of the run directory works for anyone.
        blocker = tmp_path / "file"
        blocker.write_text("x")
        run = blocker / "run"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        run = ro / "run"
    proc = subprocess.run(render_cmd(run), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot create run directory" in proc.stderr and "Traceback" not in proc.stderr
