"""Where a branch starts: ``from:`` in a spec, or ``--from`` on the command line (which replaces it).

Both read ``RUN`` or ``RUN@CHUNK``: the run directory to continue, and after how many of its finished
chunks (the last finished one when omitted). A spec's RUN is relative to the spec's folder, as every
path in it; the command line's to the working directory. What a branch checks and writes is
``mirage_cli.render.branch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    except (OSError, RuntimeError):  # a link loop, a name too long: its spelling
        return path.absolute()


def parse_branch_source(text: str, field: str, base: Path | None = None) -> BranchSource:
    """``RUN`` or ``RUN@CHUNK`` (CHUNK: a number of finished chunks, >= 1), RUN relative to ``base``
    when given and not absolute.

    Raises:
        ValueError: the problem, in words (the caller names the file and field).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected RUN or RUN@CHUNK (a run directory), got {text!r}")
    path, at, chunk = text.rpartition("@") if "@" in text else (text, "", "")
    if at and (not (chunk.isascii() and chunk.isdigit()) or int(chunk) < 1 or not path):
        raise ValueError(f"expected RUN or RUN@CHUNK with CHUNK a number of finished chunks (>= 1), got {text!r}")
    parent = Path(path if at else text).expanduser()
    if base is not None and not parent.is_absolute():
        parent = base / parent
    return BranchSource(parent, int(chunk) if at else None, field)
