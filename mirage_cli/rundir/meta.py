"""The ``meta`` of a render's checkpoints: what the render session writes, and the check of a read one.

A checkpoint's files and manifest are checked by ``mirage_cli.rundir.checkpoint`` (checksums, schema);
this module checks that its ``meta`` is one a render can continue from, so that a checkpoint that
passes its checksums but cannot be used (written by a bug, or by hand with a recomputed checksum)
is skipped like a corrupt one instead of failing later. Keys (all written by every checkpoint):

- ``spec_fingerprint`` (str): the fingerprint of the render configuration (``run_dir.fingerprint``).
- ``config`` (dict): that configuration itself, so a lost ``run.json`` can be rebuilt and a
  changed setting named.
- ``chunk`` (int, 0..num_chunks): the next chunk to render (= chunks finished).
- ``num_chunks`` (int >= 1), ``frames_total`` (int), ``frames_written`` (int >= 0).
- ``mid_chunk_step`` (int >= 0 or null): denoising steps done inside chunk ``chunk`` (the checkpoint
  then holds ``denoise.safetensors``); null at a chunk boundary.
- ``done`` (bool): every chunk is rendered and the final video was assembled and verified.
- ``outputs`` (dict): ``{path relative to the run directory: {"sha256", "size"}}`` of every segment,
  latents file and (when ``done``) final video written so far: what ``mirage_cli.render.outputs`` verifies.
- ``report`` (dict, when ``done``): the report as written to ``report.json``, so a lost one can be
  rewritten.
- ``profiler`` (dict): the profiler's state; ``cache_points``, ``cache_bytes`` (int).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mirage_cli.base.files import file_record
from mirage_cli.rundir.checkpoint import MANIFEST

ROLLOUT_FILE = "rollout.safetensors"
DENOISE_FILE = "denoise.safetensors"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _is_int(value: Any) -> bool:
    return type(value) is int


def meta_problem(manifest: dict, *, num_chunks: int | None = None, steps: int | None = None) -> str | None:
    """What makes a checkpoint (its well-formed ``manifest``) unusable for a render, or None.

    ``num_chunks`` / ``steps``: the plan's, when known (``mirage inspect`` does not know them).
    Used as the ``accept`` check of ``CheckpointStore.load_latest`` and ``list``.
    """
    meta, files = manifest["meta"], manifest["files"]
    where = f"{MANIFEST}: meta"
    chunk, total = meta.get("chunk"), meta.get("num_chunks")
    if not _is_int(total) or total < 1 or (num_chunks is not None and total != num_chunks):
        expected = "an integer >= 1" if num_chunks is None else f"{num_chunks}, the plan's chunk count"
        return f"{where}.num_chunks is {total!r}, expected {expected}"
    if not _is_int(chunk) or not 0 <= chunk <= total:
        return f"{where}.chunk is {chunk!r}, expected an integer from 0 to {total}"
    done, step = meta.get("done"), meta.get("mid_chunk_step")
    if not isinstance(done, bool) or (done and chunk != total):
        return f"{where}.done is {done!r} at chunk {chunk} of {total}"
    if step is not None:
        if not _is_int(step) or step < 0 or (steps is not None and step >= steps) or chunk == total:
            return f"{where}.mid_chunk_step is {step!r} at chunk {chunk} of {total}"
        if DENOISE_FILE not in files:
            return f"a mid-chunk checkpoint without {DENOISE_FILE}"
    if ROLLOUT_FILE not in files:
        return f"{ROLLOUT_FILE} is not among its files"
    for key in ("frames_written", "frames_total", "cache_points", "cache_bytes"):
        if key in meta and (not _is_int(meta[key]) or meta[key] < 0):
            return f"{where}.{key} is {meta[key]!r}, expected a count"
    for key in ("profiler", "config", "report"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            return f"{where}.{key} is not an object"
    return output_records_problem(meta.get("outputs", {}))


def output_records_problem(records: Any) -> str | None:
    """What is wrong with ``meta.outputs``, or None."""
    if not isinstance(records, dict):
        return f"{MANIFEST}: meta.outputs is not an object"
    for path, entry in records.items():
        ok = isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256_RE.match(entry["sha256"])
        if not ok or not _is_int(entry.get("size")) or entry["size"] < 0 or ".." in path.split("/"):
            return f"{MANIFEST}: meta.outputs[{path!r}] is not a file record"
    return None


def record_problem(path: Path, record: dict) -> str | None:
    """How the file ``path`` differs from its ``record``, or None when it matches."""
    try:
        size = path.stat().st_size
        if size != record["size"]:
            return f"is truncated or padded ({size} bytes, expected {record['size']})"
        if file_record(path)["sha256"] != record["sha256"]:
            return "was altered (its sha256 differs from the one recorded when it was written)"
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None
