"""Shared by the render tests: a small scene, the CLI in-process and in a child process, run-dir readers.

The small scene is the example room at 224x128 with 17 frames in two chunks of 9: every stage of
the real pipeline runs, in about a second per render once the libraries are imported. Renders that
do not need a separate process (signals, kills, locks held by another process) run the real CLI
in-process, which saves the ~5 s of importing torch and diffusers per child.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "room" / "scene.yaml"
SMALL = ["--preset", "tiny", "--steps", "3", "--quiet"]
"""The render options of the small-scene tests (tiny random components, 3 steps)."""


def write_small_scene(directory: Path, **changes) -> Path:
    """The example room at 224x128, 17 frames, chunks of 9, its assets by absolute path; ``changes``
    replace top-level fields. Returns the spec's path."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.update(
        image=str(EXAMPLE.parent / "start.png"),
        depth=str(EXAMPLE.parent / "depth.npy"),
        resolution="224x128",
        frames=17,
        chunk_frames=9,
    )
    spec["camera"]["keyframes"] = [
        {"frame": 0, "position": [0.0, 0.0, 0.0], "yaw": 0},
        {"frame": 8, "position": [0.3, 0.0, 0.4], "yaw": 30},
        {"frame": 16, "position": [0.0, 0.0, 0.0], "yaw": 0},
    ]
    spec.update(changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "scene.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(*args: str):
    """``mirage ARGS`` in this process (typer's CliRunner): ``.exit_code``, ``.stdout``, ``.stderr``."""
    from mirage_cli.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def child(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``mirage ARGS`` in a child process."""
    return subprocess.run([sys.executable, "-m", "mirage_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def final_checkpoint_tensors(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the run's newest checkpoint, keyed ``file/name``."""
    from safetensors.torch import load_file

    newest = sorted((run / "state").glob("ckpt-*"))[-1]
    return {f"{f.stem}/{k}": v for f in sorted(newest.glob("*.safetensors")) for k, v in load_file(f).items()}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names, dtypes, shapes and bytes (so NaN equals NaN: an unset voxel size is stored as NaN)."""

    def raw(t: torch.Tensor) -> bytes:
        return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()

    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and raw(a[k]) == raw(b[k]) for k in a)


def render_args(scene: Path, run: Path, memory: str = "latent") -> list[str]:
    return ["render", str(scene), "--out", str(run), "--memory", memory, *SMALL]


class Child:
    """``mirage render`` in a child process, with progress events read from its stderr."""

    def __init__(self, scene: Path, run: Path, pause: str, memory: str = "latent"):
        env = {**os.environ, "MIRAGE_TEST_PAUSE": pause}
        cmd = [sys.executable, "-m", "mirage_cli", *render_args(scene, run, memory), "--progress", "jsonl"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.events: list[dict] = []

    def wait_for(self, predicate) -> dict:
        """Read events until one satisfies ``predicate``; returns it."""
        for line in self.proc.stderr:
            event = json.loads(line)
            self.events.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"the render ended before the awaited event; events: {self.events}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()

    def finish(self) -> int:
        for line in self.proc.stderr:
            self.events.append(json.loads(line))
        self.proc.stderr.close()
        return self.proc.wait()


def step_of(chunk: int):
    return lambda e: e["event"] == "step" and e["chunk"] == chunk


def stopped_render(scene: Path, run: Path, memory: str = "latent") -> Path:
    """Render ``scene`` into ``run`` and stop it with SIGTERM inside chunk 1: ckpt-000001 (chunk 1)
    and ckpt-000002 (mid-chunk), chunk 0's segment and latents."""
    child = Child(scene, run, "denoise_step=0.5", memory)
    child.wait_for(step_of(1))
    child.proc.send_signal(signal.SIGTERM)
    assert child.finish() == 75
    assert sorted(p.name for p in (run / "state").iterdir()) == ["ckpt-000001", "ckpt-000002"]
    return run
