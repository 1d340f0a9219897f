"""``LiveTensorBytes``: the bytes of tensor storages alive on one device, counted op by op.

A ``TorchDispatchMode`` sees every tensor an aten op creates. Each new storage is counted once (views
share their base's storage) from the op that creates it until the last Python tensor holding it is
collected; the running total's maximum is the peak. On the meta device this is the peak a real run
would allocate (shapes and dtypes are exact, nothing is computed); on the CPU it measures a real run
the same way, which is how the predictor is tested (``tests/test_vram.py``).

What it does not see: memory a kernel allocates internally and frees before returning (cuBLAS and
cuDNN workspaces, the CUDA context, allocator rounding and fragmentation). ``mirage_cli.vram.predict``
adds a headroom for those.

Stages: ``stage(name)`` (used by ``mirage_cli.profiling.profiler.Profiler.stage`` on the active tracker) records,
per stage name, the most bytes allocated *during* the stage and alive at once (what was alive when it
began is not counted: that is the state carried between stages).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_ACTIVE: list[LiveTensorBytes] = []


class LiveTensorBytes(TorchDispatchMode):
    """Count live storage bytes on ``device_type`` (``"meta"``, ``"cpu"``, ``"cuda"``) while active.

    Attributes:
        current: bytes alive now (of storages created while active).
        peak: the most bytes alive at once.
        stage_peaks: per stage name, the most bytes allocated during that stage and alive at once
            (the maximum over every time the stage ran).
    """

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type
        self.current = 0
        self.peak = 0
        self.stage_peaks: dict[str, int] = {}
        self._storages: dict[int, list[int]] = {}  # storage id -> [python tensors holding it, bytes]
        self._stages: list[list] = []  # open stages: [name, bytes alive when it began, peak]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            # A meta tensor has no value: a data-dependent branch (transformers' "is the attention mask
            # all ones?") reads 0 / False, the branch real padded prompts take.
            return args[0].dtype.is_floating_point and 0.0 or 0
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == self.device_type:
                self._hold(tensor)
        return out

    def _hold(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [0, int(storage.nbytes())]
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
            for open_stage in self._stages:
                open_stage[2] = max(open_stage[2], self.current - open_stage[1])
        entry[0] += 1
        weakref.finalize(tensor, self._release, key)

    def bump(self, nbytes: int) -> None:
        """Count a transient of ``nbytes`` above what is alive now (a replayed trace; see
        ``mirage_cli.vram.meta_trace.replay_stationary``): raises the peaks, leaves ``current``."""
        self.peak = max(self.peak, self.current + nbytes)
        for open_stage in self._stages:
            open_stage[2] = max(open_stage[2], self.current + nbytes - open_stage[1])

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._storages[key]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Record the bytes allocated within the block and alive at once under ``stage_peaks[name]``."""
        record = [name, self.current, 0]
        self._stages.append(record)
        try:
            yield
        finally:
            self._stages.remove(record)
            self.stage_peaks[name] = max(self.stage_peaks.get(name, 0), record[2])

    def __enter__(self):
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return super().__exit__(*exc)


@contextmanager
def active_stage(name: str) -> Iterator[None]:
    """``stage(name)`` on the innermost active tracker, or nothing when none is active."""
    if not _ACTIVE:
        yield
        return
    with _ACTIVE[-1].stage(name):
        yield
