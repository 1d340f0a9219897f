"""Atomic, verified checkpoints of a render under ``RUN_DIR/state/``.

Layout of the state directory::

    state/
      ckpt-000003/            the previous complete checkpoint (kept until a newer one is complete)
      ckpt-000004/
        memory.safetensors    one safetensors file per key of ``tensors`` given to ``save``
        rollout.safetensors
        manifest.json         written last; see below
      .tmp-ckpt-000005-<pid>-<random>/   a save in progress (or left over by a crash)

How a save stays atomic: every file is written into a temporary directory inside ``state/``,
fsynced, the directory is fsynced and renamed to ``ckpt-<seq:06d>`` (a rename is atomic), and the
state directory is fsynced. A crash at any moment leaves either the old set of checkpoints or the
old set plus a complete new one. Older checkpoints are
pruned only after the new one is complete (the newest ``keep`` complete ones stay). Leftover
temporary directories of dead processes are removed by the next ``save`` or ``load_latest``.

How a load stays safe: ``manifest.json`` lists the sha256 and size of every file and carries the
sha256 of its own canonical JSON (``checksum``), so a hand-edited or half-written manifest is
detected like a damaged tensor file. Every field is checked for its type before it is used. ``load_latest``
tries checkpoints newest first by sequence number (a renamed ``ckpt-*`` directory is complete by
construction) and skips any whose manifest is unreadable, ill-formed or altered, whose files are
missing, truncated or altered, or that the caller's ``accept`` check refuses (the render session
checks its ``meta`` contract there), recording one warning per skipped checkpoint in
``store.warnings``. Tensors are read with safetensors only; nothing is ever unpickled.

manifest.json::

    {"format": "mirage-checkpoint", "format_version": 2, "seq": 4, "name": "ckpt-000004",
     "created": "2026-11-21T10:00:00+00:00", "created_unix": 1795000000.0,
     "spec_fingerprint": "<sha256 hex>",
     "versions": {"python": ..., "mirage-cli": ..., "torch": ..., ...}   (mirage_cli.base.versions)
     "files": {"memory.safetensors": {"sha256": "...", "size": 123}, ...},
     "meta": {...the caller's meta, verbatim...},
     "checksum": "<sha256 hex of the canonical JSON of every other key>"}

Format version 1 (mirage before the checksum) is still read, without the self-check.

Contract for ``meta`` (written by the render session, read by ``mirage inspect`` and ``mirage batch``):

- ``spec_fingerprint`` (str, required): ``fingerprint(resolved settings that change the output)``.
- ``chunk`` (int): index of the next chunk to render (= number of chunks finished).
- ``num_chunks`` (int): total number of chunks of the run.
- ``frames_written`` (int): pixel frames already written as MP4 segments.
- ``cache_points`` (int), ``cache_bytes`` (int): size of the latent memory.
- ``mid_chunk_step`` (int or null): denoising steps already done inside chunk ``chunk`` when the
  checkpoint was saved after a signal; null for a checkpoint at a chunk boundary.
- ``done`` (bool): every chunk is rendered (the final video may still need assembling).
- ``profiler`` (dict): the profiler's state, so a resumed render reports every chunk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mirage_cli.base.atomic import fsync_dir
from mirage_cli.base.errors import InputError, RenderError
from mirage_cli.base.files import file_problem, file_record, read_text
from mirage_cli.base.json_text import JsonTextError, load_json
from mirage_cli.base.jsonable import canonical_json, to_jsonable
from mirage_cli.base.versions import package_versions
from mirage_cli.rundir.lock import pid_alive
from mirage_cli.testing import pauses as test_hooks

log = logging.getLogger(__name__)

FORMAT = "mirage-checkpoint"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors$")
_MAX_MANIFEST_BYTES = 64 << 20
_CKPT_RE = re.compile(r"^ckpt-(\d{6,})$")
_TMP_RE = re.compile(r"^\.tmp-ckpt-(\d+)-(\d+)-[0-9a-f]+$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

Accept = Callable[[dict], "str | None"]
"""A caller's check of a well-formed manifest: a problem (str) refuses the checkpoint, None accepts it."""


# --- the store -------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A verified checkpoint: ``tensors[key][name]`` as saved, ``meta`` as given to ``save``."""

    tensors: dict[str, dict[str, Any]]
    meta: dict
    path: Path
    seq: int
    manifest: dict = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class CheckpointInfo:
    """One ``ckpt-*`` directory as ``CheckpointStore.list`` sees it.

    ``ok`` is False when the manifest is unreadable or (with ``verify=True``) a file fails its
    sha256/size check; ``problem`` then says what is wrong.
    """

    name: str
    seq: int
    path: Path
    ok: bool
    problem: str | None
    created: str | None
    created_unix: float | None
    size_bytes: int
    meta: dict | None


class CheckpointStore:
    """Checkpoints of one run in ``state_dir`` (usually ``RUN_DIR/state``).

    ``keep`` (>= 1) complete checkpoints are kept; the default 2 leaves one to fall back to when the
    newest is damaged. ``keep_chunks``: also keep, for every finished chunk, the newest checkpoint taken
    right after it (meta ``chunk`` >= 1, no ``mid_chunk_step``, not ``done``), so that a branch can start
    after any chunk (``mirage_cli.render.branch``). One writer at a time (hold
    ``mirage_cli.rundir.lock.RunLock`` on the run dir); readers (``list``, ``inspect_run``) never modify
    anything.
    """

    def __init__(self, state_dir: str | os.PathLike, keep: int = 2, keep_chunks: bool = False):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.state_dir = Path(state_dir)
        self.keep = keep
        self.keep_chunks = keep_chunks
        self.warnings: list[str] = []

    # -- writing --

    def save(self, tensors: dict[str, dict[str, Any]], meta: dict) -> Path:
        """Write a new checkpoint atomically and return its directory.

        Args:
            tensors: ``{key: {name: tensor}}``; each key becomes ``<key>.safetensors``. Tensors of any
                shape and dtype, on any device (copied to the CPU for writing).
            meta: JSON-able dict that must contain ``spec_fingerprint`` (see the module docstring for
                the keys the render session writes).

        Raises:
            ValueError: bad arguments (a bug in the caller); nothing is written.
            RenderError: the disk is full or the directory is not writable; the previous checkpoints
                are untouched and the partial new one is removed.
        """
        if "spec_fingerprint" not in meta or not isinstance(meta["spec_fingerprint"], str):
            raise ValueError("meta must contain 'spec_fingerprint' (str), the fingerprint of the run's settings")
        try:
            meta_json = to_jsonable(meta)
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta is not JSON-able: {e}") from e
        payloads = {f"{key}.safetensors": _serialize(key, group) for key, group in _check_tensors(tensors).items()}

        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._write_error(e) from e
        self._clean_leftovers()
        seq = self._next_seq()
        name = f"ckpt-{seq:06d}"
        tmp = self.state_dir / f".tmp-ckpt-{seq:06d}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            files = {}
            for fname, data in payloads.items():
                _write_durably(tmp / fname, data)
                files[fname] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                test_hooks.pause("checkpoint_write")  # tests kill the writer here (mirage_cli.testing.pauses)
            now = time.time()
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "seq": seq,
                "name": name,
                "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
                "created_unix": now,
                "spec_fingerprint": meta["spec_fingerprint"],
                "versions": package_versions(),
                "files": files,
                "meta": meta_json,
            }
            manifest["checksum"] = manifest_checksum(manifest)
            _write_durably(tmp / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
            fsync_dir(tmp)
            final = self.state_dir / name
            os.rename(tmp, final)
            fsync_dir(self.state_dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._write_error(e) from e
        self._prune()
        return final

    def _write_error(self, e: OSError) -> RenderError:
        good = self._newest_complete_name()
        kept = f"; the last checkpoint {good} is intact" if good else ""
        if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
            what = "the disk is full"
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            what = "the directory is not writable"
        else:
            what = e.strerror or str(e)
        return RenderError(f"could not write a checkpoint in {self.state_dir}: {what} ({e}){kept}")

    def _next_seq(self) -> int:
        seqs = [seq for seq, _ in self._ckpt_dirs()]
        return max(seqs, default=0) + 1

    def _prune(self) -> None:
        complete = [(seq, p) for seq, p in self._ckpt_dirs() if (p / MANIFEST).is_file()]
        if len(complete) <= self.keep:
            return
        oldest_kept = sorted(complete)[-self.keep][0]
        chunk_states = self._chunk_states(complete) if self.keep_chunks else set()
        for seq, path in self._ckpt_dirs():
            if seq < oldest_kept and seq not in chunk_states:
                try:
                    shutil.rmtree(path)
                except OSError as e:  # pruning is housekeeping: never fail a render for it
                    log.warning("could not remove old checkpoint %s: %s", path, e)

    @staticmethod
    def _chunk_states(complete: list[tuple[int, Path]]) -> set[int]:
        """The sequence numbers of the newest checkpoint taken right after each finished chunk."""
        newest: dict[int, int] = {}
        for seq, path in complete:
            manifest, problem = _read_manifest(path)
            meta = manifest["meta"] if manifest is not None and problem is None else {}
            if isinstance(meta.get("chunk"), int) and meta["chunk"] >= 1 and meta.get("mid_chunk_step") is None \
                    and not meta.get("done"):
                newest[meta["chunk"]] = max(seq, newest.get(meta["chunk"], seq))
        return set(newest.values())

    def _clean_leftovers(self) -> None:
        """Remove temporary directories left by saves of processes that are gone (or by us)."""
        if not self.state_dir.is_dir():
            return
        for entry in self.state_dir.iterdir():
            m = _TMP_RE.match(entry.name)
            if not m:
                continue
            pid = int(m.group(2))
            if pid == os.getpid() or not pid_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
                log.info("removed leftover temporary checkpoint %s", entry)

    # -- reading --

    def _ckpt_dirs(self) -> list[tuple[int, Path]]:
        if not self.state_dir.is_dir():
            return []
        out = []
        for entry in self.state_dir.iterdir():
            m = _CKPT_RE.match(entry.name)
            if m and entry.is_dir():
                out.append((int(m.group(1)), entry))
        return sorted(out)

    def _newest_complete_name(self) -> str | None:
        complete = [p.name for _, p in self._ckpt_dirs() if (p / MANIFEST).is_file()]
        return complete[-1] if complete else None

    def list(self, verify: bool = False, accept: Accept | None = None) -> list[CheckpointInfo]:
        """Every ``ckpt-*`` directory, oldest first. ``verify=True`` also checks every sha256;
        ``accept`` as for ``load_latest``."""
        infos = []
        for seq, path in self._ckpt_dirs():
            manifest, problem = _read_manifest(path, accept)
            if manifest is not None and verify:
                problem = _verify_files(path, manifest)
            size = _dir_size(path)
            infos.append(
                CheckpointInfo(
                    name=path.name,
                    seq=seq,
                    path=path,
                    ok=problem is None,
                    problem=problem,
                    created=_text_or_none(manifest, "created"),
                    created_unix=_number_or_none(manifest, "created_unix"),
                    size_bytes=size,
                    meta=manifest["meta"] if manifest else None,
                )
            )
        return infos

    def load_latest(self, device: Any = "cpu", accept: Accept | None = None, clean: bool = True) -> Checkpoint | None:
        """The newest checkpoint whose manifest and files all pass their checks, or None.

        ``accept(manifest)``: the caller's own check of a well-formed manifest (its ``meta``); it
        returns a problem (str) to skip that checkpoint like a corrupt one, or None.

        Damaged checkpoints are skipped; each one adds a line to ``self.warnings`` (reset on every
        call), e.g. ``"checkpoint ckpt-000004 is unusable (sha256 mismatch in memory.safetensors);
        resuming from ckpt-000003"``. Tensors are loaded onto ``device``. ``clean``: first remove the
        leftovers of interrupted saves (the run's own writer; False for a reader of another run's
        directory, such as a branch reading its parent, which must not change it).
        """
        from safetensors.torch import load as load_safetensors

        self.warnings = []
        if clean:
            self._clean_leftovers()
        bad: list[tuple[str, str]] = []
        for seq, path in reversed(self._ckpt_dirs()):
            manifest, problem = _read_manifest(path, accept)
            tensors: dict[str, dict[str, Any]] = {}
            if manifest is not None:
                for fname, expected in manifest["files"].items():
                    data, problem = _read_checked(path / fname, expected)
                    if problem:
                        break
                    try:
                        group = load_safetensors(data)
                    except Exception as e:  # safetensors raises its own error type on bad headers
                        problem = f"unreadable {fname}: {e}"
                        break
                    tensors[fname[: -len(".safetensors")]] = {k: v.to(device) for k, v in group.items()}
            if problem:
                bad.append((path.name, problem))
                continue
            for name, why in bad:
                self.warnings.append(f"checkpoint {name} is unusable ({why}); resuming from {path.name}")
            return Checkpoint(tensors=tensors, meta=manifest["meta"], path=path, seq=seq, manifest=manifest)
        for name, why in bad:
            self.warnings.append(f"checkpoint {name} is unusable ({why}); no good checkpoint is left, starting over")
        return None


def _check_tensors(tensors: dict) -> dict:
    import torch

    if not isinstance(tensors, dict) or not tensors:
        raise ValueError("tensors must be a non-empty dict {key: {name: tensor}}")
    for key, group in tensors.items():
        if not isinstance(key, str) or not _KEY_RE.match(key) or key == "manifest":
            raise ValueError(f"tensors key {key!r} is not a valid file stem (letters, digits, _ . -)")
        if not isinstance(group, dict):
            raise ValueError(f"tensors[{key!r}] must be a dict {{name: tensor}}, got {type(group).__name__}")
        for name, value in group.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"tensors[{key!r}][{name!r}] must be a torch.Tensor, got {type(value).__name__}")
    return tensors


def _serialize(key: str, group: dict) -> bytes:
    from safetensors.torch import save as save_safetensors

    cpu = {name: t.detach().to("cpu").contiguous() for name, t in group.items()}
    try:
        return save_safetensors(cpu)
    except Exception as e:  # e.g. tensors sharing memory
        raise ValueError(f"cannot serialize tensors[{key!r}]: {e}") from e


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it (raises OSError, e.g. ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_checksum(manifest: dict) -> str:
    """sha256 (hex) of the canonical JSON of ``manifest`` without its ``checksum`` key."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _read_manifest(path: Path, accept: Accept | None = None) -> tuple[dict | None, str | None]:
    """The manifest of checkpoint directory ``path`` when it is well-formed (and ``accept``-ed); else (None, problem)."""
    fpath = path / MANIFEST
    why = file_problem(fpath, _MAX_MANIFEST_BYTES)  # a FIFO or a device is refused, never opened
    if why == "file not found":
        return None, f"{MANIFEST} is missing"
    if why is not None:
        return None, f"{MANIFEST} {why}"
    try:
        manifest = load_json(read_text(fpath, _MAX_MANIFEST_BYTES))
    except (InputError, JsonTextError) as e:
        return None, f"{MANIFEST} is unreadable: {e}"
    problem = manifest_problem(manifest)
    if problem is None and accept is not None:
        problem = accept(manifest)
    return (None, problem) if problem else (manifest, None)


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed ``manifest.json`` (the module docstring's schema), or None."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"{MANIFEST} is not a mirage checkpoint manifest"
    version = manifest.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        return f"{MANIFEST}: format version {version!r} is not one this mirage reads (1 to {FORMAT_VERSION})"
    if version >= 2 and manifest.get("checksum") != manifest_checksum(manifest):
        return f"{MANIFEST} was altered after it was written (its checksum does not match)"
    files, meta = manifest.get("files"), manifest.get("meta")
    if not isinstance(files, dict) or not files:
        return f"{MANIFEST}: 'files' must list the checkpoint's files"
    if not isinstance(meta, dict) or not isinstance(manifest.get("spec_fingerprint"), str):
        return f"{MANIFEST}: 'meta' and 'spec_fingerprint' are missing"
    if meta.get("spec_fingerprint") != manifest["spec_fingerprint"]:
        return f"{MANIFEST}: meta.spec_fingerprint differs from spec_fingerprint"
    for fname, entry in files.items():
        if not _FILE_RE.match(fname):
            return f"{MANIFEST}: {fname!r} is not a checkpoint file name"
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _SHA256_RE.match(entry["sha256"]):
            return f"{MANIFEST}: files.{fname} must be {{'sha256': <64 hex digits>, 'size': <bytes>}}"
        if type(entry.get("size")) is not int or entry["size"] < 0:
            return f"{MANIFEST}: files.{fname}.size must be a byte count"
    return None


def _text_or_none(manifest: dict | None, key: str) -> str | None:
    value = manifest.get(key) if manifest else None
    return value if isinstance(value, str) else None


def _number_or_none(manifest: dict | None, key: str) -> float | None:
    value = manifest.get(key) if manifest else None
    return float(value) if type(value) in (int, float) else None


def _dir_size(path: Path) -> int:
    total = 0
    for entry in path.iterdir():
        try:
            if entry.is_file():
                total += entry.stat().st_size
        except OSError:
            pass
    return total


def _read_checked(path: Path, expected: dict) -> tuple[bytes | None, str | None]:
    """Read a whole file and check it against ``{"sha256", "size"}``; returns (data, problem)."""
    try:
        size = os.path.getsize(path)
        if size != expected["size"]:
            return None, f"{path.name} is truncated or padded: {size} bytes, expected {expected['size']}"
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except OSError as e:
        return None, f"{path.name} is unreadable: {e}"
    if len(data) != expected["size"]:
        return None, f"{path.name} changed while it was read"
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        return None, f"sha256 mismatch in {path.name}"
    return data, None


def _verify_files(path: Path, manifest: dict) -> str | None:
    """Stream-hash every file of a checkpoint; the first problem found, or None."""
    for fname, expected in manifest["files"].items():
        fpath = path / fname
        try:
            size = fpath.stat().st_size
            if size != expected["size"]:
                return f"{fname} is truncated or padded: {size} bytes, expected {expected['size']}"
            digest = file_record(fpath)["sha256"]
        except FileNotFoundError:
            return f"{fname} is missing"
        except OSError as e:
            return f"{fname} is unreadable: {e}"
        if digest != expected["sha256"]:
            return f"sha256 mismatch in {fname}"
    return None
