"""One writer per run directory: its lock file (``RunDir.lock_file``, ``RUN_DIR/.lock``).

The lock file is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS v3+) and holds JSON
``{"host", "pid", "started", "process_start", "job"}``; while the render runs it also holds an
``fcntl.flock`` on it, so on the same host a live holder is recognised even after the pid was reused.

An existing lock is judged like this:

- same host, holder alive (pid exists with the recorded start time, or the flock is held): refused
  with ``InputError`` (exit 2): "run directory X is in use by pid P on host H since T".
- same host, holder dead: stale, taken over with a logged warning.
- another host: respected (we cannot see its processes), with a message saying how to remove it;
  except when both carry the same SLURM job id (``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID`` or
  ``SLURM_JOB_ID``): SLURM runs a job id at most once, so the lock is a leftover of the same job
  before it was requeued on another node, and is taken over.

- damaged (not JSON, no host, a pid that is not a process id: text, zero, negative, beyond the
  kernel's limit): taken over with a warning naming the problem, unless a process holds its flock.
- not a regular file (a directory, a FIFO, a symbolic link): not ours to remove; refused with a
  message saying what it is and how to remove it.

Takeover is race-free: the taker flocks the old file and checks that the path still names that
same file (inode) before unlinking it; then it competes again with ``O_EXCL``. ``lock_status``
(``mirage inspect``) reads any of these without failing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mirage_cli.base.errors import InputError, Problem, RenderError

log = logging.getLogger(__name__)

PID_MAX = 4_194_304
"""The largest process id Linux hands out (``PID_MAX_LIMIT`` on 64-bit kernels)."""
_MAX_LOCK_BYTES = 1 << 16


def _process_start(pid: int) -> float | None:
    """Start time of a process (seconds since the epoch), or None if unknown."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def pid_alive(pid: int, process_start: float | None = None) -> bool:
    """True if ``pid`` runs on this host and (when recorded) started at ``process_start``."""
    if type(pid) is not int or not 0 < pid <= PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if process_start is not None:
        now_start = _process_start(pid)
        if now_start is not None and abs(now_start - process_start) > 1.0:
            return False  # the pid was reused by another process
    return True


def current_job_id() -> str | None:
    """The SLURM job id this process runs under (array tasks as ``JOB_TASK``), or None."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def read_lock(path: str | os.PathLike) -> dict | None:
    """The lock file's JSON content, ``{}`` if the file exists but is empty/unreadable, None if no lock.

    Raises:
        InputError: ``path`` exists but is not a regular file (a directory, FIFO or link).
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    if not stat.S_ISREG(st.st_mode):
        raise InputError(Problem(file=str(path), field=None, message=_not_a_lock(path, st.st_mode)))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        text = os.read(fd, _MAX_LOCK_BYTES).decode("utf-8")
        info = json.loads(text)
    except (OSError, ValueError, RecursionError):
        return {}
    finally:
        os.close(fd)
    return info if isinstance(info, dict) else {}


def _not_a_lock(path: Path, mode: int) -> str:
    kind = "a directory" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
    return (f"is {kind}, not mirage's lock file; if no render is using {path.parent}, remove it "
            f"({'rmdir' if stat.S_ISDIR(mode) else 'rm'} {path}) and run again")


def lock_problem(info: dict) -> str | None:
    """What makes a lock file's content unusable (its holder cannot be judged), or None."""
    if not info:
        return "it is empty or not a JSON object"
    if not isinstance(info.get("host"), str):
        return f"host {info.get('host')!r} is not a host name"
    pid = info.get("pid")
    if type(pid) is not int or not 0 < pid <= PID_MAX:
        return f"pid {pid!r} is not a process id"
    return None


def _process_start_of(info: dict) -> float | None:
    value = info.get("process_start")
    return float(value) if type(value) in (int, float) else None


def _describe(run_dir: Path, info: dict) -> str:
    return (
        f"run directory {run_dir} is in use by pid {info.get('pid', '?')} on host {info.get('host', '?')} "
        f"since {info.get('started', '?')}"
    )


def lock_status(path: str | os.PathLike) -> dict | None:
    """For ``mirage inspect``: None if unlocked, else the lock file's info plus ``alive`` and ``message``.

    ``alive`` is True/False on the same host and None (unknown) for a lock from another host or a
    lock path that is not a file. Never raises for what it finds.
    """
    path = Path(path)
    try:
        info = read_lock(path)
    except InputError as e:
        return {"alive": None, "message": f"{path} {e.problems[0].message}"}
    if info is None:
        return None
    problem = lock_problem(info)
    if problem is not None:
        alive = _flock_held(path)
        message = f"{path} is damaged ({problem})"
        message += "; a process holds it" if alive else "; the next render takes it over"
        return {**info, "alive": alive, "message": message}
    same_host = info["host"] == socket.gethostname()
    alive: bool | None = None
    if same_host:
        alive = pid_alive(info["pid"], _process_start_of(info)) or _flock_held(path)
    message = _describe(path.parent, info)
    if alive is False:
        message += " (stale: that process is gone)"
    elif alive is None:
        message += " (another host: cannot tell whether it still runs)"
    return {**info, "alive": alive, "message": message}


def _flock_held(path: Path) -> bool:
    """True if some process holds an flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class RunLock:
    """Context manager holding the lock file ``path`` for one writer; released on exit, also on exceptions.

    The run directory is the lock file's parent; it is created when missing.

    Raises on enter:
        InputError (exit 2): another live writer holds the directory (or a lock from another host).
        RenderError (exit 1): the directory cannot be created or written.
    """

    def __init__(self, path: str | os.PathLike, *, retries: int = 20):
        self.path = Path(path)
        self.run_dir = self.path.parent
        self.retries = retries
        self._fd: int | None = None
        self.info: dict[str, Any] = {}
        self.took_over: dict | None = None  # the stale lock we replaced, if any
        self.take_over_message: str | None = None  # what was taken over, and why (the session warns with it)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.release()
        return False

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("RunLock is not reentrant")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RenderError(f"cannot create run directory {self.run_dir}: {e}") from e
        for _ in range(self.retries):
            if self._try_create():
                return
            info = read_lock(self.path)
            if info is None:
                continue  # released between our attempts: try again
            problem = lock_problem(info)
            if problem is not None:
                time.sleep(0.05)  # being written right now (or damaged): look again
                if read_lock(self.path) == info and not _flock_held(self.path):
                    self._take_over(info, f"the lock file is damaged ({problem}) and no process holds it")
                continue
            self._judge(info)
        raise InputError(
            Problem(file=str(self.path), field=None, message="could not acquire the run lock (it keeps changing)")
        )

    def _try_create(self) -> bool:
        now = time.time()
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            "process_start": _process_start(os.getpid()),
            "job": current_job_id(),
        }
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise RenderError(f"cannot create the lock file {self.path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            try:
                os.unlink(self.path)
            except OSError:
                pass
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise RenderError(f"cannot write the lock file {self.path}: {e}") from e
        self._fd = fd
        self.info = info
        return True

    def _judge(self, info: dict) -> None:
        """Refuse (raise) for a live or foreign holder; take over a stale lock."""
        here = socket.gethostname()
        job = current_job_id()
        if info.get("host") != here:
            if job is not None and info.get("job") == job:
                self._take_over(info, f"left by the same SLURM job {job} before it was requeued")
                return
            raise InputError(
                Problem(
                    file=None,
                    field=None,
                    message=_describe(self.run_dir, info)
                    + f". That host's processes cannot be checked from {here}; if you are sure no render "
                    f"is running there, delete {self.path} and run again.",
                )
            )
        if pid_alive(info["pid"], _process_start_of(info)) or _flock_held(self.path):
            raise InputError(Problem(file=None, field=None, message=_describe(self.run_dir, info)))
        self._take_over(info, "that process is gone")

    def _take_over(self, info: dict, why: str) -> None:
        """Remove a stale lock file, but only if the path still names the file we judged."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # somebody holds it after all: the next round judges again
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                return
            if same_file and read_lock(self.path) == info:
                os.unlink(self.path)
                self.took_over = info
                self.take_over_message = f"taking over the lock {self.path}: {why}"
                log.info("%s (%s)", self.take_over_message, _describe(self.run_dir, info))
        finally:
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the flock. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError as e:
            log.warning("could not remove the lock file %s: %s", self.path, e)
        finally:
            os.close(fd)
