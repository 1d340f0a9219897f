"""RunLock: one writer per run directory, with real processes holding and abandoning the lock.

Locks "from another host" are lock files written by hand with a different host name (a second host
cannot exist in a test); SLURM is only present as the environment variable SLURM_JOB_ID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from mirage_cli.base.errors import InputError, RenderError
from mirage_cli.rundir.layout import RunDir
from mirage_cli.rundir.lock import lock_status, read_lock

_HOLDER = r"""
import sys, time
from mirage_cli.rundir.layout import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(60)
"""

_TRY = r"""
import sys
from mirage_cli.base.errors import InputError
from mirage_cli.rundir.layout import RunDir
try:
    with RunDir(sys.argv[1]).lock():
        print("acquired")
except InputError as e:
    print("refused:", e)
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_file_content_and_release(tmp_path):
    run = tmp_path / "run"
    with RunDir(run).lock() as lock:
        info = read_lock(RunDir(run).lock_file)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["started"] == lock.info["started"]
    assert not (run / ".lock").exists()


def test_released_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with RunDir(tmp_path).lock():
            raise RuntimeError("boom")
    assert not (tmp_path / ".lock").exists()
    with RunDir(tmp_path).lock():
        pass


def test_second_writer_in_another_process_is_refused(tmp_path):
    with RunDir(tmp_path).lock():
        out = subprocess.run([sys.executable, "-c", _TRY, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("refused: run directory")
    assert f"is in use by pid {os.getpid()} on host {socket.gethostname()} since" in out.stdout


def test_second_writer_in_same_process_is_refused(tmp_path):
    with RunDir(tmp_path).lock():
        with pytest.raises(InputError, match="is in use by pid"):
            RunDir(tmp_path).lock().acquire()
    assert not (tmp_path / ".lock").exists()


def test_killed_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"in use by pid {holder.pid}"):
            RunDir(tmp_path).lock().acquire()
        assert lock_status(RunDir(tmp_path).lock_file)["alive"] is True
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert lock_status(RunDir(tmp_path).lock_file)["alive"] is False
    with RunDir(tmp_path).lock() as lock:
        assert lock.took_over["pid"] == holder.pid
        assert read_lock(RunDir(tmp_path).lock_file)["pid"] == os.getpid()
    assert lock.take_over_message.endswith("that process is gone")


def test_stale_lock_with_reused_pid_is_taken_over(tmp_path):
    # our own pid is alive, but it started at another time: the pid was reused
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                "started": "then", "process_start": 1.0}))
    with RunDir(tmp_path).lock() as lock:
        assert lock.took_over is not None


def test_lock_of_dead_pid_on_same_host_is_taken_over(tmp_path):
    pid = _dead_pid()
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": "then"}))
    with RunDir(tmp_path).lock() as lock:
        assert lock.took_over["pid"] == pid


def test_lock_from_another_host_is_respected_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    (tmp_path / ".lock").write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "started": "2026-01-01",
                                                "job": None}))
    with pytest.raises(InputError) as info:
        RunDir(tmp_path).lock().acquire()
    message = str(info.value)
    assert "in use by pid 4242 on host node-elsewhere since 2026-01-01" in message
    assert f"delete {tmp_path / '.lock'}" in message
    assert (tmp_path / ".lock").exists()
    assert lock_status(RunDir(tmp_path).lock_file)["alive"] is None


def test_lock_of_the_same_slurm_job_on_another_host_is_taken_over(tmp_path, monkeypatch):
    """SLURM is mocked by its environment variable: a requeued job finds its own old lock."""
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "98765")
    (tmp_path / ".lock").write_text(json.dumps({"host": "node-before-requeue", "pid": 4242, "started": "x",
                                                "job": "98765"}))
    with RunDir(tmp_path).lock() as lock:
        assert lock.took_over["host"] == "node-before-requeue"
        assert read_lock(RunDir(tmp_path).lock_file)["job"] == "98765"


def test_unwritable_run_dir_is_a_render_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RenderError, match="cannot create run directory"):
        RunDir(blocker / "run").lock().acquire()


def test_many_processes_race_exactly_one_wins(tmp_path):
    pid = _dead_pid()
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": "then"}))
    # the winner holds the lock until we answer on its stdin, so late starters cannot win too
    script = _TRY.replace('print("acquired")', 'print("acquired", flush=True); sys.stdin.readline()')
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    firsts = [p.stdout.readline() for p in procs]
    for p in procs:
        p.communicate("go\n", timeout=60)
    assert sum(o.startswith("acquired") for o in firsts) == 1, firsts
    assert sum(o.startswith("refused") for o in firsts) == 3, firsts
    assert not (tmp_path / ".lock").exists()
