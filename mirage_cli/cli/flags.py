"""The command-line flags shared by validate, render and bench, each declared once; its default is the
options dataclass's (``mirage_cli/base/options.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mirage_cli.base.options import BackboneOptions, Offload, VideoOptions

BACKBONE = BackboneOptions()
VIDEO = VideoOptions()
Preset = Annotated[str | None, typer.Option("--preset", help="`tiny`: tiny random components, CPU-friendly, no download.")]
RandomWeights = Annotated[
    bool, typer.Option("--random-weights", help="The real 5B architecture with random weights (speed tests, no download).")
]
RandomTextEncoder = Annotated[
    bool, typer.Option("--random-text-encoder", help="With --random-weights: a real-size UMT5-XXL text encoder with random "
                       "weights, so memory figures include its 10.6 GiB.")
]
Device = Annotated[str, typer.Option("--device", help="auto | cuda | cuda:N | cpu (auto prefers CUDA).")]
Dtype = Annotated[
    str, typer.Option("--dtype", help="Transformer dtype: auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32.")
]
OffloadFlag = Annotated[Offload, typer.Option("--offload", help="diffusers offloading of the weights to the CPU (CUDA only).")]
VaeTiling = Annotated[bool, typer.Option("--vae-tiling", help="Decode with VAE tiling (less memory).")]
Fp8 = Annotated[bool, typer.Option("--fp8", help="Store transformer weights in fp8 (layerwise casting).")]
AttentionBackend = Annotated[str | None, typer.Option("--attention-backend", help="diffusers attention backend name.")]
Compile = Annotated[bool, typer.Option("--compile", help="Regional compilation of the repeated transformer blocks.")]
Steps = Annotated[int | None, typer.Option("--steps", help="Denoising steps per chunk (overrides the spec).")]
VramBudget = Annotated[str, typer.Option("--vram-budget", help="auto (the GPU's free memory) | GiB | none: on a GPU, add "
                                         "offload and VAE tiling when the predicted peak needs them; refuse what cannot fit.")]


def backbone_options(preset, random_weights, device, dtype, offload, vae_tiling, fp8, attention_backend, compile_,
                      random_text_encoder, vram_budget: str = BACKBONE.vram_budget) -> BackboneOptions:
    return BackboneOptions(
        vram_budget=vram_budget,
        preset=preset,
        random_weights=random_weights,
        random_text_encoder=random_text_encoder,
        device=device,
        dtype=dtype,
        offload=offload.value,
        vae_tiling=vae_tiling,
        fp8=fp8,
        attention_backend=attention_backend,
        compile=compile_,
    )
StepCache = Annotated[str | None, typer.Option("--cache", help="Step cache: none | first-block | mag | taylorseer (diffusers' "
                                               "hooks; faster, slightly different; overrides the spec's step_cache.method).")]
CacheThreshold = Annotated[float | None, typer.Option("--cache-threshold", help="first-block / mag: skip while the change is "
                                                      "under this (default 0.05 / 0.06; higher is faster).")]
CacheInterval = Annotated[int | None, typer.Option("--cache-interval", help="taylorseer: compute every Nth step (default 5).")]
CacheCalibration = Annotated[Path | None, typer.Option("--cache-calibration", help="mag: the file `mirage calibrate-cache` wrote.")]


def step_cache_overrides(cache, threshold, interval, calibration) -> dict:
    """The spec overrides of the step-cache flags (None: not given)."""
    return {
        "step_cache.method": cache,
        "step_cache.threshold": threshold,
        "step_cache.interval": interval,
        "step_cache.calibration": None if calibration is None else str(calibration.expanduser().resolve()),
    }
