"""Running the real modules on the meta device: weights and activations with their real shapes and
dtypes, no memory and no arithmetic.

- ``meta_module(cls, config, dtype)``: a diffusers or transformers model built on the meta device and
  cast the way ``from_pretrained(torch_dtype=...)`` casts it (its ``_keep_in_fp32_modules`` stay fp32).
- ``fused_attention_on_meta()``: on the meta device PyTorch's ``scaled_dot_product_attention`` falls
  back to the math path, which materializes the [B, heads, L, L] score matrix (135 GiB for one
  Wan2.2 forward at 1280x704); the fused kernels a GPU runs (flash, cuDNN, memory-efficient) return
  the output and a float32 log-sum-exp per query and nothing else. Within the block meta calls
  allocate exactly that; calls on real tensors are untouched.
- ``replay_stationary(module, tracker)``: the Wan VAE's decoder runs once per latent frame (and, tiled,
  once per tile and frame) with a causal feature cache; after the first frames every call has the same
  shapes. Each distinct call (input shape, cache shapes) is traced once; a repeat allocates the same
  output and counts the same transient without running (a tiled 35-frame decode: 95 s -> seconds).
- ``traced_peak(fn, *args)``: the most bytes ``fn`` allocates on the meta device and holds at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mirage_cli.backbone.random_components import cast_like_from_pretrained, empty_model, keep_fp32_modules
from mirage_cli.profiling.tensor_bytes import LiveTensorBytes

META = torch.device("meta")


def meta_module(cls, config, dtype: torch.dtype) -> torch.nn.Module:
    """``cls`` built from ``config`` (kwargs dict or a transformers config object) on the meta device,
    parameters in ``dtype`` except the modules the class keeps in float32."""
    model = empty_model(cls, config) if isinstance(config, dict) else _empty_from_config(cls, config)
    model = model.to(META)
    cast_like_from_pretrained(model, dtype, keep_fp32_modules(model, dtype))
    return model.eval()


def _empty_from_config(cls, config) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = cls(config)
    if callable(getattr(model, "tie_weights", None)):
        model.tie_weights()
    return model


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module`` (shared tensors once)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        key = id(tensor)
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


@contextmanager
def fused_attention_on_meta() -> Iterator[None]:
    """Within the block, ``F.scaled_dot_product_attention`` on meta tensors allocates what a fused
    kernel returns: the output [..., L, Dv] in the query's dtype and a float32 log-sum-exp [..., L]."""
    original = F.scaled_dot_product_attention

    def fused(*args, **kwargs):
        query = args[0] if args else kwargs["query"]
        if query.device.type != "meta":
            return original(*args, **kwargs)
        value = args[2] if len(args) > 2 else kwargs["value"]
        torch.empty(query.shape[:-1], dtype=torch.float32, device=META)  # log-sum-exp, freed with the call
        return torch.empty((*query.shape[:-1], value.shape[-1]), dtype=query.dtype, device=META)

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@dataclass
class _Call:
    out_shape: tuple
    out_dtype: torch.dtype
    transient: int  # bytes allocated during the call and alive at once, above what was alive before


def _cache_shapes(cache) -> tuple:
    if cache is None:
        return ()
    return tuple(None if t is None or not isinstance(t, torch.Tensor) else (tuple(t.shape), t.dtype) for t in cache)


@contextmanager
def replay_stationary(module: torch.nn.Module, tracker: LiveTensorBytes) -> Iterator[None]:
    """Within the block, repeated calls of ``module`` (a Wan VAE decoder or encoder: ``forward(x,
    feat_cache=list, feat_idx=[0], ...)``) with the same input shape, flags and cache shapes, whose
    first trace left the cache shapes unchanged, are replayed: the output is allocated and the
    recorded transient counted on ``tracker``; the cache keeps its (same-shaped) entries."""
    original = module.forward
    calls: dict[tuple, _Call] = {}

    def forward(x, *args, feat_cache=None, feat_idx=None, **kwargs):
        key = (tuple(x.shape), x.dtype, tuple(sorted(kwargs.items())), _cache_shapes(feat_cache))
        known = calls.get(key)
        if known is not None:
            tracker.bump(known.transient)
            return torch.empty(known.out_shape, dtype=known.out_dtype, device=META)
        before, start_peak = tracker.current, tracker.peak
        tracker.peak = tracker.current  # measure this call's own peak
        out = original(x, *args, feat_cache=feat_cache, feat_idx=feat_idx, **kwargs)
        transient = tracker.peak - before
        tracker.peak = max(start_peak, tracker.peak)
        if _cache_shapes(feat_cache) == key[3]:  # stationary: a repeat leaves the same state
            calls[key] = _Call(tuple(out.shape), out.dtype, transient)
        return out

    module.forward = forward
    try:
        yield
    finally:
        del module.forward  # back to the class's method


def traced_peak(fn: Callable, *args, replay: tuple[torch.nn.Module, ...] = (), **kwargs) -> int:
    """The most bytes ``fn(*args, **kwargs)`` allocates on the meta device and holds at once (its
    inputs, already allocated, not counted), with fused attention and ``replay`` modules replayed."""
    tracker = LiveTensorBytes("meta")
    with torch.no_grad(), fused_attention_on_meta(), tracker:
        with _all(replay_stationary(module, tracker) for module in replay):
            fn(*args, **kwargs)
    return tracker.peak


@contextmanager
def _all(managers) -> Iterator[None]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield
