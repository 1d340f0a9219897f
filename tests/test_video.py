"""Video files: the same frames give the same bytes on a busy machine and on any CPU allotment; joining
segments copies packets and keeps every decoded frame; lossless and PNG outputs are exact.

Real PyAV encoders (libx264, FFV1) on frames with the texture of a real render (fixed noise).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mirage_cli.base.video import (
    VideoBoundError,
    VideoHeader,
    concat_segments,
    probe_video,
    read_header,
    read_video,
    write_lossless,
    write_mp4,
    write_png_frames,
)


def frames(n: int = 17, h: int = 128, w: int = 192, seed: int = 0) -> np.ndarray:
    """uint8 [n, h, w, 3]: a moving texture plus noise (what tiny random models produce)."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
    return np.stack([(np.roll(base, 3 * i, axis=1) // 2 + rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)) for i in range(n)])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CpuHog:
    """Keeps every core busy with torch matmuls in threads of this process while the body runs."""

    def __enter__(self):
        self.stop = threading.Event()

        def work():
            a = torch.randn(400, 400)
            while not self.stop.is_set():
                a = torch.tanh(a @ a)

        self.threads = [threading.Thread(target=work) for _ in range(max(2, os.cpu_count() or 2))]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def test_same_frames_same_bytes_on_a_busy_machine(tmp_path):
    video = frames()
    hashes = set()
    with CpuHog():
        for i in range(6):
            write_mp4(tmp_path / f"v{i}.mp4", video, 8)
            hashes.add(sha(tmp_path / f"v{i}.mp4"))
    assert len(hashes) == 1


_ENCODE_PINNED = r"""
import os, sys
import numpy as np
os.sched_setaffinity(0, {int(c) for c in sys.argv[3].split(",")})
from mirage_cli.base.video import write_mp4
write_mp4(sys.argv[2], np.load(sys.argv[1]), 8)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs and affinity")
def test_same_bytes_whatever_cpus_the_process_may_use(tmp_path):
    """x264's automatic thread count follows the CPU affinity; the encoder settings pin it."""
    np.save(tmp_path / "f.npy", frames())
    cpus = sorted(os.sched_getaffinity(0))
    for name, allowed in (("one", [cpus[0]]), ("all", cpus)):
        arg = ",".join(map(str, allowed))
        subprocess.run([sys.executable, "-c", _ENCODE_PINNED, str(tmp_path / "f.npy"), str(tmp_path / f"{name}.mp4"), arg], check=True)
    assert sha(tmp_path / "one.mp4") == sha(tmp_path / "all.mp4")


def test_write_mp4_round_trip_and_atomicity(tmp_path):
    video = np.repeat(np.repeat(frames(9, 16, 24), 8, axis=1), 8, axis=2)  # [9, 128, 192, 3] in 8x8 blocks
    assert write_mp4(tmp_path / "a.mp4", video, 8, crf=0, preset="ultrafast") == 9
    assert probe_video(tmp_path / "a.mp4") == {"frames": 9, "fps": 8.0, "width": 192, "height": 128}
    decoded, fps = read_video(tmp_path / "a.mp4")
    assert decoded.shape == video.shape and fps == 8.0
    assert np.abs(decoded.astype(int) - video).mean() < 3  # crf 0: only the RGB -> YUV 4:2:0 rounding
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "b.mp4", video.astype(np.float32), 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # nothing half-written


def test_lossless_is_exact_and_png_frames_are_exact(tmp_path):
    video = frames(9, 64, 96)
    write_lossless(tmp_path / "a.mkv", video, 8)
    decoded, fps = read_video(tmp_path / "a.mkv")
    assert np.array_equal(decoded, video) and fps == 8.0
    paths = write_png_frames(tmp_path / "png", video, first_index=5)
    assert [p.name for p in paths][:2] == ["frame_000005.png", "frame_000006.png"]
    from PIL import Image

    assert np.array_equal(np.stack([np.asarray(Image.open(p)) for p in paths]), video)


@pytest.mark.parametrize("suffix, write", [(".mp4", write_mp4), (".mkv", write_lossless)])
def test_joined_segments_decode_to_the_segments_frames(tmp_path, suffix, write):
    """Chunks after the first are written without their shared first frame; joining copies packets."""
    chunk_frames = [frames(17, seed=s) for s in range(3)]
    segments = []
    for i, video in enumerate(chunk_frames):
        segments.append(tmp_path / f"chunk_{i}{suffix}")
        write(segments[-1], video if i == 0 else video[1:], 8)
    assert concat_segments(segments, tmp_path / f"video{suffix}") == 17 + 16 + 16
    joined, fps = read_video(tmp_path / f"video{suffix}")
    expected = np.concatenate([read_video(s)[0] for s in segments])
    assert fps == 8.0 and np.array_equal(joined, expected)
    first = sha(tmp_path / f"video{suffix}")
    concat_segments(segments, tmp_path / f"video{suffix}")
    assert sha(tmp_path / f"video{suffix}") == first  # joining is reproducible too


def test_the_header_states_size_rate_and_count_without_decoding(tmp_path):
    """MP4 records its frame count, Matroska does not; ``read_video`` bounds what it decodes."""
    video = frames(9, 64, 96)
    write_mp4(tmp_path / "a.mp4", video, 8, preset="ultrafast")
    write_lossless(tmp_path / "a.mkv", video, 8)
    assert read_header(tmp_path / "a.mp4") == VideoHeader(width=96, height=64, fps=8.0, frames=9)
    assert read_header(tmp_path / "a.mkv") == VideoHeader(width=96, height=64, fps=8.0, frames=None)
    first, _ = read_video(tmp_path / "a.mkv", max_frames=4, size=(96, 64))
    assert np.array_equal(first, video[:4])  # only the first frames are decoded
    with pytest.raises(VideoBoundError, match="frame 0 is 96x64, not the 64x64 of the stream's header"):
        read_video(tmp_path / "a.mkv", size=(64, 64))
    (tmp_path / "garbage.mp4").write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError):  # PyAV's errors are ValueErrors
        read_header(tmp_path / "garbage.mp4")
