"""``mirage render NEW.yaml --from RUN[@CHUNK]`` (issue 32): a branch continues a parent run after a
finished chunk and gives the same bytes as a render of its spec from scratch; the parent is only
read; what would change the prefix is refused naming it. Real tiny renders, real signals."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from render_helpers import EXAMPLE, cli

TINY = ["--preset", "tiny", "--steps", "3", "--quiet"]
SHARED = [{"frame": 0, "position": [0.0, 0.0, 0.0], "yaw": 0}, {"frame": 16, "position": [0.2, 0.0, 0.3], "yaw": 20},
          {"frame": 24, "position": [0.4, 0.0, 0.4], "yaw": 40}]


def spec(folder, name: str, keyframes: list, frames: int, **changes) -> str:
    """A small spec (224x128, chunks of 9 frames, linear path: a keyframe changes only the frames around it)."""
    shutil.copy(EXAMPLE.parent / "start.png", folder / "start.png")
    shutil.copy(EXAMPLE.parent / "depth.npy", folder / "depth.npy")
    values = {"prompt": "a room", "image": "start.png", "depth": "depth.npy", "depth_model": "none", "frames": frames,
              "chunk_frames": 9, "resolution": "224x128", "camera": {"keyframes": keyframes, "interpolation": "linear"}, **changes}
    path = folder / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)


def tree_hashes(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def paused_render(spec_path, run, *extra: str) -> subprocess.Popen:
    """``mirage render`` in a child process, a pause after every denoising step, jsonl events on stderr."""
    cmd = [sys.executable, "-m", "mirage_cli", "render", str(spec_path), "--out", str(run), *extra, "--preset", "tiny",
           "--steps", "3", "--progress", "jsonl"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MIRAGE_TEST_PAUSE": "denoise_step=0.5"})


def stopped_branch(branch, run, source) -> None:
    """A branch render of ``branch`` from ``source`` into ``run``, stopped by SIGTERM at its first step."""
    child = paused_render(branch, run, "--from", str(source))
    for line in child.stderr:
        if json.loads(line)["event"] == "step":
            child.send_signal(signal.SIGTERM)
            break
    child.stderr.read()
    assert child.wait() == 75


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A finished 3-chunk parent, and the spec of a 4-chunk branch that shares its path up to frame 24,
    rendered from scratch for reference."""
    folder = tmp_path_factory.mktemp("branch")
    parent = spec(folder, "parent.yaml", SHARED, 25)
    branch = spec(folder, "branch.yaml", [*SHARED, {"frame": 32, "position": [0.1, 0.1, 0.8], "yaw": 0}], 33)
    assert cli("render", parent, "--out", folder / "parent", *TINY).exit_code == 0
    assert cli("render", branch, "--out", folder / "scratch", *TINY).exit_code == 0
    return folder, branch


def test_a_branch_gives_the_bytes_of_a_render_from_scratch_and_leaves_the_parent_as_it_was(family, tmp_path):
    folder, branch = family
    before = tree_hashes(folder / "parent")
    done = cli("render", branch, "--out", tmp_path / "b", "--from", folder / "parent", *TINY)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "b" / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()
    assert tree_hashes(folder / "parent") == before
    lineage = json.loads((tmp_path / "b" / "run.json").read_text())["lineage"]
    assert lineage["parent"] == str((folder / "parent").resolve()) and lineage["chunk"] == 3
    manifest = folder / "parent" / "state" / lineage["checkpoint"] / "manifest.json"
    assert lineage["checkpoint_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    for k in range(3):  # the prefix is shared, not copied
        assert os.stat(tmp_path / "b" / "segments" / f"chunk_{k:04d}.mp4").st_ino == \
            os.stat(folder / "parent" / "segments" / f"chunk_{k:04d}.mp4").st_ino
    shown = cli("inspect", tmp_path / "b")
    assert f"branch of         {(folder / 'parent').resolve()} after chunk 3" in shown.stdout
    again = cli("render", branch, "--out", tmp_path / "b", "--from", folder / "parent", *TINY)  # finished: nothing to do
    assert again.exit_code == 0 and (tmp_path / "b" / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()
    restarted = cli("render", branch, "--out", tmp_path / "b", "--from", folder / "parent", "--restart", *TINY)
    assert restarted.exit_code == 0, restarted.output  # starts the branch again from its parent: still a branch
    assert json.loads((tmp_path / "b" / "run.json").read_text())["lineage"]["chunk"] == 3
    first = "segments/chunk_0000.mp4"
    assert os.stat(tmp_path / "b" / first).st_ino == os.stat(folder / "parent" / first).st_ino
    assert (tmp_path / "b" / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()
    assert tree_hashes(folder / "parent") == before


def test_a_stopped_branch_resumes_to_the_same_bytes(family, tmp_path):
    folder, branch = family
    run = tmp_path / "b"
    stopped_branch(branch, run, folder / "parent")
    resumed = cli("render", branch, "--out", run, "--from", folder / "parent", *TINY)
    assert resumed.exit_code == 0, resumed.output
    assert (run / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()


def test_what_would_change_the_prefix_is_refused_naming_it(family, tmp_path):
    folder, _ = family
    parent = folder / "parent"
    longer = [*SHARED, {"frame": 32, "position": [0.1, 0.1, 0.8], "yaw": 0}]
    moved = [SHARED[0], {"frame": 16, "position": [0.2, 0.05, 0.3], "yaw": 20}, *longer[2:]]
    (tmp_path / "image").mkdir()
    other_image = spec(tmp_path / "image", "image.yaml", longer, 33)
    flipped = Image.open(tmp_path / "image" / "start.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped.save(tmp_path / "image" / "start.png")
    cases = [
        (spec(tmp_path, "seed.yaml", longer, 33, seed=7), str(parent), "seed: differs from the parent run"),
        (other_image, str(parent), "image_sha256: differs from the parent run"),
        (spec(tmp_path, "path.yaml", moved, 33), str(parent), "the camera path parts from the parent's at frame 1, "),
        (spec(tmp_path, "short.yaml", SHARED, 25), str(parent), "nothing to render after chunk 3"),
        (spec(tmp_path, "ok.yaml", longer, 33), f"{parent}@4", "the parent holds no checkpoint after chunk 4 (it keeps its "
                                                                 "state after chunk 1, 2, 3)"),
        (spec(tmp_path, "ok.yaml", longer, 33), str(tmp_path / "nowhere"), "the parent run directory does not exist"),
        (spec(tmp_path, "ok.yaml", longer, 33), str(tmp_path / "ok.yaml"), "the parent run directory is not a directory"),
        (spec(tmp_path, "ok.yaml", longer, 33), str(tmp_path / ("a" * 300)), "the parent run directory cannot be read"),
        (spec(tmp_path, "ok.yaml", longer, 33), str(tmp_path / "image"), "the parent holds no checkpoint after a finished chunk"),
        (spec(tmp_path, "ok.yaml", longer, 33), f"{parent}@x", "does not exist (in RUN@CHUNK, CHUNK is a number of finished chunks"),
        (spec(tmp_path, "ok.yaml", longer, 33), f"{parent}@0", "expected RUN or RUN@CHUNK with CHUNK a number of finished chunks"),
    ]
    damaged = tmp_path / "damaged"
    shutil.copytree(parent, damaged)
    (damaged / "segments" / "chunk_0001.mp4").write_bytes(b"broken")
    cases.append((spec(tmp_path, "ok.yaml", longer, 33), str(damaged), "the parent's file is truncated or padded"))
    for path, source, expected in cases:
        out = tmp_path / f"out-{os.path.basename(path)}"
        result = cli("render", path, "--out", out, "--from", source, *TINY)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and expected in errors[0], (path, source, result.stderr)
        assert not out.exists()


def test_a_branch_after_the_first_chunk_of_three_takes_another_way(family, tmp_path, monkeypatch):
    """The parent keeps its state after every chunk: a branch after chunk 1 follows another path from
    frame 8 on, and still equals its spec rendered from scratch. ``--from`` replaces the spec's ``from:``
    and the resolved spec records it."""
    folder, _ = family
    turn = [SHARED[0], {"frame": 8, "position": [0.1, 0.0, 0.15], "yaw": 10}, {"frame": 24, "position": [-0.3, 0.0, 0.5], "yaw": -30}]
    parent_path = spec(tmp_path, "first.yaml", [SHARED[0], {"frame": 8, "position": [0.1, 0.0, 0.15], "yaw": 10}, *SHARED[1:]], 25)
    assert cli("render", parent_path, "--out", tmp_path / "parent", *TINY).exit_code == 0
    other = spec(tmp_path, "other.yaml", turn, 25)
    assert cli("render", other, "--out", tmp_path / "scratch", *TINY).exit_code == 0
    # --from (relative to the working directory) replaces the spec's from:, even a malformed one; it may
    # name the spec's own output: --out is where the render goes
    branch = spec(tmp_path, "other-branch.yaml", turn, 25, **{"from": 7, "output": "parent"})
    monkeypatch.chdir(tmp_path / "parent" / "segments")
    done = cli("render", branch, "--out", tmp_path / "b", "--from", "..@1", *TINY)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "b" / "video.mp4").read_bytes() == (tmp_path / "scratch" / "video.mp4").read_bytes()
    assert json.loads((tmp_path / "b" / "run.json").read_text())["lineage"]["chunk"] == 1
    resolved = yaml.safe_load((tmp_path / "b" / "spec.resolved.yaml").read_text())
    assert resolved["from"] == f"{tmp_path / 'parent' / 'segments' / '..'}@1"  # what rendered, from any folder


def test_a_branch_named_in_its_spec_records_its_lineage_in_the_report_and_the_parent_lists_it(family):
    """``from:`` in the spec (relative to the spec's folder) does what ``--from`` does; the report
    (validated against its schema) and report.html carry the lineage; ``mirage inspect PARENT`` lists
    the branch, found beside it."""
    import jsonschema

    from mirage_cli.report import load_schema

    folder, _ = family
    longer = [*SHARED, {"frame": 32, "position": [0.1, 0.1, 0.8], "yaw": 0}]
    named = spec(folder, "named.yaml", longer, 33, **{"from": "parent@3", "output": "named-branch"})
    leftover = folder / "parent" / "state" / ".tmp-ckpt-000099-999999999-ab"  # a dead process's save: the parent's, not ours
    leftover.mkdir()
    try:
        shown = cli("validate", named)
        assert shown.exit_code == 0 and f"{folder / 'parent'}@3" in shown.stdout, shown.output
        done = cli("render", named, *TINY)
        assert done.exit_code == 0, done.output
        assert leftover.is_dir()  # reading a parent never cleans it
    finally:
        shutil.rmtree(leftover, ignore_errors=True)
    run = folder / "named-branch"
    assert (run / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()
    report = json.loads((run / "report.json").read_text())
    jsonschema.validate(report, load_schema())
    assert report["lineage"]["parent"] == str((folder / "parent").resolve()) and report["lineage"]["chunk"] == 3
    assert f"branch of {(folder / 'parent').resolve()} after chunk 3" in (run / "report.html").read_text()
    assert json.loads((folder / "scratch" / "report.json").read_text())["lineage"] is None  # a run from its start image
    listed = cli("inspect", folder / "parent")
    assert f"branches          {run} (from chunk 3)" in listed.stdout, listed.stdout
    as_json = json.loads(cli("inspect", folder / "parent", "--json").stdout)
    assert [b["run_dir"] for b in as_json["branches"]] == [str(run)]
    assert as_json["branches"][0]["checkpoint_sha256"] == report["lineage"]["checkpoint_sha256"]
    assert json.loads(cli("inspect", run, "--json").stdout)["branches"] == []


@pytest.mark.parametrize(("value", "expected"), [
    ("parent@0", "from: expected RUN or RUN@CHUNK with CHUNK a number of finished chunks (>= 1), got 'parent@0'"),
    ("", "from: expected RUN or RUN@CHUNK (a run directory), got ''"),
    ("runs/own", "from: names this spec's own run directory"),
])
def test_a_bad_from_in_the_spec_is_one_line_naming_it(tmp_path, value, expected):
    path = spec(tmp_path, "bad.yaml", SHARED, 25, **{"from": value, "output": "runs/own"})
    for command in ("validate", "render"):
        result = cli(command, path, *(TINY if command == "render" else []))
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and expected in errors[0] and "bad.yaml" in errors[0], result.stderr


def test_validate_warns_of_a_parent_a_render_would_refuse_and_the_render_refuses_it(tmp_path):
    """A branch's spec is often written before its parent has rendered: ``validate`` says what a render
    would refuse now as a warning (exit 0); the render refuses it in one line (exit 2)."""
    path = spec(tmp_path, "early.yaml", SHARED, 25, **{"from": "parent@2"})
    shown = cli("validate", path)
    assert shown.exit_code == 0, shown.stderr
    assert "warning: from: " in shown.stderr and "parent@2: the parent run directory does not exist" in shown.stderr
    refused = cli("render", path, *TINY)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.exit_code == 2 and len(errors) == 1 and "from: the parent run directory does not exist" in errors[0], refused.stderr
    assert not (tmp_path / "runs").exists()


def test_a_parent_still_being_written_is_refused(tmp_path):
    """A parent render that is running (its lock held by a live process) is refused, naming the
    holder; the branch directory is not created. The parent is a real render paused mid-chunk."""
    parent_spec = spec(tmp_path, "parent.yaml", SHARED, 25)
    branch = spec(tmp_path, "branch.yaml", [*SHARED, {"frame": 32, "position": [0.1, 0.1, 0.8], "yaw": 0}], 33)
    child = paused_render(parent_spec, tmp_path / "parent")
    try:
        for line in child.stderr:
            event = json.loads(line)
            if event["event"] == "step" and event.get("chunk") == 1:  # chunk 0 is saved, chunk 1 is being written
                break
        result = cli("render", branch, "--out", tmp_path / "b", "--from", f"{tmp_path / 'parent'}@1", *TINY)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert "the parent is being written" in errors[0] and f"pid {child.pid}" in errors[0], errors
    assert not (tmp_path / "b").exists()


def test_a_started_branch_resumes_without_its_parent(family, tmp_path):
    """Once a branch has started it holds what it needs (its prefix by hard link, its own checkpoint): a
    branch stopped mid-chunk resumes to the same bytes with the parent moved away, the parent named by
    another spelling of its path."""
    folder, branch = family
    run = tmp_path / "b"
    stopped_branch(branch, run, folder / "parent")
    moved = folder / "parent-moved"
    os.rename(folder / "parent", moved)
    try:
        resumed = cli("render", branch, "--out", run, "--from", folder / "scratch" / ".." / "parent", *TINY)  # another spelling
    finally:
        os.rename(moved, folder / "parent")
    assert resumed.exit_code == 0, resumed.output
    assert (run / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()


def test_mirage_batch_fans_out_branches_named_in_their_specs(family, tmp_path):
    """``mirage batch`` of two specs with the same ``from:``: each branch renders only its new chunk, the
    one whose path is the family's branch equals that spec rendered from scratch, the parent is unchanged."""
    folder, _ = family
    before = tree_hashes(folder / "parent")
    parent = str((folder / "parent").resolve())
    ahead = spec(tmp_path, "ahead.yaml", [*SHARED, {"frame": 32, "position": [0.1, 0.1, 0.8], "yaw": 0}], 33, **{"from": parent})
    aside = spec(tmp_path, "aside.yaml", [*SHARED, {"frame": 32, "position": [0.6, 0.0, 0.4], "yaw": 80}], 33, **{"from": parent})
    cmd = [sys.executable, "-m", "mirage_cli", "batch", ahead, aside, "--executor", "local", "--out-root", str(tmp_path / "out"),
           "--json", "--", "--preset", "tiny", "--steps", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scenes = json.loads(proc.stdout)["scenes"]
    assert [s["status"] for s in scenes] == ["done", "done"]
    for s in scenes:
        assert json.loads((Path(s["run_dir"]) / "run.json").read_text())["lineage"]["parent"] == parent
        assert "chunk 4/4 done" in proc.stderr and "chunk 1/4 done" not in proc.stderr  # only the new chunk rendered
    assert (Path(scenes[0]["run_dir"]) / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()
    assert (Path(scenes[1]["run_dir"]) / "video.mp4").read_bytes() != (folder / "scratch" / "video.mp4").read_bytes()
    assert tree_hashes(folder / "parent") == before


def test_a_branch_after_chunk_1_killed_mid_chunk_resumes_to_the_bytes_from_scratch(family, tmp_path):
    """The issue's case: a branch after chunk 1 of the 3-chunk parent, SIGKILLed inside its second
    chunk (chunk 3 of 4), resumed: the video a render of its spec from scratch gives."""
    folder, branch = family
    run = tmp_path / "b"
    child = paused_render(branch, run, "--from", f"{folder / 'parent'}@1")
    chunks = []
    for line in child.stderr:
        event = json.loads(line)
        if event["event"] == "step":
            chunks.append(event["chunk"])
            if event["chunk"] == 2:  # the branch's first chunk (index 1) is saved; index 2 is being denoised
                child.kill()
                break
    child.wait()
    child.stderr.close()
    assert chunks[0] == 1 and chunks[-1] == 2, chunks  # the branch started after the parent's chunk 1
    resumed = cli("render", branch, "--out", run, "--from", f"{folder / 'parent'}@1", *TINY)
    assert resumed.exit_code == 0, resumed.output
    assert (run / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()


def test_an_at_sign_in_a_folder_name_is_part_of_the_name(tmp_path):
    """Only a number after the last ``@`` is a chunk; a folder named ``take@2`` beside no ``take`` is
    that folder; a bad chunk is still refused."""
    from mirage_cli.spec.branch_source import BranchSource, parse_branch_source

    assert parse_branch_source("runs/take@night", "from", tmp_path) == BranchSource(tmp_path / "runs" / "take@night", None, "from")
    assert parse_branch_source("a@b/run@2", "from", tmp_path) == BranchSource(tmp_path / "a@b" / "run", 2, "from")
    assert parse_branch_source("take@2", "from", tmp_path).chunk == 2  # neither exists: RUN@CHUNK
    (tmp_path / "take@2").mkdir()
    assert parse_branch_source("take@2", "from", tmp_path) == BranchSource(tmp_path / "take@2", None, "from")
    (tmp_path / "take").mkdir()  # both exist: RUN@CHUNK, as written
    assert parse_branch_source("take@2", "from", tmp_path).chunk == 2
    assert parse_branch_source("take@2/", "from", tmp_path).chunk == 2  # a trailing slash
    for bad in ("take@0", "take@-1", "take@", "@3"):
        with pytest.raises(ValueError, match="CHUNK a number of finished chunks"):
            parse_branch_source(bad, "from", tmp_path)
    for bad, problem in (("~no-such-user-here/run", "cannot expand"), ("run\0x", "NUL")):
        with pytest.raises(ValueError, match=problem):
            parse_branch_source(bad, "from", tmp_path)


def test_a_branch_start_killed_before_its_checkpoint_is_started_again(family, tmp_path):
    """SIGKILL while the prefix is being linked (after ``run.json``, before the branch's checkpoint): the
    next render of the branch starts it again, links and all, instead of refusing a directory that
    holds another render; same bytes as from scratch, the parent untouched."""
    import time

    folder, branch = family
    before = tree_hashes(folder / "parent")
    run = tmp_path / "b"
    cmd = [sys.executable, "-m", "mirage_cli", "render", branch, "--out", str(run), "--from", str(folder / "parent"),
           "--preset", "tiny", "--steps", "3", "--quiet"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "MIRAGE_TEST_PAUSE": "branch_link=30"})
    deadline = time.monotonic() + 120
    while not (run / "segments").is_dir() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.kill()
    child.wait()
    assert (run / "run.json").is_file() and (run / "segments").is_dir() and not any((run / "state").glob("ckpt-*"))
    done = cli("render", branch, "--out", run, "--from", folder / "parent", *TINY)
    assert done.exit_code == 0, done.output
    assert (run / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()
    first = "segments/chunk_0000.mp4"
    assert os.stat(run / first).st_ino == os.stat(folder / "parent" / first).st_ino
    assert tree_hashes(folder / "parent") == before
