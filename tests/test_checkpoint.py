"""CheckpointStore: atomic save, verified load with fallback, pruning, crash leftovers, disk full.

Everything runs on real files in tmp_path. The only mock is the disk-full case: a full disk cannot
be produced safely in a test, so ``os.write`` is patched to fail with ENOSPC for files inside the
state directory (the same OSError a full disk raises).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mirage_cli.base.errors import RenderError
from mirage_cli.base.jsonable import canonical_json
from mirage_cli.rundir.checkpoint import CheckpointStore, manifest_checksum
from mirage_cli.rundir.layout import diff_config, fingerprint

FP = "f" * 64


def _tensors(i: int) -> dict:
    g = torch.Generator().manual_seed(i)
    return {
        "memory": {
            "xyz": torch.randn(7, 3, generator=g),
            "latent": torch.randn(7, 48, generator=g).to(torch.bfloat16),
            "frame": torch.arange(7, dtype=torch.int64) + i,
        },
        "rollout": {"last_latent": torch.randn(1, 48, 2, 3, 4, generator=g).half()},
    }


def _meta(i: int) -> dict:
    return {"spec_fingerprint": FP, "chunk": i, "num_chunks": 5, "frames_written": 8 * i, "mid_chunk_step": None,
            "done": False, "stats": [{"chunk": k, "seconds": 1.5} for k in range(i)]}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert a[key][name].dtype == b[key][name].dtype
            assert torch.equal(a[key][name], b[key][name]), (key, name)


def test_save_load_round_trip_and_manifest(tmp_path):
    store = CheckpointStore(tmp_path / "state")
    assert store.load_latest() is None and store.warnings == []
    path = store.save(_tensors(1), _meta(1))
    assert path.name == "ckpt-000001"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "memory.safetensors", "rollout.safetensors"]

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["spec_fingerprint"] == FP
    assert manifest["checksum"] == manifest_checksum(manifest)
    assert {"python", "mirage-cli", "torch", "diffusers", "transformers", "numpy"} <= set(manifest["versions"])
    assert manifest["meta"] == _meta(1)
    for fname, entry in manifest["files"].items():
        assert entry["size"] == (path / fname).stat().st_size
        assert len(entry["sha256"]) == 64

    ckpt = CheckpointStore(tmp_path / "state").load_latest()
    assert ckpt is not None and ckpt.seq == 1 and ckpt.path == path and ckpt.meta == _meta(1)
    _assert_same(ckpt.tensors, _tensors(1))


def test_newest_wins_and_old_ones_are_pruned(tmp_path):
    store = CheckpointStore(tmp_path / "state", keep=2)
    for i in range(1, 5):
        store.save(_tensors(i), _meta(i))
    assert [i.name for i in store.list()] == ["ckpt-000003", "ckpt-000004"]
    ckpt = store.load_latest()
    assert ckpt.seq == 4 and ckpt.meta["chunk"] == 4
    _assert_same(ckpt.tensors, _tensors(4))


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_checkpoint_falls_back_to_previous_with_warning(tmp_path):
    store = CheckpointStore(tmp_path / "state")
    store.save(_tensors(3), _meta(3))
    newest = store.save(_tensors(4), _meta(4))
    _flip_byte(newest / "memory.safetensors")
    ckpt = store.load_latest()
    assert ckpt.seq == 1 and ckpt.meta["chunk"] == 3
    _assert_same(ckpt.tensors, _tensors(3))
    assert store.warnings == [
        "checkpoint ckpt-000002 is unusable (sha256 mismatch in memory.safetensors); resuming from ckpt-000001"
    ]
    # list(verify=True) reports the same, list() alone only reads manifests
    assert [i.ok for i in store.list(verify=True)] == [True, False]
    assert [i.ok for i in store.list()] == [True, True]


def test_truncated_file_and_missing_manifest_are_skipped(tmp_path):
    store = CheckpointStore(tmp_path / "state", keep=3)
    for i in range(1, 4):
        store.save(_tensors(i), _meta(i))
    third = tmp_path / "state" / "ckpt-000003"
    data = (third / "rollout.safetensors").read_bytes()
    (third / "rollout.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "state" / "ckpt-000002" / "manifest.json").unlink()
    ckpt = store.load_latest()
    assert ckpt.seq == 1
    assert "ckpt-000003 is unusable (rollout.safetensors is truncated or padded" in store.warnings[0]
    assert store.warnings[1] == "checkpoint ckpt-000002 is unusable (manifest.json is missing); resuming from ckpt-000001"


def test_all_corrupt_returns_none_and_says_so(tmp_path):
    store = CheckpointStore(tmp_path / "state")
    path = store.save(_tensors(1), _meta(1))
    (path / "manifest.json").write_text("{not json")
    assert store.load_latest() is None
    assert len(store.warnings) == 1 and "no good checkpoint is left" in store.warnings[0]


def test_new_checkpoint_after_corruption_gets_a_new_name(tmp_path):
    store = CheckpointStore(tmp_path / "state")
    store.save(_tensors(1), _meta(1))
    bad = store.save(_tensors(2), _meta(2))
    _flip_byte(bad / "rollout.safetensors")
    assert store.load_latest().seq == 1
    assert store.save(_tensors(3), _meta(3)).name == "ckpt-000003"
    assert store.load_latest().seq == 3 and store.warnings == []


def test_crash_leftovers_are_cleaned_but_live_writers_are_not(tmp_path):
    state = tmp_path / "state"
    store = CheckpointStore(state)
    store.save(_tensors(1), _meta(1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = state / f".tmp-ckpt-000002-{dead.pid}-deadbeef"
    leftover.mkdir()
    (leftover / "memory.safetensors").write_bytes(b"half a file")
    live = state / ".tmp-ckpt-000002-1-cafe0000"  # pid 1 is always alive
    live.mkdir()
    ckpt = store.load_latest()
    assert ckpt.seq == 1 and store.warnings == []
    assert not leftover.exists() and live.exists()


def test_meta_without_fingerprint_or_not_json_is_refused_before_writing(tmp_path):
    store = CheckpointStore(tmp_path / "state")
    with pytest.raises(ValueError, match="spec_fingerprint"):
        store.save(_tensors(1), {"chunk": 1})
    with pytest.raises(ValueError, match="JSON"):
        store.save(_tensors(1), {"spec_fingerprint": FP, "bad": float("nan")})
    with pytest.raises(ValueError, match="torch.Tensor"):
        store.save({"memory": {"x": [1, 2]}}, _meta(1))
    with pytest.raises(ValueError, match="file stem"):
        store.save({"../evil": {"x": torch.zeros(1)}}, _meta(1))
    assert store.list() == []


def test_disk_full_raises_render_error_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    """ENOSPC is simulated by patching os.write for files inside the state dir (see module docstring)."""
    state = tmp_path / "state"
    store = CheckpointStore(state)
    store.save(_tensors(1), _meta(1))
    real_write = os.write
    calls = {"n": 0}

    def full_disk_write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if target.startswith(str(state)):
            calls["n"] += 1
            if calls["n"] >= 2:  # the first file fits, the second does not
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk_write)
    with pytest.raises(RenderError) as info:
        store.save(_tensors(2), _meta(2))
    monkeypatch.setattr(os, "write", real_write)
    message = str(info.value)
    assert "disk is full" in message and "ckpt-000001 is intact" in message
    assert sorted(p.name for p in state.iterdir()) == ["ckpt-000001"]
    ckpt = store.load_latest()
    assert ckpt.seq == 1 and store.warnings == []
    _assert_same(ckpt.tensors, _tensors(1))


def test_unwritable_state_dir_is_a_render_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RenderError, match="could not write a checkpoint"):
        CheckpointStore(blocker / "state").save(_tensors(1), _meta(1))


_KILL_LOOP = r"""
import sys, torch
from mirage_cli.rundir.checkpoint import CheckpointStore
store = CheckpointStore(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    i += 1
    big = torch.full((256, 1024), float(i))   # 1 MiB per file: a kill often lands mid-write
    store.save({"memory": {"v": big}, "rollout": {"i": torch.tensor([i])}},
               {"spec_fingerprint": "x", "chunk": i})
"""


def test_sigkill_during_saves_always_leaves_a_consistent_checkpoint(tmp_path):
    state = tmp_path / "state"
    for delay in (0.15, 0.4, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_LOOP, str(state)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = CheckpointStore(state)
        ckpt = store.load_latest()
        if ckpt is None:  # killed before the first save completed
            continue
        i = ckpt.meta["chunk"]
        assert store.warnings == []
        assert int(ckpt.tensors["rollout"]["i"]) == i
        assert torch.equal(ckpt.tensors["memory"]["v"], torch.full((256, 1024), float(i)))
        assert not any(p.name.startswith(".tmp-") for p in state.iterdir())


def test_fingerprint_is_canonical():
    a = {"seed": 1, "camera": {"fps": 24.0, "path": [1, 2]}}
    b = {"camera": {"path": [1, 2], "fps": 24.0}, "seed": 1}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "seed": 2})
    assert len(fingerprint(a)) == 64
    assert canonical_json({"p": Path("/x")}) == '{"p":"/x"}'


def test_diff_config_names_dotted_keys():
    old = {"seed": 1, "memory": {"mode": "latent", "voxel": 0.1}, "frames": [{"K": 1}, {"K": 2}], "gone": 1}
    new = {"seed": 2, "memory": {"mode": "latent", "voxel": 0.2, "cap": 9}, "frames": [{"K": 1}, {"K": 3}], "added": 0}
    assert diff_config(old, new) == ["added", "frames.1.K", "gone", "memory.cap", "memory.voxel", "seed"]
    assert diff_config(old, old) == []
    assert diff_config({"a": [1, 2]}, {"a": [1, 2, 3]}) == ["a"]
    assert diff_config({"a": 1}, {"a": "1"}) == ["a"]
