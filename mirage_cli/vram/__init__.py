"""GPU memory: predict each stage's peak from meta-device traces of the real modules, and choose the
offload mode and VAE tiling that fit a budget.

Modules: ``tensor_bytes`` (``LiveTensorBytes``: live storage bytes, op by op, on meta or a real
device), ``meta_trace`` (modules on meta, fused attention, replay of repeated VAE calls),
``components`` (the render's components on meta, from their configs), ``stages`` (the traced
transient of each stage), ``predict`` (weights + carried + transient per stage), ``plan``
(``--vram-budget``: the choice, the refusal, the trace cache).
"""
