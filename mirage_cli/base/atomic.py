"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every write goes to a temporary file in the destination's directory, is fsynced, then moved over
the destination with ``os.replace`` (atomic on POSIX within one filesystem), and the directory is
fsynced so the rename itself survives a power cut. The temporary file is named
``.<destination name>.tmp-<8 random characters><suffix>`` (``is_temporary_name`` recognises it), so
what a killed writer leaves behind can be found and removed by name (``RunDir.remove_leftovers``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TEMPORARY_RE = re.compile(r"^\.(?P<target>.+)\.(?:tmp-)?[a-z0-9_]{8}(?:\.[A-Za-z0-9]+)?$")


def temporary_target(name: str) -> str | None:
    """The destination name of a temporary file name ``atomic_path`` makes (or made before the
    ``tmp-`` mark), else None: ``".video.mp4.tmp-ab12cd34.mp4"`` -> ``"video.mp4"``."""
    m = _TEMPORARY_RE.match(name)
    return m.group("target") if m else None


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that renames inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success fsync it and ``os.replace`` it onto ``dest``.

    Use for writers that want a file name (safetensors, PyAV). On any exception the temporary
    file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", suffix=suffix or ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``dest`` atomically (keys kept in insertion order, trailing newline)."""
    atomic_write_text(dest, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
