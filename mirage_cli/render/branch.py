"""``mirage render NEW.yaml --from RUN[@CHUNK]`` (or ``from:`` in the spec): a new run that starts from a parent run's checkpoint
after chunk CHUNK instead of rendering the prefix again.

The new spec must agree with the parent on everything that shaped the frames up to the branch: every
setting of the run's configuration (start image, model and weights, size, fps, seed, sampler, memory,
video options...) except the camera path, the prompts and the length, and those must agree on the
prefix too: the camera of every frame up to the branch frame (the first frame of chunk CHUNK + 1,
which the chunks share) and the prompt of every chunk before it. A disagreement is refused (exit 2)
naming the key, or the frame where the paths part.

The branch's run directory gets the parent's segments and latents of the prefix chunks by hard link
(a copy where the file system refuses one) and a checkpoint of the parent's state after chunk CHUNK
with the branch's own settings; the render then resumes from it as from any checkpoint, so stopping,
killing and resuming a branch work as for any run. The parent is only read. Because every chunk's
segment is encoded on its own and the video is their packets joined, the branch's ``video.mp4`` is
byte for byte what a render of the new spec from scratch gives.

The lineage (parent run, chunk, the parent checkpoint's manifest sha256) goes into ``run.json``,
first: a start killed before its checkpoint is saved leaves a ``run.json`` naming the parent and some
of the links, and the next render of the branch starts it again (the links replaced), instead of
refusing a directory that holds another render.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.camera.source import load_trajectory
from mirage_cli.rundir.checkpoint import Checkpoint
from mirage_cli.rundir.layout import RunDir
from mirage_cli.rundir.lock import lock_status
from mirage_cli.rundir.meta import record_problem
from mirage_cli.spec.branch_source import BranchSource, chunk_hint, same_place
from mirage_cli.testing import pauses as test_hooks

MAY_DIFFER = ("camera_sha256", "frames", "prompt", "chunk_prompts")
"""Configuration keys a branch may change after the branch point (the prefix is compared on its own)."""
CAMERA_TOLERANCE = 1e-9


@dataclass(frozen=True)
class BranchPoint:
    """Where a branch starts: the parent run directory, after how many finished chunks, and the checkpoint."""

    parent: Path
    chunk: int
    checkpoint: Checkpoint
    field: str = "--from"
    """Where the parent was named (``--from``, or ``from`` in the spec), for messages."""

    def lineage(self) -> dict:
        """What ``run.json`` records of the parent."""
        manifest = (self.checkpoint.path / "manifest.json").read_bytes()
        return {"parent": str(same_place(self.parent)), "chunk": self.chunk, "checkpoint": self.checkpoint.name,
                "checkpoint_sha256": hashlib.sha256(manifest).hexdigest()}


def _refuse(path: Path | None, message: str, field: str | None = "--from") -> InputError:
    return InputError(Problem(file=None if path is None else str(path), field=field, message=message))


def find_branch_point(parent: Path, chunk: int | None, field: str = "--from") -> BranchPoint:
    """The parent's checkpoint after ``chunk`` finished chunks (None: the last finished chunk), checked.
    Refuses a parent that is missing, being written, or holds no such checkpoint (``field``: where the
    parent was named, for the message)."""
    run = RunDir(parent)
    try:
        is_dir, exists = run.path.is_dir(), run.path.exists()
    except OSError as e:  # a name too long, a path the system cannot look at
        raise _refuse(run.path, f"the parent run directory cannot be read ({e.strerror or e})", field) from None
    if not is_dir:
        what = "is not a directory (a run directory is the folder a render wrote)" if exists else "does not exist"
        raise _refuse(run.path, f"the parent run directory {what}{chunk_hint(run.path)}", field)
    status = lock_status(run.lock_file)
    if status is not None and status.get("alive"):
        raise _refuse(run.path, f"the parent is being written ({status['message']}); branch once it stops", field)
    store = run.checkpoints()

    def at_chunk(manifest: dict) -> str | None:
        meta = manifest["meta"]
        if meta.get("mid_chunk_step") is not None or meta.get("chunk", 0) < 1:
            return "not after a finished chunk"
        if chunk is not None and meta["chunk"] != chunk:
            return f"after chunk {meta['chunk']}"
        return None

    ckpt = store.load_latest(accept=at_chunk, clean=False)  # the parent is only read
    if ckpt is None:
        kept = sorted({i.meta["chunk"] for i in store.list() if i.ok and i.meta and i.meta.get("mid_chunk_step") is None
                       and i.meta.get("chunk", 0) >= 1})
        where = f"after chunk {chunk}" if chunk is not None else "after a finished chunk"
        offer = f" (it keeps its state after chunk {', '.join(map(str, kept))})" if kept else ""
        raise _refuse(run.path, f"the parent holds no checkpoint {where}{offer}", field)
    return BranchPoint(run.path, int(ckpt.meta["chunk"]), ckpt, field)


def branch_source_problem(source: BranchSource) -> str | None:
    """What a render would refuse now about the parent ``source`` names (missing, not a run, being
    written, without that checkpoint), or None: ``mirage validate`` warns with it (a branch's spec is
    often written before its parent has rendered)."""
    try:
        find_branch_point(source.parent, source.chunk, source.field)  # reads, never cleans
    except InputError as e:
        return e.problems[0].message
    return None


def disagreement(point: BranchPoint, plan, config: dict) -> InputError | None:
    """Why the new ``plan`` (with its run ``config``) cannot continue from ``point``, or None."""
    parent_config = point.checkpoint.meta.get("config") or {}
    keys = sorted(k for k in set(parent_config) | set(config) if k not in MAY_DIFFER and parent_config.get(k) != config.get(k))
    if keys:
        return _refuse(plan.spec_path, f"differs from the parent run in what shaped its first {point.chunk} chunk(s): "
                                       f"{', '.join(keys)}", field=keys[0])
    if len(plan.chunks) <= point.chunk:
        return _refuse(plan.spec_path, f"has {len(plan.chunks)} chunk(s): nothing to render after chunk {point.chunk}", "frames")
    parent_chunks = point.checkpoint.meta.get("num_chunks")
    branch_frame = plan.chunks[point.chunk].start  # the first frame of the first chunk the branch renders
    parent_path = load_trajectory(RunDir(point.parent).camera_json)
    if len(parent_path) <= branch_frame or parent_chunks is None:
        return _refuse(RunDir(point.parent).camera_json, "holds fewer cameras than the branch frame", field=None)
    ours = plan.trajectory
    for frame in range(branch_frame + 1):
        if not (np.allclose(ours.world_from_cam[frame], parent_path.world_from_cam[frame], rtol=0, atol=CAMERA_TOLERANCE)
                and np.allclose(ours.K[frame], parent_path.K[frame], rtol=0, atol=CAMERA_TOLERANCE)):
            return _refuse(plan.spec_path, f"the camera path parts from the parent's at frame {frame}, before the branch "
                                           f"frame {branch_frame}", field="camera")
    parent_prompts = parent_config.get("chunk_prompts") or [parent_config.get("prompt")] * point.chunk
    for c in range(point.chunk):
        if plan.chunk_prompts[c] != parent_prompts[min(c, len(parent_prompts) - 1)]:
            return _refuse(plan.spec_path, f"chunk {c + 1}'s prompt differs from the parent's, before the branch", "prompts")
    return None


def start_branch(point: BranchPoint, run: RunDir, plan, config: dict, fingerprint: str) -> dict:
    """Fill the new run directory ``run`` (empty of any render): the prefix's segments and latents from
    the parent (hard links, else copies) and a checkpoint of the parent's state with the branch's
    settings. Returns the lineage."""
    records = dict(point.checkpoint.meta.get("outputs", {}))
    for relative in records:
        source, target = point.parent / relative, run.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):  # linked by a start that was killed
            os.unlink(target)
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed: a copy costs the disk, not the bytes
            shutil.copy2(source, target)
        test_hooks.pause("branch_link")  # tests kill a branch start here (mirage_cli.testing.pauses)
    lineage = point.lineage()
    meta = {k: v for k, v in point.checkpoint.meta.items() if k != "report"}  # a finished parent's report is its own
    meta.update(spec_fingerprint=fingerprint, config=config, num_chunks=len(plan.chunks), frames_total=plan.frames, done=False,
                lineage=lineage)
    run.checkpoints().save(point.checkpoint.tensors, meta)
    return lineage


def already_branched(source: BranchSource, run_dir: Path) -> bool:
    """``run_dir`` is a branch of ``source``'s parent already (its ``run.json`` says so, at the chunk
    asked for, and it holds a checkpoint): it resumes as any run, without reading the parent, which may
    have moved on or gone."""
    run = RunDir(run_dir)
    recorded, _ = run.read_config()
    lineage = (recorded or {}).get("lineage")
    return (isinstance(lineage, dict) and isinstance(lineage.get("parent"), str)
            and same_place(Path(lineage["parent"])) == same_place(source.parent) and source.chunk in (None, lineage.get("chunk"))
            and _holds_a_checkpoint(run))


def _holds_a_checkpoint(run: RunDir) -> bool:
    try:
        return any(info.ok for info in run.checkpoints().list())
    except OSError:
        return False


def check_branch(source: BranchSource, run_dir: Path, plan, config: dict, restart: bool = False) -> BranchPoint | None:
    """The branch point for a render of ``plan`` (run ``config``) into ``run_dir``, checked before
    anything is written: the parent's checkpoint and the agreement of the prefix. None when ``run_dir``
    is that branch already (``already_branched``) and is not to be restarted (``--restart`` starts the
    branch again from its parent)."""
    if same_place(source.parent) == same_place(Path(run_dir)):
        raise _refuse(source.parent, "names the run directory the branch renders into; give the branch another output",
                      source.field)
    if not restart and already_branched(source, run_dir):
        return None
    point = find_branch_point(source.parent, source.chunk, source.field)
    problem = disagreement(point, plan, config)
    if problem is not None:
        raise problem
    for relative, record in point.checkpoint.meta.get("outputs", {}).items():
        why = record_problem(point.parent / relative, record)
        if why is not None:
            raise _refuse(point.parent / relative, f"the parent's file {why}: `mirage render` of the parent's spec into "
                                                   "it rebuilds it; branch then", source.field)
    return point


def open_branch(point: BranchPoint, run: RunDir, plan, config: dict, fingerprint: str) -> str | None:
    """Start the branch in ``run`` (``start_branch``) and record its lineage in ``run.json``; returns what
    to tell the user, or None when ``run`` is already this branch (it resumes as it is). Refuses a
    directory that holds another render."""
    recorded, _ = run.read_config()
    lineage = point.lineage()
    started = recorded is not None and (recorded.get("lineage") or {}).get("checkpoint_sha256") == lineage["checkpoint_sha256"]
    if started and _holds_a_checkpoint(run):
        return None
    if not started and (recorded is not None or run.holds_rendered_work()):
        raise InputError(f"{run.path} holds another render; a branch starts in a new or empty directory (--out)",
                         file=str(run.run_json), field=point.field)
    run.write_config(config, lineage)  # first: a start killed from here on is started again
    start_branch(point, run, plan, config, fingerprint)
    again = " (its start was interrupted: started again)" if started else ""
    return f"branch of {point.parent} after chunk {point.chunk}{again}: its first {point.chunk} chunk(s) taken as they are"
