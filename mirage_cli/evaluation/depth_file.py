"""``mirage eval --depth``: a ``.npy`` float z-depth of every frame, [N, H, W] in the camera path's units.

The header is checked against the video (one map per frame, at the frames' size; ``base.npy``) before
any of the array is read, so a header declaring a trillion values allocates nothing. A value is usable
depth when finite and within ``limits.MIN_DEPTH`` .. ``limits.MAX_DEPTH`` (as for a start depth map);
the others become NaN (not compared). A file with usable depth at fewer than
``limits.MIN_VALID_DEPTH_SHARE`` of its values (all NaN, all zero, all negative) is refused: the 3D
check would measure nothing while the document said it used the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.limits import MAX_DEPTH, MAX_EVAL_PIXELS, MIN_DEPTH, MIN_VALID_DEPTH_SHARE
from mirage_cli.base.npy import MAX_HEADER_BYTES, read_npy_data, read_npy_header

FIELD = "--depth"
MAX_DEPTH_BYTES = 8 * MAX_EVAL_PIXELS + MAX_HEADER_BYTES
"""Size of a depth file: float64 for as many pixels as eval holds."""


def _refuse(path: Path, message: str) -> InputError:
    return InputError(Problem(file=str(path), field=FIELD, message=message))


def read_depth(path: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, float]:
    """(float32 [N, H, W] z-depth with NaN where unusable, the share of usable values) of the file at
    ``path``, which must hold ``shape`` = (frames, height, width) (module docstring)."""
    header = read_npy_header(path, field=FIELD, max_bytes=MAX_DEPTH_BYTES)
    want = f"[{shape[0]}, {shape[1]}, {shape[2]}]"
    if len(header.shape) != 3:
        raise _refuse(path, f"has shape {list(header.shape)}; expected float z-depth {want} (one map per frame of the video)")
    if header.count > MAX_EVAL_PIXELS:
        raise _refuse(path, f"declares shape {list(header.shape)} ({header.count:,} values), more than eval holds "
                            f"({MAX_EVAL_PIXELS:,}); the video needs {want}")
    if not np.issubdtype(header.dtype, np.floating):
        raise _refuse(path, f"holds {header.dtype} values; expected float z-depth (float16, float32 or float64)")
    if header.shape != tuple(shape):
        raise _refuse(path, f"has shape {list(header.shape)}; the video needs {want} (one map per frame, at the frames' "
                            "size)")
    depth = read_npy_data(path, header, field=FIELD).astype(np.float32)
    usable = np.isfinite(depth) & (depth >= MIN_DEPTH) & (depth <= MAX_DEPTH)
    share = float(usable.mean())
    if share < MIN_VALID_DEPTH_SHARE:
        raise _refuse(path, f"has usable depth (finite, between {MIN_DEPTH:g} and {MAX_DEPTH:g} in the camera path's units) "
                            f"at {100 * share:.1f}% of its values; at least {100 * MIN_VALID_DEPTH_SHARE:g}% is needed")
    depth[~usable] = np.nan
    return depth, share
