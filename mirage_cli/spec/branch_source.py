"""Where a branch starts: ``from:`` in a spec, or ``--from`` on the command line (which replaces it).

Both read ``RUN`` or ``RUN@CHUNK``: the run directory to continue, and after how many of its finished
chunks (the last finished one when omitted). A spec's RUN is relative to the spec's folder, as every
path in it; the command line's to the working directory. What a branch checks and writes is
``mirage_cli.render.branch``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mirage_cli.base.errors import InputError

CHUNK_TEXT = re.compile(r"[+-]?[0-9]+")
"""What after a run's last ``@`` is read as its chunk (and refused unless >= 1); anything else is part of the name."""


@dataclass(frozen=True)
class BranchSource:
    """A parsed ``RUN[@CHUNK]``: the parent run directory, the chunk (None: the last finished one), and
    the field it came from (``from`` in the spec, ``--from`` on the command line), for messages."""

    parent: Path
    chunk: int | None
    field: str

    def summary(self) -> str:
        return str(self.parent) + ("" if self.chunk is None else f"@{self.chunk}")


def same_place(path: Path) -> Path:
    """``path`` absolute, with ``..`` and symbolic links resolved (as far as they exist): two spellings of
    one directory compare equal."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a name too long, a NUL: its spelling
        return path.absolute()


def parse_branch_source(text: str, field: str, base: Path | None = None) -> BranchSource:
    """``RUN`` or ``RUN@CHUNK`` (CHUNK: a number of finished chunks, >= 1), RUN relative to ``base``
    when given and not absolute.

    An ``@`` belongs to the folder's name when what follows the last one is not a number
    (``runs/take@night``), or when the whole text names a folder and the part before it does not (a
    folder named ``take@2`` beside no ``take``).

    Raises:
        ValueError: the problem, in words (the caller names the file and field).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected RUN or RUN@CHUNK (a run directory), got {text!r}")
    if "\0" in text:
        raise ValueError(f"a path cannot hold a NUL character, got {text!r}")
    text = text.rstrip("/") or text  # runs/a@2/ is runs/a@2
    path, at, chunk = text.rpartition("@")
    whole = _place(text, base)
    if not at or not (chunk == "" or CHUNK_TEXT.fullmatch(chunk)) or (_is_dir(whole) and not _is_dir(_place(path, base))):
        return BranchSource(whole, None, field)
    if not (chunk.isascii() and chunk.isdigit()) or int(chunk) < 1 or not path:
        raise ValueError(f"expected RUN or RUN@CHUNK with CHUNK a number of finished chunks (>= 1), got {text!r}")
    return BranchSource(_place(path, base), int(chunk), field)


def chunk_hint(path: Path) -> str:
    """For a missing run folder named ``RUN@WORD`` beside an existing RUN, what CHUNK takes (the ``@``
    was read as part of the name); else ``""``. For a message about ``path``."""
    before, at, _ = path.name.rpartition("@")
    named = bool(before) and bool(at) and _is_dir(path.parent / before)
    return f" (in RUN@CHUNK, CHUNK is a number of finished chunks, >= 1: {path.parent / before} exists)" if named else ""


def parse_from_flag(text: str) -> BranchSource:
    """The command line's ``--from RUN[@CHUNK]``, RUN relative to the working directory (made absolute,
    so that the resolved spec names the same folder from anywhere).

    Raises:
        InputError: one line naming ``--from``.
    """
    try:
        source = parse_branch_source(text, "--from")
        return BranchSource(source.parent.absolute(), source.chunk, source.field)
    except ValueError as e:
        raise InputError(str(e), field="--from") from None
    except OSError as e:  # the working directory was removed
        raise InputError(f"cannot make {text!r} absolute ({e.strerror or e})", field="--from") from None


def _place(text: str, base: Path | None) -> Path:
    try:
        path = Path(text).expanduser()
    except RuntimeError as e:  # ~nosuchuser
        raise ValueError(f"cannot expand {text!r}: {e}") from None
    return base / path if base is not None and not path.is_absolute() else path


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a folder
        return False
