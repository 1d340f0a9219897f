"""A stop signal at any moment of a render ends in exit 75, never in a death by the signal.

Real child processes and real signals, at the moments outside the chunk loop that
``tests/test_resume.py`` does not cover: while starting (imports), while loading the model, during
the final assembly, and repeated signals. Test-only pauses (``mirage_cli.testing.pauses``) widen each
moment; they change when things happen, never what is computed.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from render_helpers import Child, cli, step_of, write_small_scene
from test_resume import resume_and_compare


@pytest.fixture
def reference(renders) -> Path:
    return renders["latent"][0]


def catches(pid: int, sig: int) -> bool:
    """True once process ``pid`` has a handler installed for ``sig`` (Linux: SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def finish(child: Child) -> tuple[int, list[str]]:
    """Exit code and stderr lines of a child whose events need not all be JSON."""
    lines = child.proc.stderr.read().splitlines()
    child.proc.stderr.close()
    return child.proc.wait(), lines


@pytest.mark.parametrize("moment", ["main", "imports"])  # just after the handlers are installed; inside the command
def test_stop_while_starting_exits_75(tmp_path, small_scene, moment):
    run = tmp_path / "run"
    child = Child(small_scene, run, f"{moment}=5")
    deadline = time.monotonic() + 30
    while not catches(child.proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.005)
    child.proc.send_signal(signal.SIGTERM)
    code, lines = finish(child)
    assert code == 75, lines
    assert "stopped by SIGTERM while starting" in lines[-1]
    assert not (run / "state").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_while_loading_the_model_exits_75(tmp_path, small_scene, reference, sig):
    run = tmp_path / "run"
    child = Child(small_scene, run, "model_load=5")
    child.wait_for(lambda e: e["event"] == "setup" and e["message"].startswith("loading model"))
    child.proc.send_signal(sig)
    assert child.finish() == 75
    last = child.events[-1]
    assert last["event"] == "interrupted" and f"stopped by {signal.Signals(sig).name} while loading the model" in last["message"]
    assert "nothing needed saving" in last["message"]
    assert not list((run / "state").glob("ckpt-*"))
    resume_and_compare(small_scene, run, reference)


def test_stop_during_assembly_exits_75_and_resumes(tmp_path, small_scene, reference):
    run = tmp_path / "run"
    child = Child(small_scene, run, "assemble=5")
    child.wait_for(lambda e: e["event"] == "checkpoint" and e["next_chunk"] == 2)
    child.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    child.proc.send_signal(signal.SIGTERM)  # a second one keeps the first one's outcome
    assert child.finish() == 75
    assert "while assembling the video" in child.events[-1]["message"]
    info = json.loads(cli("inspect", run, "--json").stdout)
    assert info["chunks_done"] == info["num_chunks"] == 2 and info["finished"] is False
    assert info["resumable"] is True and info["reason"] == "every chunk is rendered; re-run to assemble video.mp4"
    resume_and_compare(small_scene, run, reference)


def test_repeated_sigterm_during_denoising_keeps_exit_75(tmp_path, small_scene, reference):
    run = tmp_path / "run"
    child = Child(small_scene, run, "denoise_step=0.5,checkpoint_write=0.2")
    child.wait_for(step_of(1))
    for _ in range(3):
        child.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
    assert child.finish() == 75
    assert child.events[-1]["event"] == "interrupted" and "checkpoint saved" in child.events[-1]["message"]
    resume_and_compare(small_scene, run, reference)


def test_a_stop_while_decoding_says_what_it_finishes_and_which_chunks_are_done(tmp_path):
    """SIGINT while the second of three chunks decodes: the render says that chunk is finished first and
    about how long that takes (its first chunk's decode, depth and memory took as long), then stops
    after it, naming the chunks done and the one the next run renders from."""
    keyframes = [{"frame": 0, "position": [0.0, 0.0, 0.0], "yaw": 0}, {"frame": 24, "position": [0.3, 0.0, 0.4], "yaw": 30}]
    scene = write_small_scene(tmp_path / "scene", frames=25, camera={"keyframes": keyframes})  # chunks 0-8, 8-16, 16-24
    run = tmp_path / "run"
    child = Child(scene, run, "decode=2")
    child.wait_for(lambda e: e["event"] == "stage" and e["chunk"] == 1 and e["stage"] == "decoding")
    child.proc.send_signal(signal.SIGINT)
    assert child.finish() == 75
    stages = [e["stage"] for e in child.events if e["event"] == "stage" and e["chunk"] == 0]
    assert stages[:2] == ["memory", "denoising"] and "decoding" in stages and "depth" in stages
    stopping = [e["message"] for e in child.events if e["event"] == "stopping"]
    assert len(stopping) == 1 and "chunk 2/3 is decoding" in stopping[0] and "as in the chunks before" in stopping[0]
    last = child.events[-1]
    assert last["event"] == "interrupted"
    assert "chunks 1-2 of 3 are done, checkpoint saved; run the same command again to render from chunk 3" in last["message"]
    info = json.loads(cli("inspect", run, "--json").stdout)
    assert info["chunks_done"] == 2 and info["resumable"] is True
