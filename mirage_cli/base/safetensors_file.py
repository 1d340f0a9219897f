"""Reading a user's safetensors file: the one guarded reader every such file goes through.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (``{name: {"dtype",
"shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``), then the tensors' bytes,
little-endian, back to back. ``open_safetensors`` checks all of it before any tensor is read, and
reads the file itself (no pickle is ever involved, no library error leaks out):

- the file: a regular file within a size bound (``mirage_cli.base.files``); a pickled torch file
  (known by its magic bytes: a zip or a pickle stream) is refused by name, never unpickled;
- the header: its length within ``MAX_SAFETENSORS_HEADER_BYTES`` and within the file, UTF-8 JSON
  nested no deeper than a header is (3 levels), no duplicate names;
- each tensor: a known dtype, a shape of non-negative integers, offsets inside the data that hold
  exactly shape x item size bytes, the tensors back to back up to the end of the file (a truncated
  or padded file is refused).

Every failure is an ``InputError`` with one problem naming the file, the field that gave it and,
where one tensor is at fault, the tensor. Values are checked as they are read, in blocks
(``read``/``read_all``, or ``value_problem`` which reads without keeping anything): NaN and infinities
(unless ``finite=False``: a file whose tensors may hold them, as a memory's do), and with
``max_magnitude`` any larger |value|.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.files import check_file
from mirage_cli.base.json_text import JsonTextError, load_json
from mirage_cli.base.limits import MAX_SAFETENSORS_HEADER_BYTES, MAX_WEIGHTS_BYTES

DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 1), "U8": ("uint8", 1), "I8": ("int8", 1), "I16": ("int16", 2), "U16": ("uint16", 2),
    "I32": ("int32", 4), "U32": ("uint32", 4), "I64": ("int64", 8), "U64": ("uint64", 8), "F16": ("float16", 2),
    "BF16": ("bfloat16", 2), "F32": ("float32", 4), "F64": ("float64", 8), "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}
"""The safetensors dtype names: (torch dtype name, bytes per item)."""
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
"""The dtypes trained weights are stored in."""
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
"""A zip (``torch.save``'s format) or a pickle protocol 2-5 stream."""
HEADER_NESTING = 3
"""Levels of a safetensors header: the object, a tensor's entry, its shape or offsets list."""
MAX_DIMS = 8
"""Dimensions of one tensor (weights have at most 5)."""
BLOCK_BYTES = 64 << 20
"""Bytes read and checked at a time (bounds the memory of ``value_problem``)."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a header: its safetensors dtype name, shape and byte range in the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, DTYPES[self.dtype][0])

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=object)) if self.shape else 1

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclass(frozen=True)
class SafetensorsFile:
    """A safetensors file whose header passed every check (``open_safetensors``); tensors are read on demand.

    ``field``: the option or spec field that named the file (every problem names it).
    """

    path: Path
    field: str | None
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int

    def error(self, message: str) -> InputError:
        """An ``InputError`` with one problem about this file."""
        return InputError(Problem(file=str(self.path), field=self.field, message=message))

    def read(self, name: str, max_magnitude: float | None = None, *, finite: bool = True) -> torch.Tensor:
        """Tensor ``name`` on the CPU; an ``InputError`` when (with ``finite``) its floating-point values are
        not finite, or (with ``max_magnitude``) larger in magnitude."""
        entry = self.tensors[name]
        data = bytearray(entry.end - entry.begin)
        with self._open() as handle:
            handle.seek(self.data_start + entry.begin)
            view, done = memoryview(data), 0
            while done < len(data):
                got = handle.readinto(view[done : done + BLOCK_BYTES])
                if not got:
                    raise self.error("the file became shorter while it was read")
                done += got
        if entry.numel == 0:
            return torch.empty(entry.shape, dtype=entry.torch_dtype)
        tensor = torch.frombuffer(data, dtype=entry.torch_dtype).reshape(entry.shape)
        if entry.is_float and finite:
            flat = tensor.reshape(-1)
            step = max(1, BLOCK_BYTES // DTYPES[entry.dtype][1])
            why = _values_problem((flat[i : i + step] for i in range(0, flat.numel(), step)), max_magnitude)
            if why:
                raise self.error(f"tensor {name}: {why}")
        return tensor

    def read_all(self, max_magnitude: float | None = None, *, finite: bool = True) -> dict[str, torch.Tensor]:
        """Every tensor, each checked as ``read`` checks it."""
        return {name: self.read(name, max_magnitude, finite=finite) for name in self.tensors}

    def value_problem(self, max_magnitude: float | None = None, names: Iterable[str] | None = None) -> str | None:
        """What is wrong with the floating-point values of the tensors (all, or ``names``): the first
        tensor holding a NaN, an infinity or (with ``max_magnitude``) a larger |value|, as a sentence;
        None when all are fine. Reads block by block and keeps nothing (memory: ``BLOCK_BYTES``)."""
        with self._open() as handle:
            for name in self.tensors if names is None else names:
                entry = self.tensors[name]
                if entry.is_float and entry.numel:
                    why = _values_problem(self._blocks(handle, entry), max_magnitude)
                    if why:
                        return f"tensor {name}: {why}"
        return None

    def _blocks(self, handle, entry: TensorEntry) -> Iterator[torch.Tensor]:
        size = DTYPES[entry.dtype][1]
        block = max(size, BLOCK_BYTES // size * size)
        handle.seek(self.data_start + entry.begin)
        left = entry.end - entry.begin
        while left > 0:
            data = bytearray(handle.read(min(block, left)))
            if not data:
                raise self.error("the file became shorter while it was read")
            left -= len(data)
            yield torch.frombuffer(data, dtype=entry.torch_dtype)

    def _open(self):
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise self.error(f"cannot read: {e.strerror or e}") from None


def _values_problem(blocks: Iterable[torch.Tensor], max_magnitude: float | None) -> str | None:
    """NaN / infinity / too large among the values of ``blocks`` (one pass), as a sentence, or None."""
    bad, largest, total = 0, 0.0, 0
    for block in blocks:
        total += block.numel()
        magnitude = block.abs().amax().item() if block.numel() else 0.0  # NaN propagates through amax
        if magnitude != magnitude or magnitude == float("inf"):
            bad += int((~torch.isfinite(block)).sum())
        else:
            largest = max(largest, float(magnitude))
    if bad:
        return f"{bad} of {total} values are NaN or infinite; the file is damaged or was saved from a diverged training run"
    if max_magnitude is not None and largest > max_magnitude:
        return (f"holds the value {largest:.3g}, beyond any trained weight (|value| <= {max_magnitude:g}); the file is "
                "damaged or holds something other than weights")
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(name: str, entry, data_size: int) -> tuple[str | None, TensorEntry | None]:
    """(why the header's entry for ``name`` is unusable, or None; the entry)."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        return "its header entry must hold exactly dtype, shape and data_offsets", None
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES or getattr(torch, DTYPES[dtype][0], None) is None:
        return f"unknown dtype {str(dtype)[:20]!r} (safetensors knows {', '.join(DTYPES)})", None
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_int(n) and n >= 0 for n in shape):
        return f"shape {str(shape)[:60]} is not a list of at most {MAX_DIMS} non-negative integers", None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(n) for n in offsets) and 0 <= offsets[0] <= offsets[1]):
        return f"data_offsets {str(offsets)[:60]} are not [begin, end] byte offsets", None
    if offsets[1] > data_size:
        return f"ends at byte {offsets[1]:,} of the data, but the file holds {data_size:,} bytes after its header: truncated", None
    found = TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])
    if found.numel * DTYPES[dtype][1] != found.end - found.begin:
        return (f"shape {list(shape)} of {dtype} needs {found.numel * DTYPES[dtype][1]:,} bytes, its data_offsets hold "
                f"{found.end - found.begin:,}"), None
    return None, found


def _pickle_message() -> str:
    return ("is a pickled torch file; only .safetensors files are read (loading a pickle can run code). Convert it once "
            "where you trust it: safetensors.torch.save_file(state_dict, 'weights.safetensors')")


def open_safetensors(path: str | os.PathLike, field: str | None, *, max_bytes: int = MAX_WEIGHTS_BYTES) -> SafetensorsFile:
    """The checked header of the safetensors file ``path`` (module docstring); ``InputError`` naming the
    file and ``field`` for anything else. No tensor is read."""
    path = Path(path).expanduser()
    check_file(path, max_bytes, field=field)

    def fail(message: str) -> InputError:
        return InputError(Problem(file=str(path), field=field, message=message))

    size = os.stat(path).st_size
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise fail(f"is {size} bytes long: not a safetensors file (empty or cut short)")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER_BYTES or length > size - 8:
                if head.startswith(PICKLE_MAGIC):  # judged only now: a valid header length can start with the same bytes
                    raise fail(_pickle_message())
            if length > MAX_SAFETENSORS_HEADER_BYTES:
                raise fail(f"not a safetensors file, or a damaged one: its header claims {length:,} bytes, more than the "
                           f"limit of {MAX_SAFETENSORS_HEADER_BYTES:,}")
            if length < 2 or length > size - 8:
                raise fail(f"not a safetensors file, or a truncated one: its header claims {length:,} bytes of the "
                           f"{size - 8:,} that follow its length")
            raw = handle.read(length)
    except OSError as e:
        raise fail(f"cannot read: {e.strerror or e}") from None
    if len(raw) != length:
        raise fail("the file became shorter while it was read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"not a safetensors file: its header is not UTF-8 text (byte {e.start})") from None
    if not text.startswith("{"):
        raise fail("not a safetensors file: its header is not a JSON object")
    try:
        header = load_json(text, max_nesting=HEADER_NESTING)
    except JsonTextError as e:
        raise fail(f"not a safetensors file, or a damaged one: its header: {e.message}") from None
    if not isinstance(header, dict):
        raise fail("not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail("damaged safetensors header: __metadata__ must map names to strings")
    data_size = size - 8 - length
    tensors: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        why, found = _entry_problem(name, entry, data_size)
        if why:
            raise fail(f"tensor {name[:200]}: {why}")
        tensors[name] = found
    end = 0
    for entry in sorted(tensors.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != end:
            what = "overlaps the tensor before it" if entry.begin < end else f"leaves bytes {end:,}-{entry.begin:,} unaccounted for"
            raise fail(f"damaged safetensors file: tensor {entry.name[:200]} {what}")
        end = entry.end
    if end != data_size:
        raise fail(f"damaged safetensors file: its tensors hold {end:,} bytes, the file {data_size:,} after its header "
                   f"({'extra bytes at the end' if end < data_size else 'truncated'})")
    return SafetensorsFile(path, field, tensors, dict(metadata), 8 + length)
