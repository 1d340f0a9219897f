"""One scene of a batch (``Scene``), what became of it (``SceneResult``), and the task that renders it
in a child process (``SceneTask``), surviving preemption and time limits.

The child is ``mirage render`` (``render_command``)::

    [sys.executable, "-m", "mirage_cli", "render", SPEC, "--out", RUN_DIR, *extra_args]

It owns the run directory (lock, checkpoints, resume); the task only starts it, forwards stop
signals to it and decides what its exit code means:

- 0: done. 75: stopped with a checkpoint saved ("requeue/resume"): run it again. Killed by a signal
  we did not send (e.g. SIGKILL by the OOM killer): run it again too, it resumes from its last
  chunk checkpoint. Anything else (1, 2): failed, with the child's last ``error:`` line as reason.
  Unplanned re-runs are limited by ``max_attempts``.

``SceneTask`` is a submitit callable: its ``checkpoint`` makes the child save a checkpoint and
resubmits the task (``mirage_cli.batch.run`` runs it locally, on SLURM or in this process).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from mirage_cli.base.errors import EXIT_FAILURE, EXIT_INTERRUPTED
from mirage_cli.base.signals import DEFAULT_SIGNALS, GracefulStop
from mirage_cli.rundir.layout import RunDir

log = logging.getLogger(__name__)

PREEMPT_SIGNAL = "USR1"
RENDER_COMMAND = ("{python}", "-m", "mirage_cli", "render", "{spec}", "--out", "{run_dir}")
_ERROR_LINE = re.compile(r"^\s*(internal )?error:", re.IGNORECASE)


@dataclass(frozen=True)
class Scene:
    """One scene of a batch: its spec file and run directory (both absolute)."""

    name: str
    spec: Path
    run_dir: Path


@dataclass
class SceneResult:
    """What became of one scene.

    ``status``: "done" (finished in one go), "resumed" (finished after resuming from a checkpoint),
    "interrupted" (stopped by a signal, checkpoint saved: run again), "failed" (``reason`` says why),
    "running" (the batch stopped waiting while the cluster job still runs), "invalid" (the spec was
    refused before submission and skipped with ``--skip-invalid``: ``reason`` is its first problem).
    """

    name: str
    spec: str
    run_dir: str
    status: str
    reason: str = ""
    exit_code: int | None = None
    attempts: int = 0
    requeues: int = 0
    job_id: str | None = None
    wall_seconds: float = 0.0
    """Seconds the scene's renders ran, every attempt and requeue together."""

    def to_dict(self) -> dict:
        return asdict(self)


def render_command(extra_args: Sequence[str] = ()) -> list[str]:
    """The default child command template (placeholders ``{python}``, ``{spec}``, ``{run_dir}``)."""
    return [*RENDER_COMMAND, *extra_args]


def checkpoint_state(run_dir: Path) -> str:
    """"none", "partial" or "finished", from the newest readable checkpoint manifest (no hashing)."""
    infos = [i for i in RunDir(run_dir).checkpoints().list() if i.ok]
    if not infos:
        return "none"
    return "finished" if (infos[-1].meta or {}).get("done") else "partial"


class SceneTask:
    """Render one scene in a child process; a submitit callable that requeues itself.

    Args:
        scene: the scene.
        command: child argv template; ``{python}``, ``{spec}``, ``{run_dir}``, ``{name}`` are filled
            in (default ``render_command()``). Tests inject a small script here.
        max_attempts: child runs per call that may end in 75 / an unexpected signal before giving up.
        grace_s: how long a forwarded stop signal may take before the child is killed.
        log_dir: where ``<name>.log`` collects the child's output (also echoed to our stderr).
    """

    def __init__(
        self,
        scene: Scene,
        command: Sequence[str] | None = None,
        *,
        max_attempts: int = 3,
        grace_s: float = 110.0,
        log_dir: str | os.PathLike | None = None,
    ):
        self.scene = scene
        self.command = list(command) if command is not None else render_command()
        self.max_attempts = max(1, int(max_attempts))
        self.grace_s = float(grace_s)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.attempts = 0  # every child run, across requeues (saved in the requeue pickle)
        self.requeues = 0
        self.seconds = 0.0  # the children's wall time, across requeues
        self.resumed = False
        self.cuda_visible_devices: str | None = None  # the GPUs a local batch gave this scene (None: inherited)
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None
        return state

    def argv(self) -> list[str]:
        values = {"{python}": sys.executable, "{spec}": str(self.scene.spec), "{run_dir}": str(self.scene.run_dir),
                  "{name}": self.scene.name}
        out = []
        for arg in self.command:
            for key, value in values.items():
                arg = arg.replace(key, value)
            out.append(arg)
        return out

    # submitit entry points

    def __call__(self) -> SceneResult:
        """Run the scene (inside a submitit job or directly); hand a stop over to submitit's requeue."""
        signals = list(DEFAULT_SIGNALS)
        preempt = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", PREEMPT_SIGNAL), None)
        if preempt is not None:
            signals.append(preempt)
        with GracefulStop(signals) as stop:
            result = self.run(stop)
            if result.status == "interrupted" and stop.signum is not None:
                previous = stop.previous_handler(stop.signum)
                if _is_python_handler(previous) and os.environ.get("SUBMITIT_EXECUTOR"):
                    # submitit's handler calls self.checkpoint() and requeues this task (or logs and
                    # returns, for SIGTERM); the child has already saved its checkpoint.
                    previous(stop.signum, None)
        return result

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's requeue hook: stop the child (it saves a checkpoint) and resubmit this task."""
        import submitit

        self._stop_child(signal.SIGUSR1)
        self.requeues += 1
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    # the work

    def run(self, stop: GracefulStop) -> SceneResult:
        """Run the child until done, failed, out of attempts, or ``stop`` is requested."""
        s = self.scene
        result = SceneResult(name=s.name, spec=str(s.spec), run_dir=str(s.run_dir), status="failed",
                             requeues=self.requeues, job_id=os.environ.get("SUBMITIT_LOCAL_JOB_ID")
                             or os.environ.get("SLURM_JOB_ID"))
        tries = 0
        t0 = time.monotonic()
        while True:
            if stop.requested:
                result.status = "interrupted"
                result.reason = f"stopped by {stop.signal_name} before it started; run again to render it"
                break
            if checkpoint_state(s.run_dir) == "partial" or self.requeues:
                self.resumed = True
            tries += 1
            self.attempts += 1
            rc, last_error = self._run_child(stop)
            result.exit_code = rc
            if rc == 0:
                result.status = "resumed" if self.resumed or tries > 1 else "done"
                result.reason = ""
                break
            if stop.requested and (rc == EXIT_INTERRUPTED or rc < 0):
                result.status = "interrupted"
                how = "checkpoint saved" if rc == EXIT_INTERRUPTED else f"killed after {self.grace_s:.0f} s"
                result.reason = f"stopped by {stop.signal_name} ({how}); run again to resume"
                break
            retryable = rc == EXIT_INTERRUPTED or rc < 0
            if retryable and tries < self.max_attempts:
                self.resumed = True
                log.warning("scene %s: child exited %s; resuming (attempt %d of %d)", s.name, rc, tries + 1,
                            self.max_attempts)
                continue
            result.status = "failed"
            if retryable:
                result.reason = f"stopped {tries} times in a row (last exit {rc}); {last_error or 'no error message'}"
            else:
                result.reason = last_error or f"exit code {rc}"
            break
        self.seconds += time.monotonic() - t0
        result.attempts = self.attempts
        result.requeues = self.requeues
        result.wall_seconds = round(self.seconds, 3)
        return result

    @property
    def log_path(self) -> Path | None:
        """``<log_dir>/<name>.log``: every attempt's output (None without a log directory)."""
        return None if self.log_dir is None else self.log_dir / f"{self.scene.name}.log"

    def _run_child(self, stop: GracefulStop) -> tuple[int, str]:
        """One child run: returns (exit code, or -signal; the child's last error line)."""
        argv = self.argv()
        logfile = self._open_log(argv)
        tail = _Tail()
        try:
            env = None
            if self.cuda_visible_devices is not None:
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": self.cuda_visible_devices}
            self._proc = proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", bufsize=1, env=env,
            )
        except OSError as e:
            if logfile:
                logfile.close()
            return EXIT_FAILURE, f"could not start {argv[0]}: {e}"
        pump = threading.Thread(target=_pump, args=(proc.stdout, logfile, tail), daemon=True)
        pump.start()
        forwarded_at: float | None = None
        while proc.poll() is None:
            if stop.requested and forwarded_at is None:
                sig = stop.signum if stop.signum in (signal.SIGTERM, signal.SIGUSR1) else signal.SIGTERM
                _send(proc, sig)
                forwarded_at = time.monotonic()
            elif forwarded_at is not None and time.monotonic() - forwarded_at > self.grace_s:
                log.warning("scene %s: the child did not stop within %.0f s; killing it", self.scene.name, self.grace_s)
                _send(proc, signal.SIGKILL)
                forwarded_at = float("inf")
            if stop.requested:
                time.sleep(0.05)
            else:
                stop.wait(0.1)
        pump.join(timeout=10)
        if logfile:
            logfile.write(f"=== exit {proc.returncode}\n")
            logfile.close()
        self._proc = None
        return proc.returncode, tail.error or tail.last

    def _stop_child(self, sig: int) -> None:
        """Make a running child checkpoint and wait for it (used when submitit calls ``checkpoint``)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _send(proc, sig)
        deadline = time.monotonic() + self.grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            _send(proc, signal.SIGKILL)

    def _open_log(self, argv: list[str]) -> IO[str] | None:
        if self.log_dir is None:
            return None
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            f = open(self.log_path, "a", encoding="utf-8")
        except OSError as e:
            log.warning("cannot write the log of scene %s: %s", self.scene.name, e)
            return None
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        f.write(f"=== attempt {self.attempts} at {now}: {' '.join(argv)}\n")
        f.flush()
        return f


class _Tail:
    def __init__(self) -> None:
        self.error = ""
        self.last = ""


def _pump(stream: IO[str], logfile: IO[str] | None, tail: _Tail) -> None:
    """Copy the child's output to our stderr and its log; remember its last error line."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        if logfile:
            logfile.write(line)
            logfile.flush()
        text = line.strip()
        if text:
            tail.last = text
            if _ERROR_LINE.match(text):
                tail.error = text
    stream.close()


def _send(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def _is_python_handler(handler: Any) -> bool:
    return callable(handler) and handler not in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler)
