"""inspect_run / `mirage inspect` / `mirage cache export` on real run directories built in tmp_path."""

from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

from mirage_cli.base.errors import InputError
from mirage_cli.base.files import file_record
from mirage_cli.cli.main import app
from mirage_cli.rundir import layout
from mirage_cli.rundir.layout import RunDir, inspect_run


def _save(run, chunk, *, done=False, step=None, num_chunks=4, outputs=None):
    meta = {"spec_fingerprint": "ab" * 32, "chunk": chunk, "num_chunks": num_chunks, "frames_written": 1 + 8 * chunk,
            "cache_points": 100 * chunk, "cache_bytes": 4096 * chunk, "mid_chunk_step": step, "done": done,
            "outputs": outputs or {}}
    tensors = {"memory": {"xyz": torch.zeros(chunk + 1, 3)}, "rollout": {"last_latent": torch.zeros(2)}}
    if step is not None:
        tensors["denoise"] = {"latents": torch.zeros(2)}
    return RunDir(run).checkpoints().save(tensors, meta)


def test_inspect_partial_run(tmp_path):
    _save(tmp_path, 1)
    _save(tmp_path, 2, step=7)
    info = inspect_run(tmp_path)
    assert info["chunks_done"] == 2 and info["num_chunks"] == 4
    assert info["frames_written"] == 17 and info["cache_points"] == 200 and info["cache_bytes"] == 8192
    assert info["mid_chunk_step"] == 7
    assert info["last_checkpoint"] == "ckpt-000002" and info["last_checkpoint_time"]
    assert info["resumable"] is True
    assert info["reason"] == "resumes at chunk 3 of 4, denoising step 7 from ckpt-000002"
    assert info["video"] is None and info["finished"] is False and info["lock"] is None
    json.dumps(info)


def test_inspect_reasons(tmp_path):
    with pytest.raises(InputError, match="run directory does not exist"):
        inspect_run(tmp_path / "missing")
    assert "no state/ directory" in inspect_run(tmp_path)["reason"]

    (tmp_path / "video.mp4").write_bytes(b"\0")
    path = _save(tmp_path, 4, done=True, outputs={"video.mp4": file_record(tmp_path / "video.mp4")})
    info = inspect_run(tmp_path)
    assert info["finished"] is True and info["resumable"] is False and info["reason"].startswith("finished")
    (tmp_path / "video.mp4").write_bytes(b"\1")  # "finished" means verified: an altered video is not
    info = inspect_run(tmp_path)
    assert info["finished"] is False and info["resumable"] is True and "video.mp4 was altered" in info["reason"]
    (tmp_path / "video.mp4").unlink()
    info = inspect_run(tmp_path)
    assert info["resumable"] is True and "video.mp4 is missing" in info["reason"]

    (path / "memory.safetensors").write_bytes(b"garbage")
    info = inspect_run(tmp_path)
    assert info["resumable"] is False and "all 1 checkpoints are unusable" in info["reason"]
    assert info["warnings"] and "ckpt-000001 is unusable" in info["warnings"][0]


def test_inspect_reports_fallback_and_live_lock(tmp_path):
    _save(tmp_path, 1)
    bad = _save(tmp_path, 2)
    (bad / "manifest.json").write_text("{")
    info = inspect_run(tmp_path)
    assert info["last_checkpoint"] == "ckpt-000001" and info["chunks_done"] == 1
    assert info["warnings"] == ["checkpoint ckpt-000002 is unusable (manifest.json is unreadable: "
                                "JSON does not parse: Expecting property name enclosed in double quotes (column 2)); "
                                "resuming from ckpt-000001"]
    with RunDir(tmp_path).lock():
        info = inspect_run(tmp_path)
    assert info["resumable"] is False and info["reason"].startswith(f"in use: run directory {tmp_path} is in use by pid {os.getpid()}")
    assert inspect_run(tmp_path)["resumable"] is True


def test_inspect_does_not_touch_leftovers_of_a_writer(tmp_path):
    _save(tmp_path, 1)
    leftover = tmp_path / "state" / ".tmp-ckpt-000002-999999999-abcd"
    leftover.mkdir()
    inspect_run(tmp_path)
    assert leftover.exists()  # read-only: only the writer cleans up


def test_cli_inspect_json_and_text(tmp_path):
    _save(tmp_path, 3)
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["chunks_done"] == 3 and info["resumable"] is True
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 0
    assert "chunks done       3 / 4" in result.stdout and "resumable         yes" in result.stdout
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "run directory does not exist" in result.stderr


def test_cli_cache_export_without_checkpoint_is_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["cache", "export", str(tmp_path), "--ply", str(tmp_path / "m.ply")])
    assert result.exit_code == 2 and "nothing to export" in result.stderr


class _RecordingMemory:
    """Stands in for mirage_cli.memory.LatentSpatialMemory (written by another helper): it checks
    only the wiring of `cache export`, i.e. the two calls it makes, not the memory itself."""

    seen: dict = {}

    @classmethod
    def from_state_dict(cls, d):
        cls.seen["state"] = d
        return cls()

    def export_ply(self, path):
        path.write_bytes(b"ply\n")


def test_cli_cache_export_calls_the_memory_with_the_newest_good_state(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "LatentSpatialMemory", _RecordingMemory)
    _save(tmp_path, 1)
    bad = _save(tmp_path, 2)
    (bad / "memory.safetensors").write_bytes(b"x")
    out = tmp_path / "m.ply"
    result = CliRunner().invoke(app, ["cache", "export", str(tmp_path), "--ply", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and out.read_bytes() == b"ply\n"
    assert "ckpt-000002 is unusable" in result.stderr
    assert torch.equal(_RecordingMemory.seen["state"]["xyz"], torch.zeros(2, 3))


def test_cli_cache_export_with_the_real_memory(tmp_path):
    memory_mod = pytest.importorskip("mirage_cli.memory")
    memory = memory_mod.LatentSpatialMemory(channels=4, stride=16, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[40.0, 0, 31.5], [0, 40.0, 31.5], [0, 0, 1]], dtype=torch.float64)
    inserted = memory.insert(torch.randn(4, 4, 4, generator=g), torch.full((64, 64), 2.0), K,
                             torch.eye(4, dtype=torch.float64))
    assert inserted > 0
    RunDir(tmp_path).checkpoints().save({"memory": memory.state_dict()}, {"spec_fingerprint": "x", "chunk": 1})
    out = tmp_path / "m.ply"
    result = CliRunner().invoke(app, ["cache", "export", str(tmp_path), "--ply", str(out)])
    assert result.exit_code == 0, result.output
    header = out.read_bytes()[:200]
    assert header.startswith(b"ply") and f"element vertex {inserted}".encode() in header
