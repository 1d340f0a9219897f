"""A contact sheet of a render's video for ``report.html``: evenly spaced frames in a grid, each
labelled with its frame number and time, as one JPEG (a few hundred KB where a PNG of a noisy
video takes megabytes)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mirage_cli.base.video import read_frames_at

SHEET_FRAMES = 12
"""Frames on a sheet (fewer when the video is shorter)."""
SHEET_COLUMNS = 4
SHEET_WIDTH = 1200
"""Pixel width of the sheet (the frames are scaled to fit the columns)."""


def sheet_indices(frames: int, count: int = SHEET_FRAMES) -> list[int]:
    """``count`` frame indices spread evenly from the first frame to the last of ``frames``."""
    if frames < 1:
        return []
    return sorted(set(np.linspace(0, frames - 1, min(count, frames)).round().astype(int).tolist()))


def contact_sheet(video: str | Path, frames: int, fps: float) -> bytes:
    """The JPEG bytes of the sheet of ``video`` (``frames`` long at ``fps``). Raises what PyAV raises for
    a file that does not decode, ValueError when none of the frames can be read."""
    chosen = read_frames_at(video, sheet_indices(frames))
    if not chosen:
        raise ValueError(f"{video}: no frame could be read")
    h, w = next(iter(chosen.values())).shape[:2]
    cell_w = SHEET_WIDTH // SHEET_COLUMNS
    cell_h = max(1, round(h * cell_w / w))
    rows = -(-len(chosen) // SHEET_COLUMNS)
    sheet = Image.new("RGB", (cell_w * SHEET_COLUMNS, (cell_h + 18) * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (index, frame) in enumerate(sorted(chosen.items())):
        x, y = (k % SHEET_COLUMNS) * cell_w, (k // SHEET_COLUMNS) * (cell_h + 18)
        sheet.paste(Image.fromarray(frame).resize((cell_w - 4, cell_h), Image.Resampling.BILINEAR), (x + 2, y))
        label = f"frame {index}" + (f" · {index / fps:.2f} s" if fps > 0 else "")
        draw.text((x + 4, y + cell_h + 3), label, fill=(60, 60, 60))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
