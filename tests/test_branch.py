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
    assert lineage["parent"] == str((folder / "parent").absolute()) and lineage["chunk"] == 3
    manifest = folder / "parent" / "state" / lineage["checkpoint"] / "manifest.json"
    assert lineage["checkpoint_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    for k in range(3):  # the prefix is shared, not copied
        assert os.stat(tmp_path / "b" / "segments" / f"chunk_{k:04d}.mp4").st_ino == \
            os.stat(folder / "parent" / "segments" / f"chunk_{k:04d}.mp4").st_ino
    shown = cli("inspect", tmp_path / "b")
    assert f"branch of         {(folder / 'parent').absolute()} after chunk 3" in shown.stdout
    again = cli("render", branch, "--out", tmp_path / "b", "--from", folder / "parent", *TINY)  # finished: nothing to do
    assert again.exit_code == 0 and (tmp_path / "b" / "video.mp4").read_bytes() == (folder / "scratch" / "video.mp4").read_bytes()


def test_a_stopped_branch_resumes_to_the_same_bytes(family, tmp_path):
    folder, branch = family
    run = tmp_path / "b"
    cmd = [sys.executable, "-m", "mirage_cli", "render", branch, "--out", str(run), "--from", str(folder / "parent"),
           "--preset", "tiny", "--steps", "3", "--progress", "jsonl"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "MIRAGE_TEST_PAUSE": "denoise_step=0.5"})
    for line in child.stderr:
        if json.loads(line)["event"] == "step":
            child.send_signal(signal.SIGTERM)
            break
    child.stderr.read()
    assert child.wait() == 75
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
        (spec(tmp_path, "ok.yaml", longer, 33), f"{parent}@x", "expected RUN or RUN@CHUNK"),
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


def test_a_branch_after_the_first_chunk_of_three_takes_another_way(family, tmp_path):
    """The parent keeps its state after every chunk: a branch after chunk 1 follows another path from
    frame 8 on, and still equals its spec rendered from scratch."""
    folder, _ = family
    turn = [SHARED[0], {"frame": 8, "position": [0.1, 0.0, 0.15], "yaw": 10}, {"frame": 24, "position": [-0.3, 0.0, 0.5], "yaw": -30}]
    parent_path = spec(tmp_path, "first.yaml", [SHARED[0], {"frame": 8, "position": [0.1, 0.0, 0.15], "yaw": 10}, *SHARED[1:]], 25)
    assert cli("render", parent_path, "--out", tmp_path / "parent", *TINY).exit_code == 0
    other = spec(tmp_path, "other.yaml", turn, 25)
    assert cli("render", other, "--out", tmp_path / "scratch", *TINY).exit_code == 0
    done = cli("render", other, "--out", tmp_path / "b", "--from", f"{tmp_path / 'parent'}@1", *TINY)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "b" / "video.mp4").read_bytes() == (tmp_path / "scratch" / "video.mp4").read_bytes()
    assert json.loads((tmp_path / "b" / "run.json").read_text())["lineage"]["chunk"] == 1
