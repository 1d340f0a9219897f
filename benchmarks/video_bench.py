"""What reproducible encoding costs, and how long assembling a long render takes (one run, ratios).

    python benchmarks/video_bench.py [--frames 121] [--width 1280] [--height 704] [--chunks 100]

1. One chunk (121 frames at 1280x704 by default, the synthetic room along a slow camera move, so the
   content has real structure) encoded with the previous settings (x264 defaults as PyAV opens them:
   automatic threads, sliced threads, macroblock-tree rate control) and with ``mirage_cli.base.video``'s
   reproducible settings, at the same crf and preset: seconds, size, PSNR against the frames. Also
   whether the previous settings give the same bytes when the process may use one CPU or all of them
   (x264's automatic thread count follows the CPU affinity).
2. Assembly of ``--chunks`` segments of that chunk: packet copy (``concat_segments``) against the
   previous decode-and-encode-again, the latter timed on a few segments and scaled per frame.

Prints a Markdown table; nothing is asserted (tests assert behaviour, benchmarks report numbers).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from mirage_cli.base.video import concat_segments, read_video, write_mp4
from mirage_cli.testing import synthetic_room as S

PREVIOUS = {"crf": "18", "preset": "medium"}  # what write_mp4 set before; PyAV's defaults did the rest


def room_frames(n: int, width: int, height: int) -> np.ndarray:
    """uint8 [n, H, W, 3]: the synthetic room seen from a camera moving slowly forward and turning."""
    K = torch.tensor(S.intrinsics(height, width))
    out = []
    for i in range(n):
        world_from_cam = torch.tensor(S.world_from_cam((0.004 * i, 0.0, 0.006 * i), 0.25 * i))
        rgb, _ = S.render(K, world_from_cam, height, width)
        out.append((rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    return np.stack(out)


def encode_previous(frames: np.ndarray, fps: float) -> bytes:
    """The previous encode: libx264 with crf/preset only, as PyAV opens it (thread count 0 = auto,
    thread type slice)."""
    import av

    buf = io.BytesIO()
    container = av.open(buf, mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    stream.options = dict(PREVIOUS)
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return buf.getvalue()


def psnr(path: Path, frames: np.ndarray) -> float:
    decoded, _ = read_video(path)
    mse = float(((decoded.astype(np.float64) - frames) ** 2).mean())
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


_PINNED = r"""
import os, sys, hashlib
import numpy as np
sys.path.insert(0, sys.argv[3])
os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
from video_bench import encode_previous
print(hashlib.sha256(encode_previous(np.load(sys.argv[1]), 24.0)).hexdigest())
"""


def previous_bytes_by_cpus(frames_file: Path) -> dict[str, str]:
    """sha256 of the previous encode in a process allowed one CPU, and in one allowed all of them."""
    cpus = sorted(os.sched_getaffinity(0))
    out = {}
    for name, allowed in (("one CPU", cpus[:1]), (f"{len(cpus)} CPUs", cpus)):
        proc = subprocess.run([sys.executable, "-c", _PINNED, str(frames_file), ",".join(map(str, allowed)), str(Path(__file__).parent)],
                              capture_output=True, text=True, check=True)
        out[name] = proc.stdout.strip()[:12]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--chunks", type=int, default=100)
    args = parser.parse_args()
    fps = 24.0
    print(f"rendering {args.frames} frames of the synthetic room at {args.width}x{args.height} ...", file=sys.stderr)
    frames = room_frames(args.frames, args.width, args.height)
    with tempfile.TemporaryDirectory(prefix="mirage-video-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        (tmp / "previous.mp4").write_bytes(encode_previous(frames, fps))
        t_prev = time.perf_counter() - t
        t = time.perf_counter()
        write_mp4(tmp / "now.mp4", frames, fps)
        t_now = time.perf_counter() - t
        np.save(tmp / "frames.npy", frames)
        by_cpus = previous_bytes_by_cpus(tmp / "frames.npy") if hasattr(os, "sched_setaffinity") else {}
        now_again = hashlib.sha256((tmp / "now.mp4").read_bytes()).hexdigest()[:12]

        print(f"\n### One chunk: {args.frames} frames at {args.width}x{args.height}, crf 18, preset medium\n")
        print("| settings | encode | size | PSNR |")
        print("|---|---:|---:|---:|")
        for name, path, seconds in (("previous (auto threads, sliced, mbtree)", tmp / "previous.mp4", t_prev),
                                    ("reproducible (4 frame threads, cpu-independent, mbtree=0)", tmp / "now.mp4", t_now)):
            print(f"| {name} | {seconds:.2f} s | {path.stat().st_size / 1e6:.2f} MB | {psnr(path, frames):.2f} dB |")
        print(f"\nencode time now/previous {t_now / t_prev:.2f}x, size now/previous "
              f"{(tmp / 'now.mp4').stat().st_size / (tmp / 'previous.mp4').stat().st_size:.2f}x")
        if by_cpus:
            print(f"previous settings, sha256 by CPUs the process may use: {by_cpus}; reproducible settings: {now_again} always")

        # Assembly: chunk 0 whole, later chunks without their first frame.
        shutil.copy(tmp / "now.mp4", tmp / "seg0.mp4")
        write_mp4(tmp / "segN.mp4", frames[1:], fps)
        segments = [tmp / "seg0.mp4"] + [tmp / "segN.mp4"] * (args.chunks - 1)
        t = time.perf_counter()
        n = concat_segments(segments, tmp / "video.mp4")
        t_copy = time.perf_counter() - t
        few = min(3, args.chunks)
        t = time.perf_counter()
        decoded = np.concatenate([read_video(s)[0] for s in segments[:few]])
        write_mp4(tmp / "reencoded.mp4", decoded, fps)
        t_reencode_few = time.perf_counter() - t
        per_frame = t_reencode_few / len(decoded)
        print(f"\n### Assembly of {args.chunks} chunks ({n} frames)\n")
        print(f"packet copy: {t_copy:.2f} s; decode + encode again: {per_frame * n:.0f} s "
              f"(measured on {few} segments, {len(decoded)} frames, scaled per frame); ratio {per_frame * n / t_copy:.0f}x")


if __name__ == "__main__":
    main()
