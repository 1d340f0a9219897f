"""``mirage eval --reference``: ground-truth frames, a video or a folder of images in name order, one
per frame of the measured video and at its size.

Everything that can be told from the headers is checked before any pixel is decoded: the count, each
image's size (Pillow reads it from the header; a decompression bomb is refused by its stated size),
each file being a regular file within ``limits.MAX_IMAGE_BYTES``, a reference video's header
(``video_file``). Only then are the frames decoded, into one array as large as the measured video's.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from mirage_cli.base.files import check_file
from mirage_cli.base.limits import MAX_IMAGE_BYTES
from mirage_cli.base.video import VideoHeader
from mirage_cli.base.video_input import check_total, decode, problem, video_header

FIELD = "--reference"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
"""The image formats read (by content, whatever the suffix): Pillow's other decoders are never reached."""


def _open(path: Path) -> Image.Image:
    """The image at ``path``, its header read (no pixel decoded); InputError for anything else."""
    check_file(path, MAX_IMAGE_BYTES, field=FIELD)
    try:
        with warnings.catch_warnings():  # Pillow warns between 1x and 2x its own limit; the size check says it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:  # more than twice Pillow's limit: refused from the header
        stated = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(stated.group(1)):,} pixels" if stated else "too many pixels"
        raise problem(path, FIELD, f"states {count}, far beyond a frame (a decompression bomb?)") from None
    except Image.UnidentifiedImageError:
        raise problem(path, FIELD, "not an image this tool reads (PNG, JPEG, WebP, BMP), or its header is damaged") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying "broken"
        raise problem(path, FIELD, f"cannot read image: {' '.join(str(exc).split())[:200]}") from None


def check_reference(path: Path, shape: tuple[int, int, int]) -> list[Path] | VideoHeader:
    """The reference at ``path`` checked against the measured video's ``shape`` (frames, height,
    width) from headers alone: its image files in name order, or its video header."""
    frames, height, width = shape
    if not path.is_dir():
        header = video_header(path, FIELD, check_fps=False)
        if (header.width, header.height) != (width, height) or (header.frames is not None and header.frames != frames):
            count = "" if header.frames is None else f"{header.frames} frames of "
            raise problem(path, FIELD, f"holds {count}{header.width}x{header.height}; the video has {frames} frames of "
                                       f"{width}x{height}")
        check_total(path, FIELD, header, frames)
        return header
    try:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        raise problem(path, FIELD, f"cannot be listed: {exc.strerror or exc}") from None
    if not files:
        raise problem(path, FIELD, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) != frames:
        raise problem(path, FIELD, f"holds {len(files)} images; the video has {frames} frames (one reference image per "
                                   "frame, in name order)")
    for file in files:
        with _open(file) as im:
            if im.size != (width, height):
                raise problem(file, FIELD, f"is {im.size[0]}x{im.size[1]}; the video's frames are {width}x{height}")
    return files


def read_reference(path: Path, source: list[Path] | VideoHeader, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 [N, H, W, 3] reference frames of ``source`` (from ``check_reference``)."""
    frames, height, width = shape
    if isinstance(source, VideoHeader):
        ref = decode(path, FIELD, source, frames)
        if len(ref) != frames:
            length = f"more than {frames}" if len(ref) > frames else f"{len(ref)}"
            raise problem(path, FIELD, f"holds {length} frames; the video has {frames}")
        return ref
    ref = np.empty((frames, height, width, 3), dtype=np.uint8)
    for k, file in enumerate(source):
        with _open(file) as im:
            try:
                rgb = np.asarray(im.convert("RGB"))
            except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
                raise problem(file, FIELD, f"cannot decode image: {' '.join(str(exc).split())[:200]}") from None
        if rgb.shape != (height, width, 3):
            raise problem(file, FIELD, f"decodes to {rgb.shape[1]}x{rgb.shape[0]}; the video's frames are {width}x{height}")
        ref[k] = rgb
    return ref
