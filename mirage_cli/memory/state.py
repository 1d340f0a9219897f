"""(De)serialization of memories: flat ``dict[str, Tensor]`` state dicts, checked, in safetensors files.

A state dict holds the per-point arrays plus 0-dim tensors for the configuration (so the whole
memory is one safetensors file, never pickle). ``check_state`` validates keys, dtypes and shapes
against a schema and raises one ValueError that lists every problem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from safetensors.torch import save_file
from torch import Tensor

from mirage_cli.base.atomic import atomic_path
from mirage_cli.base.errors import InputError
from mirage_cli.base.safetensors_file import open_safetensors

Dim = int | str
Schema = Mapping[str, tuple[Sequence[torch.dtype], Sequence[Dim]]]


def check_state(state: Mapping[str, Tensor], schema: Schema, what: str) -> dict[str, int]:
    """Check ``state`` against ``schema`` (key -> (allowed dtypes, shape with named dims)).

    Named dims (e.g. "N", "C") must agree across keys. Returns the named dims' sizes.

    Raises:
        ValueError: listing missing keys, unexpected keys, wrong dtypes and wrong shapes.
    """
    problems = []
    missing = sorted(set(schema) - set(state))
    extra = sorted(set(state) - set(schema))
    if missing:
        problems.append(f"missing keys {missing}")
    if extra:
        problems.append(f"unexpected keys {extra}")
    dims: dict[str, int] = {}
    for key, (dtypes, shape) in schema.items():
        if key not in state:
            continue
        t = state[key]
        if not isinstance(t, Tensor):
            problems.append(f"{key}: expected a tensor, got {type(t).__name__}")
            continue
        if t.dtype not in dtypes:
            problems.append(f"{key}: expected dtype {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
        if t.ndim != len(shape):
            problems.append(f"{key}: expected shape {list(shape)}, got {list(t.shape)}")
            continue
        for size, dim in zip(t.shape, shape):
            if isinstance(dim, str):
                if dims.setdefault(dim, int(size)) != size:
                    problems.append(f"{key}: expected {dim}={dims[dim]} (from the other arrays), got shape {list(t.shape)}")
            elif size != dim:
                problems.append(f"{key}: expected shape {list(shape)}, got {list(t.shape)}")
    if problems:
        raise ValueError(f"invalid {what} state: " + "; ".join(problems))
    return dims


def save_state(path: str | os.PathLike, state: Mapping[str, Tensor], fmt: str) -> None:
    """Write ``state`` to a safetensors file atomically, tagged with metadata ``format=fmt``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": fmt})


def load_state(path: str | os.PathLike, fmt: str, device) -> dict[str, Tensor]:
    """Read a safetensors file written by ``save_state`` with the same ``fmt``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file, or one holding something else than ``fmt``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        file = open_safetensors(path, field=None)  # the guarded reader: header, offsets and dtypes checked first
        found = file.metadata.get("format")
        if found != fmt:
            raise ValueError(f"{path}: expected a {fmt} file, found format {found!r}")
        state = file.read_all(finite=False)  # a memory's tensors may hold inf (e.g. an unset voxel size)
    except InputError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e.problems[0].message})") from None
    return {k: v.to(device) for k, v in state.items()}
