"""Parallel renders under torchrun, on this CPU: two real processes with the gloo backend and
diffusers' context parallelism (Ulysses) splitting the tiny model's tokens, real signals.

What a GPU would add is untested here: NCCL, one GPU per rank, ring attention (it needs an attention
backend with log-sum-exp, which the CPU's native backend is not) and the speed-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from render_helpers import cli, file_hash, render_args

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(scene: Path, run: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [*TORCHRUN, "-m", "mirage_cli", *render_args(scene, run), "--parallel", "ulysses", "--progress", "jsonl", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def events_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def rank_pid(agent: int, rank: int, timeout: float = 60) -> int:
    """The pid of the process torchrun started for ``rank`` (its RANK environment variable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in Path("/proc").iterdir():
            if not child.name.isdigit():
                continue
            try:
                stat = (child / "stat").read_text().split()
                environ = (child / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat[3]) == agent and f"RANK={rank}".encode() in environ:
                return int(child.name)
        time.sleep(0.2)
    raise AssertionError(f"no process of rank {rank} under {agent}")


def test_a_parallel_render_equals_the_single_process_one(tmp_path, small_scene, renders):
    run = tmp_path / "run"
    proc = torchrun(small_scene, run)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert file_hash(run / "video.mp4") == file_hash(renders["latent"][0] / "video.mp4")
    done = [e for e in events_of(stderr) if e["event"] == "done"]
    assert len(done) == 1  # the leader reports; the follower prints nothing


def test_a_stop_on_a_follower_stops_every_rank_and_the_run_resumes_on_two_or_on_one(tmp_path, small_scene, renders):
    run = tmp_path / "run"
    proc = torchrun(small_scene, run, env={"MIRAGE_TEST_PAUSE": "denoise_step=0.5"})
    follower = rank_pid(proc.pid, 1)
    for line in proc.stderr:  # the leader's events
        if line.startswith("{") and json.loads(line)["event"] == "step" and json.loads(line)["chunk"] == 1:
            break
    os.kill(follower, signal.SIGTERM)  # the stop reaches one follower only
    _, rest = proc.communicate(timeout=300)
    events = events_of(rest)
    saved = [e for e in events if e["event"] == "checkpoint"]
    assert saved and saved[-1]["next_chunk"] == 1 and saved[-1]["mid_chunk_step"] >= 1  # the leader saved inside chunk 1
    assert events[-1]["event"] == "interrupted" and events[-1]["exit_code"] == 75
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)

    again = torchrun(small_scene, run)  # resumed on two ranks
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert file_hash(run / "video.mp4") == file_hash(renders["latent"][0] / "video.mp4")
    alone = cli(*render_args(small_scene, copy))  # the same checkpoint resumed by one process
    assert alone.exit_code == 0, alone.stderr
    assert file_hash(copy / "video.mp4") == file_hash(renders["latent"][0] / "video.mp4")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_that_disagree_refuse_and_a_render_outside_torchrun_is_refused(tmp_path, small_scene):
    port = _free_port()
    procs = []
    for rank, seed in ((0, "1"), (1, "2")):  # as torchrun would start them, but with different seeds
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        cmd = [sys.executable, "-m", "mirage_cli", *render_args(small_scene, tmp_path / "run"), "--seed", seed, "--parallel", "ulysses"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, stderr in results:
        assert code == 2 and "the ranks disagree about the settings" in stderr, stderr[-2000:]
    assert not (tmp_path / "run").exists()
    alone = cli(*render_args(small_scene, tmp_path / "run"), "--parallel", "ulysses")
    assert alone.exit_code == 2 and "needs torchrun" in alone.stderr
