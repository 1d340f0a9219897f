"""The videos users give (``mirage eval``'s measured and reference videos, a clip a camera path is
estimated from): checked from their headers before any frame is decoded, then decoded within the
bound those checks allow.

A video is a regular file (``base.files``); its header must state a frame size of at least
``MIN_SIDE`` pixels a side (OpenCV's DIS flow refuses frames under 12 pixels and crashes on some
12-15 pixels high) and within ``limits.MAX_SIDE`` / ``limits.MAX_PIXELS``, at most
``limits.MAX_FRAMES`` frames, and the frames eval must hold (``frames`` x width x height) must stay
within ``limits.MAX_EVAL_PIXELS``. Decoding then stops at the first frame past the count wanted and
refuses a frame of another size than the header's, so a file whose header lies cannot make it hold more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.files import check_file
from mirage_cli.base.limits import MAX_EVAL_PIXELS, MAX_FPS, MAX_FRAMES, MAX_PIXELS, MAX_SIDE, MIN_FPS
from mirage_cli.base.video import VideoBoundError, VideoHeader, read_header, read_video

MIN_SIDE = 32
"""Smallest frame side measured (module docstring; SSIM's window is 11 pixels too)."""
MAX_VIDEO_BYTES = 64 << 30
"""Size of a video file (64 GiB); what it decodes to is bounded by ``limits.MAX_EVAL_PIXELS``."""


def problem(path, field: str | None, message: str) -> InputError:
    """The InputError of one problem with ``path``."""
    return InputError(Problem(file=str(path), field=field, message=message))


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"


def video_header(path: Path, field: str, *, check_fps: bool = True) -> VideoHeader:
    """The header of the video at ``path``, checked (module docstring); ``check_fps``: its frame rate
    must be stated and within ``limits.MIN_FPS`` .. ``limits.MAX_FPS``."""
    check_file(path, MAX_VIDEO_BYTES, field=field)
    try:
        header = read_header(path)
    except Exception as exc:  # PyAV raises its own errors for every kind of damage
        raise problem(path, field, f"cannot be read as a video ({_short(exc)})") from None
    w, h = header.width, header.height
    if w < 1 or h < 1:
        raise problem(path, field, "states no frame size: a damaged video, or not one")
    if min(w, h) < MIN_SIDE:
        raise problem(path, field, f"has frames of {w}x{h} pixels; eval's optical flow needs at least {MIN_SIDE} pixels a side")
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise problem(path, field, f"has frames of {w}x{h} pixels, beyond the limit of {MAX_SIDE} pixels a side and "
                                   f"{MAX_PIXELS:,} pixels a frame")
    if header.frames is not None and header.frames > MAX_FRAMES:
        raise problem(path, field, f"states {header.frames:,} frames, more than the limit of {MAX_FRAMES:,}")
    if check_fps and not MIN_FPS <= header.fps <= MAX_FPS:
        raise problem(path, field, f"states a frame rate of {header.fps:g} fps; eval reads videos of {MIN_FPS:g} to "
                                   f"{MAX_FPS:g} fps")
    return header


def check_total(path: Path, field: str, header: VideoHeader, frames: int) -> None:
    """Refuse a video whose ``frames`` (or its stated count, when more) at its size are more pixels than
    eval holds at once (``limits.MAX_EVAL_PIXELS``)."""
    count = max(frames, header.frames or 0)
    total = count * header.width * header.height
    if total > MAX_EVAL_PIXELS:
        raise problem(path, field, f"{count:,} frames of {header.width}x{header.height} are {total:,} pixels, more than "
                                   f"eval holds at once ({MAX_EVAL_PIXELS:,}); measure a shorter part or a smaller copy")


def decode(path: Path, field: str, header: VideoHeader, frames: int) -> np.ndarray:
    """The frames uint8 [T, H, W, 3] of the video at ``path`` (``header`` checked), at most ``frames``
    + 1 of them decoded (T = frames + 1: the file holds more than wanted); a frame of another size
    than the header's is refused."""
    try:
        decoded, _ = read_video(path, max_frames=frames + 1, size=(header.width, header.height))
    except VideoBoundError as exc:
        raise problem(path, field, str(exc)) from None
    except Exception as exc:  # PyAV raises its own errors for every kind of damage
        raise problem(path, field, f"cannot be decoded as a video ({_short(exc)})") from None
    return decoded
