"""Video files with PyAV: H.264 MP4 and lossless FFV1 MKV segments, assembly by packet copy, PNG frames.

**Same frames, same bytes.** Every encoder setting that could make the output depend on the machine
or on timing is set explicitly (``H264_OPTIONS``):

- ``threads`` is fixed (``H264_THREADS``). x264's automatic thread count follows the CPUs the
  process may use (its affinity), and the bitstream depends on the thread count: the same frames
  encoded by a process allowed one CPU and by one allowed two give different files
  (tests/test_video.py shows it). A render resumed on another node, or under another CPU
  allocation, must not change its segments.
- frame threads, not sliced threads (PyAV opens encoders with the slice thread type, which selects
  x264's sliced threads), with x264's ``deterministic`` mode and ``cpu-independent`` (no
  CPU-specific algorithm choices, so nodes with other instruction sets give the same bytes);
- macroblock-tree rate control off (``mbtree=0``): renders of this project on a busy machine were
  measured to give different bytes with it and the same bytes without it; it is also the one part of
  x264's rate control that runs in floating point through the lookahead. It costs bits at the same
  ``crf`` (docs/reliability.md, "Reproducible video", has the numbers).
- The containers are written ``bitexact``: no library version strings or random ids in the file.

**Segments and assembly.** Every chunk is written as a segment as soon as it is rendered; a chunk
after the first is written without its first frame (it repeats the previous chunk's last frame), so
the final video is the segments' packets copied one after another with shifted timestamps: no
second encode, no second generation of loss, and its decoded frames are exactly the segments'.

Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mirage_cli.base.atomic import atomic_path

H264_THREADS = 4
"""x264 frame threads, fixed so that the bytes do not depend on the machine (any count would do)."""
H264_OPTIONS = "threads={threads}:sliced-threads=0:deterministic=1:cpu-independent=1:mbtree=0"
"""x264 parameters that make the encode reproducible (module docstring)."""
BITEXACT = {"fflags": "+bitexact"}
"""Container options: no version strings or random ids in the written file."""
FFV1_OPTIONS = {"level": "3", "slices": "4", "slicecrc": "1", "context": "1"}
"""FFV1 version 3 (intra only), 4 slices with CRCs, the large context model: lossless, checkable, seekable."""
PNG_COMPRESS_LEVEL = 6


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    return np.ascontiguousarray(frame)


def _encode(path, frames: Iterable[np.ndarray], fps: float, *, fmt: str, codec: str, pix_fmt: str, options: dict) -> int:
    """Encode RGB frames into a new file ``path`` (atomically); returns the number of frames."""
    count = 0
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        container = av.open(str(tmp), mode="w", format=fmt, options=dict(BITEXACT))
        try:
            stream = None
            for frame in frames:
                frame = _check_frame(frame)
                if stream is None:
                    h, w = frame.shape[:2]
                    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
                        raise ValueError(f"frames: H and W must be even for yuv420p, got {h}x{w}")
                    stream = container.add_stream(codec, rate=_fps_fraction(fps))
                    stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
                    stream.codec_context.thread_count = 1  # the codec's own threads are set in ``options``
                    stream.options = options
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError("frames: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return count


def h264_options(crf: int = 18, preset: str = "medium") -> dict:
    """libx264 options for ``write_mp4``: quality (``crf``), speed (``preset``) and ``H264_OPTIONS``."""
    return {"crf": str(int(crf)), "preset": str(preset), "x264-params": H264_OPTIONS.format(threads=H264_THREADS)}


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 18, preset: str = "medium") -> int:
    """Encode RGB frames to an H.264 yuv420p MP4, reproducibly and atomically.

    Args:
        path: destination ``.mp4``.
        frames: iterable of uint8 [H, W, 3] RGB arrays, all the same size; H and W must be even.
        fps: frames per second.
        crf: x264 constant rate factor (lower is better quality; 0-51).
        preset: x264 speed preset (``ultrafast`` ... ``veryslow``).

    Returns:
        The number of frames written.
    """
    return _encode(path, frames, fps, fmt="mp4", codec="libx264", pix_fmt="yuv420p", options=h264_options(crf, preset))


def write_lossless(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> int:
    """Encode RGB frames losslessly: FFV1 on the RGB samples themselves (``bgr0``: the three colour
    bytes reordered and padded, no colour conversion) in Matroska.

    Decoding gives back exactly ``frames``. Arguments and result as ``write_mp4`` (any H, W).
    """
    return _encode(path, frames, fps, fmt="matroska", codec="ffv1", pix_fmt="bgr0", options=dict(FFV1_OPTIONS))


def concat_segments(segments: Sequence[str | os.PathLike], dest: str | os.PathLike) -> int:
    """Join segment files into ``dest`` by copying their packets, timestamps shifted (no re-encode).

    Every segment must come from the same encoder settings (``write_mp4`` or ``write_lossless``)
    at the same size and rate. The decoded frames of ``dest`` are the segments' decoded frames, in
    order. Written atomically; returns the number of frames.
    """
    if not segments:
        raise ValueError("segments: nothing to join")
    fmt = "matroska" if Path(dest).suffix.lower() == ".mkv" else "mp4"
    count = 0
    with atomic_path(dest, suffix=Path(dest).suffix) as tmp:
        with av.open(str(segments[0])) as first:
            template = first.streams.video[0]
            out = av.open(str(tmp), mode="w", format=fmt, options=dict(BITEXACT))
            try:
                out_stream = out.add_stream_from_template(template)
                offset = 0  # in the segments' time base
                for segment in segments:
                    offset, added = _copy_packets(segment, out, out_stream, offset)
                    count += added
            finally:
                out.close()
    return count


def _copy_packets(segment, out, out_stream, offset: int) -> tuple[int, int]:
    """Mux every packet of ``segment`` into ``out`` with ``offset`` added to its timestamps.

    Returns the offset of the next segment (this one's end) and the number of frames copied.
    """
    with av.open(str(segment)) as container:
        stream = container.streams.video[0]
        frame_ticks = int(round(1 / (float(stream.average_rate or stream.base_rate) * float(stream.time_base))))
        frames, end = 0, offset
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            packet.pts += offset
            packet.dts += offset
            end = max(end, packet.pts + frame_ticks)
            packet.stream = out_stream
            out.mux(packet)
            frames += 1
    return end, frames


@dataclass(frozen=True)
class VideoHeader:
    """What a video file states about its first video stream, from the container's and the stream's
    headers (no frame decoded): ``width`` x ``height`` in pixels, ``fps`` (0.0 where none is stated)
    and ``frames``, the frame count the container records (None where it records none, as Matroska
    does). A damaged or hostile file may state anything: ``read_video`` checks what it decodes."""

    width: int
    height: int
    fps: float
    frames: int | None


class VideoBoundError(ValueError):
    """A decoded frame is not of the size ``read_video`` was told to expect."""


def read_header(path: str | os.PathLike) -> VideoHeader:
    """The ``VideoHeader`` of a video file. Raises PyAV's errors (ValueError subclasses) for a file
    that is no video container, ValueError for one without a video stream."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("holds no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        return VideoHeader(width=int(stream.codec_context.width or 0), height=int(stream.codec_context.height or 0),
                           fps=float(rate) if rate else 0.0, frames=int(stream.frames) if stream.frames else None)


def read_video(path: str | os.PathLike, max_frames: int | None = None,
               size: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file to uint8 [T, H, W, 3] RGB frames and its fps (0.0 where the file states none).

    ``max_frames``: only the first ``max_frames`` frames are decoded (ask for one more than wanted to
    tell a longer file). ``size`` (W, H): every frame must have it, else ``VideoBoundError`` at the
    first that does not. With both, the frames held never take more than max_frames x W x H x 3
    bytes, whatever the file's header says.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        frames = []
        for frame in container.decode(stream):
            if size is not None and (frame.width, frame.height) != tuple(size):
                raise VideoBoundError(f"frame {len(frames)} is {frame.width}x{frame.height}, not the {size[0]}x{size[1]} "
                                      "of the stream's header")
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) == max_frames:
                break
    if not frames:
        raise ValueError("holds no frames")
    return np.stack(frames), fps


def read_frames_at(path: str | os.PathLike, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """The frames ``indices`` (0-based) of a video as uint8 [H, W, 3] RGB, decoding in order and keeping
    only those: memory holds the chosen frames, not the video. Indices past the end are missing."""
    wanted, out = set(int(i) for i in indices), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted) or i >= max(wanted, default=-1):
                break
    return out


def probe_video(path: str | os.PathLike) -> dict:
    """Frame count (by decoding), fps, width and height of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return {
            "frames": n,
            "fps": float(stream.average_rate or stream.base_rate),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
        }


def video_problem(path: str | os.PathLike, frames: int) -> str | None:
    """What is wrong with a video file that should hold ``frames`` frames, or None.

    Reads every packet (no decode) and decodes the first frame: a truncated, empty or garbled file,
    one without a video stream, or one with another frame count is reported. Bounded by the file's
    size; a 1,000-chunk render's video checks in seconds.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "holds no video stream"
            stream = container.streams.video[0]
            count, decoded = 0, False
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                count += 1
                if not decoded:
                    decoded = any(True for _ in packet.decode())
            if count and not decoded:
                decoded = any(True for _ in stream.codec_context.decode(None))
    except FileNotFoundError:
        return "is missing"
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        return f"cannot be read ({e})"
    if count != frames:
        return f"holds {count} frames, expected {frames}"
    if not decoded:
        return "does not decode"
    return None


def write_png_frames(directory: str | os.PathLike, frames: np.ndarray, first_index: int) -> list[Path]:
    """Write uint8 [T, H, W, 3] frames as ``frame_{index:06d}.png`` (index from ``first_index``), each atomically."""
    from PIL import Image

    out = []
    for k, frame in enumerate(frames):
        path = Path(directory) / f"frame_{first_index + k:06d}.png"
        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(_check_frame(frame)).save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        out.append(path)
    return out


def to_uint8_frames(pixels) -> np.ndarray:
    """Convert a torch/numpy video in [-1, 1], shape [3, F, H, W], to uint8 [F, H, W, 3].

    A tensor is converted where it lives (on the GPU for a GPU render) and only the uint8 frames
    cross to the host: a quarter of the bytes of float32. The same float32 operations, one at a
    time, as the numpy path, so both give the same bytes.
    """
    if hasattr(pixels, "detach"):
        import torch

        if pixels.ndim != 4 or pixels.shape[0] != 3:
            raise ValueError(f"pixels: expected [3, F, H, W], got {list(pixels.shape)}")
        t = pixels.detach().float()
        t = ((t + 1.0) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)
        return np.ascontiguousarray(t.permute(1, 2, 3, 0).cpu().numpy())
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] != 3:
        raise ValueError(f"pixels: expected [3, F, H, W], got {list(arr.shape)}")
    arr = np.clip((arr + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 3, 0))
