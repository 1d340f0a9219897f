"""diffusers' step caches on the transformer, and their state in a mid-chunk checkpoint.

The caches are diffusers' own hooks (``enable_cache`` with ``FirstBlockCacheConfig``,
``MagCacheConfig`` or ``TaylorSeerCacheConfig``); nothing of the caching is ours. Each CFG branch
runs in its own ``cache_context`` (``mirage_cli.denoise.loop``), so each keeps its own state; the state is
reset at the start of every chunk's denoising loop.

Resume stays exact because the cache state is saved with the mid-chunk checkpoint: every
``StateManager`` of the hooks (found by walking the transformer's hook registries) has one state
object per context; ``capture_state`` writes each state's attributes as a JSON structure with its
tensors beside it (``DenoiseState.to_tensors`` puts them into the checkpoint), and ``restore_state``
rebuilds the state objects from them. Saving at any step was chosen over "checkpoint only where the
cache is empty": TaylorSeer and MagCache hold state from their first step to the last, so that rule
would make a stop lose the whole chunk's progress.

MagCache needs per-step ratios of residual magnitudes of this model: ``calibration_ratios`` runs a
calibration pass (``mirage calibrate-cache``) and the renders read the file (``spec_step_cache``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mirage_cli.spec.step_cache import StepCacheSettings

STRUCTURE_KEY = "__structure__"
CALIBRATING = "mag-calibration"
"""The method of a MagCache calibration pass (``mirage calibrate-cache``; not a spec choice)."""


def diffusers_config(settings: StepCacheSettings, steps: int):
    """The diffusers cache config of ``settings`` for a loop of ``steps`` steps (None for ``none``).

    A calibration pass (method ``CALIBRATING``: no skipping, ratios recorded) is given one step more
    than the loop's, so that diffusers neither prints nor clears the ratios after the last step (it
    does both when the count is reached)."""
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if settings.method == CALIBRATING:
        return MagCacheConfig(calibrate=True, num_inference_steps=steps + 1)
    if settings.method == "none":
        return None
    if settings.method == "first-block":
        return FirstBlockCacheConfig(threshold=settings.threshold)
    if settings.method == "mag":
        return MagCacheConfig(threshold=settings.threshold, num_inference_steps=steps, mag_ratios=list(settings.ratios))
    if settings.method == "taylorseer":
        # Lite mode (whole blocks skipped, the output projection predicted): the default patterns
        # (names ending in "attn") match no module of Wan's blocks (attn1, attn2), and Taylor factors
        # of every attention output would hold ~60 GiB at 1280x704.
        return TaylorSeerCacheConfig(cache_interval=settings.interval, use_lite_mode=True)
    raise ValueError(f"unknown step cache {settings.method!r}")


def use_step_cache(transformer, config) -> None:
    """Make ``config`` (or no cache, for None) the transformer's step cache, replacing any other."""
    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    if config is not None:
        transformer.enable_cache(config)


def cache_enabled(transformer) -> bool:
    return bool(getattr(transformer, "is_cache_enabled", False))


def reset_state(transformer) -> None:
    """Forget every cached step (the start of a chunk's loop)."""
    if cache_enabled(transformer):
        transformer._reset_stateful_cache()


def _state_managers(transformer) -> list[tuple[str, object]]:
    """(stable name, StateManager) of every stateful hook under ``transformer``, each manager once."""
    from diffusers.hooks.hooks import StateManager

    found, seen = [], set()
    for module_name, module in transformer.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        for hook_name, hook in registry.hooks.items():
            for attr, value in vars(hook).items():
                if isinstance(value, StateManager) and id(value) not in seen:
                    seen.add(id(value))
                    found.append((f"{module_name}:{hook_name}:{attr}", value))
    return found


def _encode(value, key: str, tensors: dict[str, torch.Tensor]):
    """A JSON-able description of ``value``; its tensors go into ``tensors`` under keys from ``key``."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().contiguous()
        return {"tensor": key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": True}
    if isinstance(value, (tuple, list)):  # torch.Size is a tuple
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, f"{key}.k{i}", tensors), _encode(v, f"{key}.{i}", tensors)] for i, (k, v) in enumerate(value.items())]}
    raise TypeError(f"step cache state: cannot save a {type(value).__name__} ({key})")


def _decode(node, tensors: dict[str, torch.Tensor], device: torch.device):
    (kind, payload), = node.items()
    if kind == "tensor":
        return tensors[payload].to(device)
    if kind == "value":
        return payload
    if kind == "dtype":
        return getattr(torch, payload)
    if kind == "device":
        return device  # where the state's outputs live: this run's device
    if kind in ("list", "tuple"):
        items = [_decode(v, tensors, device) for v in payload]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {_decode(k, tensors, device): _decode(v, tensors, device) for k, v in payload}
    raise ValueError(f"step cache state: unknown entry {kind!r}")


def capture_state(transformer) -> dict[str, torch.Tensor]:
    """The cache state of every hook and context as ``{name: tensor}`` (the structure as a uint8 JSON
    tensor under ``STRUCTURE_KEY``); tensors are referenced, not copied (the hooks replace them)."""
    tensors: dict[str, torch.Tensor] = {}
    structure = []
    for n, (name, manager) in enumerate(_state_managers(transformer)):
        for c, (context, state) in enumerate(sorted(manager._state_cache.items())):
            structure.append([name, context, _encode(vars(state), f"{n}.{c}", tensors)])
    tensors[STRUCTURE_KEY] = torch.frombuffer(bytearray(json.dumps(structure).encode()), dtype=torch.uint8)
    return tensors


def restore_state(transformer, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Replace the hooks' state with ``capture_state``'s; ValueError when it does not fit these hooks."""
    structure = json.loads(bytes(tensors[STRUCTURE_KEY].tolist()).decode())
    managers = dict(_state_managers(transformer))
    for manager in managers.values():
        manager.reset()
    for name, context, encoded in structure:
        if name not in managers:
            raise ValueError(f"the checkpoint's step cache has state for {name}, which this model's cache does not have")
        manager = managers[name]
        state = manager._state_cls(*manager._init_args, **manager._init_kwargs)
        for attr, value in _decode(encoded, tensors, device).items():
            setattr(state, attr, value)
        manager._state_cache[context] = state


def calibration_ratios(transformer) -> dict[str, list[float]]:
    """The per-step magnitude ratios a MagCache calibration pass recorded, per CFG branch."""
    out = {}
    for _, manager in _state_managers(transformer):
        for context, state in manager._state_cache.items():
            ratios = getattr(state, "calibration_ratios", None)
            if ratios:
                out[context] = [float(r) for r in ratios]
    return out


@contextmanager
def count_block_computations(transformer) -> Iterator[list[int]]:
    """Count the transformer blocks really computed (their self-attention's query projection runs
    only then; a cache that skips a block or predicts its attention does not call it). Yields a
    one-element list holding the count."""
    count = [0]

    def hook(_module, _args):
        count[0] += 1

    handles = [block.attn1.to_q.register_forward_pre_hook(hook) for block in transformer.blocks]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()
