"""Reading a user's ``.npy`` array: the header first, the data only once its size is known to be right.

``read_npy_header`` checks the file (a regular file within a size bound, ``base.files``) and reads
its header alone: the caller checks the shape and dtype it declares against what it expects and its
own bounds before ``read_npy_data`` allocates anything. Nothing is unpickled (object dtypes are
refused), and an ``.npz`` archive is told apart from a ``.npy`` array by its content. Every problem
is an ``InputError`` naming the file and the caller's field.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.files import check_file

MAX_HEADER_BYTES = 10_000
"""Size of a ``.npy`` header (numpy writes a few hundred bytes)."""


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` file declares: ``shape``, ``dtype``, ``fortran_order``; ``offset`` is where the
    array data starts and ``data_bytes`` how many bytes follow it in the file."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int
    data_bytes: int

    @property
    def count(self) -> int:
        """Values the shape declares (a Python int: no overflow)."""
        return math.prod(int(n) for n in self.shape)

    @property
    def needed_bytes(self) -> int:
        """Bytes of array data the shape and dtype need."""
        return self.count * self.dtype.itemsize


def _refuse(path, field: str | None, message: str) -> InputError:
    return InputError(Problem(file=str(path), field=field, message=message))


def read_npy_header(path: str | os.PathLike, *, field: str | None, max_bytes: int) -> NpyHeader:
    """The header of the ``.npy`` file ``path`` (at most ``max_bytes``); nothing of the data is read."""
    check_file(path, max_bytes, field=field)
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":
                raise _refuse(path, field, "is an .npz archive, not a .npy array: save the array alone with numpy.save(path, array)")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"format version {version[0]}.{version[1]} is not supported; save with numpy.save")
            shape, fortran_order, dtype = read(f, max_header_size=MAX_HEADER_BYTES)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except InputError:
        raise
    except OSError as e:
        raise _refuse(path, field, f"cannot read: {e.strerror or e}") from None
    except Exception as e:  # numpy raises ValueError (or SyntaxError from the header dict) for a broken header
        raise _refuse(path, field, f"not a .npy array: {' '.join(str(e).split())[:200]}") from None
    if dtype.hasobject:
        raise _refuse(path, field, f"holds Python objects (dtype {dtype}); only numeric arrays are read")
    return NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran_order), offset, size - offset)


def read_npy_data(path: str | os.PathLike, header: NpyHeader, *, field: str | None) -> np.ndarray:
    """The array of ``path`` as its ``header`` declares it. Call only after checking the header's shape
    and dtype against a bound: this allocates ``header.needed_bytes``."""
    if header.data_bytes != header.needed_bytes:
        raise _refuse(path, field, f"holds {header.data_bytes:,} bytes of array data; shape {list(header.shape)} of "
                                   f"{header.dtype} needs {header.needed_bytes:,} (truncated or padded)")
    try:
        with open(path, "rb") as f:
            f.seek(header.offset)
            flat = np.fromfile(f, dtype=header.dtype, count=header.count)
    except OSError as e:
        raise _refuse(path, field, f"cannot read: {e.strerror or e}") from None
    if flat.size != header.count:
        raise _refuse(path, field, f"changed while read: {flat.size:,} of {header.count:,} values")
    return flat.reshape(header.shape, order="F" if header.fortran_order else "C")
