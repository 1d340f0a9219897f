"""Argument checks shared by the memories: tensor-ify inputs and give them a leading frame dim."""

from __future__ import annotations

import torch
from torch import Tensor


def tensor(x, name: str, device, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.as_tensor(x)`` on ``device`` (optionally cast), with a clear error for non-numeric input."""
    try:
        t = torch.as_tensor(x, device=device)
    except Exception as e:  # noqa: BLE001 - turned into a clear ValueError
        raise ValueError(f"{name}: expected a tensor, got {type(x).__name__} ({e})") from None
    return t.to(dtype) if dtype is not None else t


def frames_first(x: Tensor, tail: tuple[int, ...], name: str, T: int | None = None) -> Tensor:
    """Return ``x`` as [T, *tail]; a single [*tail] becomes T=1, or is repeated to ``T`` when given.

    Raises ValueError naming ``name`` with the expected and the actual shape.
    """
    if tuple(x.shape) == tuple(tail):
        x = x[None]
        if T is not None and T != 1:
            x = x.expand(T, *tail)
    dims = ", ".join(str(s) for s in tail)
    expect = f"[{T if T is not None else 'T'}, {dims}] or [{dims}]"
    if x.ndim != len(tail) + 1 or tuple(x.shape[1:]) != tuple(tail) or (T is not None and x.shape[0] != T):
        raise ValueError(f"{name}: expected shape {expect}, got {list(x.shape)}")
    return x


def frame_indices(frame_index, T: int, device) -> Tensor:
    """int32 [T] source frame indices: None -> -1, an int -> that index for every frame, or [T] values."""
    if frame_index is None:
        return torch.full((T,), -1, dtype=torch.int32, device=device)
    t = tensor(frame_index, "frame_index", device, torch.int32)
    if t.ndim == 0:
        return t.expand(T).clone()
    if t.shape != (T,):
        raise ValueError(f"frame_index: expected an int or shape [{T}], got {list(t.shape)}")
    return t
