"""MP4 writing and reading with PyAV (H.264, yuv420p).

Segments are written atomically (temporary file, then rename), so a segment on disk is always
complete. The final video is the segments in order with the first frame of every later segment
dropped (it repeats the previous segment's last frame).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction

import av
import numpy as np

from mirage_cli.atomic import atomic_path


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Encode RGB frames to an H.264 yuv420p MP4, atomically.

    Args:
        path: destination ``.mp4``.
        frames: iterable of uint8 [H, W, 3] RGB arrays, all the same size; H and W must be even.
        fps: frames per second.
        crf: x264 constant rate factor (lower is better quality).

    Returns:
        The number of frames written.
    """
    count = 0
    with atomic_path(path, suffix=".mp4") as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = None
            for frame in frames:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise ValueError(f"frames: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
                if stream is None:
                    h, w = frame.shape[:2]
                    if h % 2 or w % 2:
                        raise ValueError(f"frames: H and W must be even for yuv420p, got {h}x{w}")
                    stream = container.add_stream("libx264", rate=_fps_fraction(fps))
                    stream.width, stream.height = w, h
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "medium"}
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError("frames: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return count


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode an MP4 to uint8 [T, H, W, 3] RGB frames and its fps."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.base_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames), fps


def probe_mp4(path: str | os.PathLike) -> dict:
    """Frame count (by decoding), fps, width and height of an MP4."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return {
            "frames": n,
            "fps": float(stream.average_rate or stream.base_rate),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
        }


def concat_segments(segments: Sequence[str | os.PathLike], dest: str | os.PathLike, fps: float) -> int:
    """Join segment MP4s into ``dest``, dropping the first frame of every segment after the first.

    Re-encodes (segments are short and this keeps the result a single clean stream).
    Returns the number of frames written.
    """

    def frames():
        for i, seg in enumerate(segments):
            with av.open(str(seg)) as container:
                for j, f in enumerate(container.decode(container.streams.video[0])):
                    if i > 0 and j == 0:
                        continue
                    yield f.to_ndarray(format="rgb24")

    return write_mp4(dest, frames(), fps)


def to_uint8_frames(pixels) -> np.ndarray:
    """Convert a torch/numpy video in [-1, 1], shape [3, F, H, W], to uint8 [F, H, W, 3]."""
    arr = pixels.detach().float().cpu().numpy() if hasattr(pixels, "detach") else np.asarray(pixels, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] != 3:
        raise ValueError(f"pixels: expected [3, F, H, W], got {list(arr.shape)}")
    arr = np.clip((arr + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 3, 0))
