"""Reading a user's files: only regular files, never more than a bound, every failure an ``InputError``.

A named pipe would block a read forever, a device (``/dev/zero``) never ends and a directory is not
a file: each is refused by name before it is opened. The size is read before the content, and no
more than the bound is ever read (a file growing meanwhile is caught too).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from mirage_cli.base.errors import InputError, Problem


def _kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def file_problem(path: str | os.PathLike, max_bytes: int) -> str | None:
    """Why ``path`` cannot be read as an input file of at most ``max_bytes`` (a sentence that does
    not repeat the path), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    except ValueError:  # a NUL byte in the name: no file can have it
        return "is not a usable file name (it holds a NUL byte)"
    kind = _kind(st.st_mode)
    if kind is not None:
        return f"is {kind}, expected a regular file"
    if st.st_size > max_bytes:
        return f"is {st.st_size:,} bytes, more than the limit of {max_bytes:,}"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None


def check_file(path: str | os.PathLike, max_bytes: int, *, field: str | None, file: str | None = None) -> None:
    """Raise ``InputError`` unless ``path`` is a readable regular file of at most ``max_bytes``.

    The problem names ``path`` as its file, or ``file`` (e.g. the spec that points to ``path``) with
    ``path`` in the message.
    """
    why = file_problem(path, max_bytes)
    if why is None:
        return
    if file is None:
        raise InputError([Problem(file=str(path), field=field, message=why)])
    raise InputError([Problem(file=str(file), field=field, message=f"{path}: {why}")])


def read_bytes(path: str | os.PathLike, max_bytes: int, *, field: str | None = None) -> bytes:
    """The content of a regular file of at most ``max_bytes`` (``InputError`` otherwise)."""
    check_file(path, max_bytes, field=field)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise InputError([Problem(file=str(path), field=field, message=f"cannot read: {e.strerror or e}")]) from None
    if len(data) > max_bytes:
        raise InputError([Problem(file=str(path), field=field, message=f"grew past the limit of {max_bytes:,} bytes while read")])
    return data


def read_text(path: str | os.PathLike, max_bytes: int, *, field: str | None = None) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (``InputError`` otherwise)."""
    data = read_bytes(path, max_bytes, field=field)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError([Problem(file=str(path), field=field, message=f"not UTF-8 text (byte {e.start})")]) from None


def output_problem(path: str | os.PathLike, *, directory: bool = False) -> str | None:
    """Why ``path`` cannot be written as an output file (or, with ``directory``, used as an output
    directory), or None. Missing parent folders are fine (they are created); a file in their way,
    or an existing path of the wrong kind, is not."""
    p = Path(path)
    if os.path.exists(p):
        if directory and not os.path.isdir(p):
            return f"{p} exists and is not a directory"
        if not directory and os.path.isdir(p):
            return f"{p} is a directory, expected a file name"
        target = p if directory else p.parent
    else:
        target = p.parent
        while not os.path.exists(target) and target != target.parent:
            target = target.parent
        if not os.path.isdir(target):
            return f"cannot create {p}: {target} is not a directory"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"cannot write into {target}"
    return None


def check_output(path: str | os.PathLike, flag: str, *, directory: bool = False) -> None:
    """Raise ``InputError`` naming ``flag`` when ``path`` cannot be written (``output_problem``)."""
    why = output_problem(path, directory=directory)
    if why is not None:
        raise InputError([Problem(file=None, field=flag, message=why)])


def cache_folder(name: str) -> Path:
    """``$XDG_CACHE_HOME/mirage/NAME`` (``~/.cache`` when XDG_CACHE_HOME is unset or empty, as the XDG
    base-directory rules say): where mirage keeps what it can compute again (traces, estimates)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mirage" / name


def file_record(path: Path) -> dict:
    """``{"sha256", "size"}`` of a file (read in blocks)."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
            size += len(block)
    return {"sha256": h.hexdigest(), "size": size}
