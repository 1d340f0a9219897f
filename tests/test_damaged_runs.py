"""A damaged run directory: every piece of one damaged in turn, then the same command run again.

Two real run directories are built once per session: a render of the small scene stopped by
SIGTERM inside its second chunk (a chunk-boundary checkpoint, a mid-chunk one, chunk 0's segment
and latents), and the session's finished reference render (conftest.py ``renders["latent"]``).
Each case copies one, damages one file as a crash, a full disk, a bad copy or a hand edit would,
asks ``mirage inspect`` (which must answer, whatever it finds), and runs the same ``mirage render``
again. The outcome must be the case's class:

- ``fallback``: an older checkpoint (or none) is used, with a warning naming the damaged one;
- ``rebuild``: what is derived (segments, the video, run.json, the report) is rebuilt, with a warning;
- ``refuse``: exit 2 and a message naming the file and the fix.

A fallback or rebuild ends as an uninterrupted render does: the same ``video.mp4`` bytes and the
same final checkpoint tensors as the reference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from render_helpers import cli, file_hash, final_checkpoint_tensors, render_args, same_tensors

from mirage_cli.rundir.checkpoint import manifest_checksum

# --- the two runs --------------------------------------------------------------------------------


@pytest.fixture
def reference(renders) -> Path:
    return renders["latent"][0]


# --- damage ----------------------------------------------------------------------------------------


def newest(run: Path) -> Path:
    return sorted((run / "state").glob("ckpt-*"))[-1]


def edit_manifest(run: Path, edit, reseal: bool) -> None:
    """Change the newest manifest with ``edit(manifest)``; ``reseal``: recompute its checksum, as a
    writer with a bug would (the schema checks must catch it), else leave it as a hand edit does."""
    path = newest(run) / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    if reseal:
        manifest["checksum"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def write_lock(run: Path, content) -> None:
    (run / ".lock").write_text(content if isinstance(content, str) else json.dumps(content))


def leftovers(run: Path) -> None:
    (run / ".video.mp4.tmp-ab12cd34.mp4").write_bytes(b"half a video")
    (run / "segments" / ".chunk_0000.mp4.k2j3l4m5.mp4").write_bytes(b"half a segment")  # the name before the tmp- mark
    (run / "latents" / ".chunk_0001.safetensors.tmp-a1b2c3d4.tmp").write_bytes(b"half")
    (run / ".run.json.tmp-zzzzzzzz.tmp").write_text("{")
    (run / "state" / ".tmp-ckpt-000009-4194304-abcd").mkdir()  # a save of a process that is gone
    (run / "notes.txt").write_text("the user's own file: stays")


STOPPED = {
    # checkpoints: fall back to the older one
    "manifest files not objects": ("fallback", lambda r: edit_manifest(r, lambda m: m.update(files={k: 1 for k in m["files"]}), True)),
    "manifest files empty": ("fallback", lambda r: edit_manifest(r, lambda m: m.update(files={}), True)),
    "manifest without rollout file": ("fallback", lambda r: edit_manifest(r, lambda m: m["files"].pop("rollout.safetensors"), True)),
    "manifest chunk hand-edited": ("fallback", lambda r: edit_manifest(r, lambda m: m["meta"].update(chunk=0), False)),
    "manifest chunk out of range": ("fallback", lambda r: edit_manifest(r, lambda m: m["meta"].update(chunk=7), True)),
    "manifest step not a number": ("fallback", lambda r: edit_manifest(r, lambda m: m["meta"].update(mid_chunk_step="2"), True)),
    "manifest outputs garbage": ("fallback", lambda r: edit_manifest(r, lambda m: m["meta"].update(outputs={"x": [1]}), True)),
    "manifest garbage": ("fallback", lambda r: (newest(r) / "manifest.json").write_bytes(b"\x00\xff{garbage")),
    "manifest missing": ("fallback", lambda r: (newest(r) / "manifest.json").unlink()),
    "tensors truncated": ("fallback", lambda r: truncate(newest(r) / "rollout.safetensors")),
    "tensors flipped": ("fallback", lambda r: flip_byte(newest(r) / "memory.safetensors")),
    "every checkpoint garbage": ("fallback", lambda r: [(p / "manifest.json").write_text("[]") for p in (r / "state").glob("ckpt-*")]),
    # the lock
    "lock is a directory": ("refuse", lambda r: (r / ".lock").mkdir()),
    "lock pid not a number": ("rebuild", lambda r: write_lock(r, {"host": "h", "pid": "abc"})),
    "lock pid huge": ("rebuild", lambda r: write_lock(r, {"host": "h", "pid": 10**30, "process_start": "x"})),
    "lock garbage": ("rebuild", lambda r: write_lock(r, "\x00\x01 not json")),
    "lock of another host": ("refuse", lambda r: write_lock(r, {"host": "elsewhere.cluster", "pid": 4242})),
    # files derived from the checkpoint and the latents
    "run.json garbage": ("rebuild", lambda r: (r / "run.json").write_text("{not json")),
    "run.json wrong shape": ("rebuild", lambda r: (r / "run.json").write_text('{"fingerprint": 3}')),
    "run.json missing": ("rebuild", lambda r: (r / "run.json").unlink()),
    "segment truncated": ("rebuild", lambda r: truncate(r / "segments" / "chunk_0000.mp4")),
    "segment empty": ("rebuild", lambda r: (r / "segments" / "chunk_0000.mp4").write_bytes(b"")),
    "segments deleted": ("rebuild", lambda r: shutil.rmtree(r / "segments")),
    "latents deleted": ("rebuild", lambda r: (r / "latents" / "chunk_0000.safetensors").unlink()),
    "segment and its latents deleted": (
        "refuse",
        lambda r: [(r / "segments" / "chunk_0000.mp4").unlink(), (r / "latents" / "chunk_0000.safetensors").unlink()],
    ),
    "leftovers of interrupted writes": ("rebuild", leftovers),
}

FINISHED = {
    "video truncated": ("rebuild", lambda r: truncate(r / "video.mp4")),
    "video empty": ("rebuild", lambda r: (r / "video.mp4").write_bytes(b"")),
    "video deleted": ("rebuild", lambda r: (r / "video.mp4").unlink()),
    "video flipped": ("rebuild", lambda r: flip_byte(r / "video.mp4")),
    "report garbage": ("rebuild", lambda r: (r / "report.json").write_text("{garbage")),
    "report of another shape": ("rebuild", lambda r: (r / "report.json").write_text("[1, 2]")),
    "video and segments damaged": ("rebuild", lambda r: [truncate(r / "video.mp4"), shutil.rmtree(r / "segments")]),
    "final manifest hand-edited": ("fallback", lambda r: edit_manifest(r, lambda m: m["meta"].update(done=False), False)),
}

WARNING_WORDS = {"fallback": ("unusable",), "rebuild": ("rebuil", "rewritten", "again", "taking over", "no longer")}
QUIET = {"run.json missing", "leftovers of interrupted writes"}  # nothing to warn about / checked below


def check_outcome(run: Path, reference: Path, outcome: str, result) -> None:
    info = cli("inspect", run, "--json")
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["finished"] is (outcome != "refuse")
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if outcome == "refuse":
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith("error: ") and str(run) in result.stderr, result.stderr
        return
    assert result.exit_code == 0, result.stderr
    assert file_hash(run / "video.mp4") == file_hash(reference / "video.mp4")
    assert same_tensors(final_checkpoint_tensors(run), final_checkpoint_tensors(reference))


def render_damaged(source: Path, tmp_path: Path, damage, scene: Path):
    run = tmp_path / "run"
    shutil.copytree(source, run, symlinks=True)
    damage(run)
    info = cli("inspect", run, "--json")  # answers whatever it finds
    assert info.exit_code == 0, info.stderr
    json.loads(info.stdout)
    return run, cli(*render_args(scene, run))


@pytest.mark.parametrize("case", list(STOPPED))
def test_damaged_stopped_run(case, tmp_path, small_scene, stopped_run, reference):
    outcome, damage = STOPPED[case]
    run, result = render_damaged(stopped_run, tmp_path, damage, small_scene)
    check_outcome(run, reference, outcome, result)
    if outcome != "refuse" and case not in QUIET:
        assert any(word in result.stderr.lower() for word in WARNING_WORDS[outcome]), result.stderr


@pytest.mark.parametrize("case", list(FINISHED))
def test_damaged_finished_run(case, tmp_path, small_scene, reference):
    outcome, damage = FINISHED[case]
    run, result = render_damaged(reference, tmp_path, damage, small_scene)
    check_outcome(run, reference, outcome, result)
    assert any(word in result.stderr.lower() for word in WARNING_WORDS[outcome]), result.stderr
    if case.startswith("report"):
        assert json.loads((run / "report.json").read_text()) == json.loads((reference / "report.json").read_text())


def test_leftovers_are_removed_and_nothing_else(tmp_path, small_scene, stopped_run):
    run, result = render_damaged(stopped_run, tmp_path, leftovers, small_scene)
    assert result.exit_code == 0, result.stderr
    names = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    assert "notes.txt" in names
    assert not [n for n in names if Path(n).name.startswith(".") and Path(n).name != ".lock"], names


def test_a_completed_run_leaves_no_temporary_files(reference):
    hidden = [p for p in reference.rglob(".*")]
    assert hidden == []


def test_inspect_reads_any_lock(tmp_path, stopped_run):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    for content in ({"host": "h", "pid": "abc"}, {"host": 5, "pid": 10**30}, "garbage", {"pid": -1}):
        write_lock(run, content)
        info = json.loads(cli("inspect", run, "--json").stdout)
        assert "damaged" in info["lock"]["message"] and info["resumable"] is True
    (run / ".lock").unlink()
    (run / ".lock").mkdir()
    result = cli("inspect", run, "--json")
    info = json.loads(result.stdout)
    assert info["resumable"] is False and "is a directory" in info["reason"] and "rmdir" in info["reason"]


def test_unreadable_profile_state_still_resumes(tmp_path, small_scene, stopped_run, reference):
    def bad_profile(run: Path) -> None:
        edit_manifest(run, lambda m: m["meta"].update(profiler={"version": 1, "chunks": "x"}), True)

    run, result = render_damaged(stopped_run, tmp_path, bad_profile, small_scene)
    assert result.exit_code == 0 and "the profile of the chunks before could not be read" in result.stderr
    assert file_hash(run / "video.mp4") == file_hash(reference / "video.mp4")
