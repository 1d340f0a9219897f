"""A run's branches: the runs that started from one of its checkpoints (``mirage render --from``).

A branch records its parent in its own ``run.json`` (``lineage``: the parent's directory, the chunk
it started after, the parent checkpoint's name and manifest sha256); the parent is never written
to. So a parent's branches are found by reading the ``run.json`` of the run directories beside it
(the same folder: where renders put their runs by default, ``runs/<spec stem>``), never by a record
in the parent.
"""

from __future__ import annotations

import os
from pathlib import Path

from mirage_cli.rundir.layout import RunDir
from mirage_cli.spec.branch_source import same_place


def branches_of(run_dir: str | os.PathLike) -> list[dict]:
    """The run directories beside ``run_dir`` whose ``run.json`` names it as their parent, by name:
    ``[{"run_dir", "chunk", "checkpoint", "checkpoint_sha256"}]``. Unreadable folders and files are
    skipped (``mirage inspect`` of those says what is wrong with each)."""
    parent = Path(run_dir)
    here = same_place(parent)
    try:
        beside = sorted(p for p in parent.absolute().parent.iterdir() if p.is_dir() and same_place(p) != here)
    except OSError:
        return []
    found = []
    for candidate in beside:
        recorded, _ = RunDir(candidate).read_config()
        lineage = (recorded or {}).get("lineage")
        if not isinstance(lineage, dict) or not isinstance(lineage.get("parent"), str):
            continue
        if same_place(Path(lineage["parent"])) == here:
            found.append({"run_dir": str(candidate), "chunk": lineage.get("chunk"), "checkpoint": lineage.get("checkpoint"),
                          "checkpoint_sha256": lineage.get("checkpoint_sha256")})
    return found
