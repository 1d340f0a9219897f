"""What a branch costs: one chunk after a 10-chunk parent, against the parent itself.

Renders the example room with the tiny preset (CPU) as a 10-chunk parent, then a branch of it that adds
one chunk along another camera (``mirage render NEW --from PARENT``), in child processes as a user
runs them. Prints, measured in this one run: the branch's wall time against the parent's time per
chunk, and the disk the branch adds (files not shared with the parent by hard link) against the
parent's disk per chunk. Run: ``python benchmarks/branch_bench.py [--chunks 10] [--steps 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "room"


def write_spec(folder: Path, name: str, frames: int, end: list[float]) -> Path:
    """The example room at 224x128 in chunks of 9 frames, a linear path to ``end`` at the last frame (the
    branch adds one chunk: the paths agree up to the parent's last frame)."""
    keyframes = [{"frame": 0, "position": [0.0, 0.0, 0.0], "yaw": 0}, {"frame": 80, "position": [0.4, 0.0, 0.8], "yaw": 40}]
    if frames > 81:
        keyframes.append({"frame": frames - 1, "position": end, "yaw": 0})
    spec = {"prompt": "a room", "image": str(EXAMPLE / "start.png"), "depth": str(EXAMPLE / "depth.npy"), "depth_model": "none",
            "frames": frames, "chunk_frames": 9, "resolution": "224x128",
            "camera": {"keyframes": keyframes, "interpolation": "linear"}}
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def render(spec: Path, out: Path, steps: int, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mirage_cli", "render", str(spec), "--out", str(out), "--preset", "tiny",
                    "--steps", str(steps), "--quiet", *extra], check=True)
    return time.perf_counter() - t0


def own_bytes(run: Path) -> int:
    """Bytes of the files of ``run`` that no other directory shares (link count 1)."""
    return sum(p.stat().st_size for p in run.rglob("*") if p.is_file() and p.stat().st_nlink == 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    if args.chunks != 10:
        p.error("the path is laid out for 10 chunks")
    work = Path(tempfile.mkdtemp(prefix="mirage-branch-bench-"))
    try:
        parent = write_spec(work, "parent.yaml", 81, [])
        branch = write_spec(work, "branch.yaml", 89, [0.8, 0.1, 1.0])
        parent_s = render(parent, work / "parent", args.steps)
        branch_s = render(branch, work / "branch", args.steps, "--from", str(work / "parent"))
        parent_chunks = [c["wall_seconds"] for c in json.loads((work / "parent" / "report.json").read_text())["chunks"]]
        new_chunk = json.loads((work / "branch" / "report.json").read_text())["chunks"][-1]["wall_seconds"]
        per_chunk = sorted(parent_chunks)[len(parent_chunks) // 2]
        parent_segments = sum(p.stat().st_size for d in ("segments", "latents") for p in (work / "parent" / d).glob("*"))
        added = {part: own_bytes(work / "branch" / part) for part in ("segments", "latents", "state")}
        rest = own_bytes(work / "branch") - sum(added.values())
        print(f"parent: {args.chunks} chunks in {parent_s:.1f} s of process time; a chunk (median of its report) "
              f"{per_chunk:.2f} s; segments and latents {parent_segments / args.chunks / 2**10:.0f} KiB a chunk")
        print(f"branch of one more chunk: {branch_s:.1f} s of process time, {branch_s / parent_s:.2f}x the parent's "
              f"(the model load and start are the same for both); its chunk {new_chunk:.2f} s = {new_chunk / per_chunk:.2f}x "
              "the parent's chunk")
        print(f"disk the branch adds: segments and latents {(added['segments'] + added['latents']) / 2**10:.0f} KiB "
              f"({(added['segments'] + added['latents']) / (parent_segments / args.chunks):.2f}x a parent chunk's), its own "
              f"checkpoints {added['state'] / 2**10:.0f} KiB, report and the rest {rest / 2**10:.0f} KiB; the prefix is "
              "shared by hard link")
        print(f"(this machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the end)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
