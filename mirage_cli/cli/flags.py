"""The command-line flags shared by validate, render, bench and calibrate-cache, each declared once; its
default is the options dataclass's (``mirage_cli/base/options.py``).

Two groups of them reach a command as one value (``FlagGroup``): the model flags as a
``BackboneOptions`` (``MODEL_FLAGS``), the step-cache flags as the spec overrides they make
(``STEP_CACHE_FLAGS``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mirage_cli.base.options import BackboneOptions, Offload, VideoOptions
from mirage_cli.spec.sampler import SAMPLERS

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
Steps = Annotated[int | None, typer.Option("--steps", help="Denoising steps per chunk (overrides the spec and the method's default).")]
Guidance = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale, 1 = off (overrides the spec "
                                                "and the method's default).")]
SamplerName = Enum("SamplerName", {name.upper(): name for name in SAMPLERS}, type=str)
"""The ``--sampler`` choices (``mirage_cli.spec.sampler.SAMPLERS``)."""
Sampler = Annotated[SamplerName | None, typer.Option("--sampler",
                                             help="unipc (50 steps, guidance) | dmd: few-step sampling of DMD-distilled models "
                                             "(FastWan2.2-TI2V-5B's timesteps unless the spec gives others); overrides the spec "
                                             "and the model's own choice.")]
Loras = Annotated[list[str] | None, typer.Option("--lora", help="FILE[:SCALE], repeatable: a LoRA stack fused into the DiT at "
                                                 "load, in order (replaces the spec's loras:; the memory LoRA is --memory-lora).")]
VramBudget = Annotated[str, typer.Option("--vram-budget", help="auto (the GPU's free memory) | GiB | none: on a GPU, add "
                                         "offload and VAE tiling when the predicted peak needs them; refuse what cannot fit.")]


StepCache = Annotated[str | None, typer.Option("--cache", help="Step cache: none | first-block | mag | taylorseer (diffusers' "
                                               "hooks; faster, slightly different; overrides the spec's step_cache.method).")]
CacheThreshold = Annotated[float | None, typer.Option("--cache-threshold", help="first-block / mag: skip while the change is "
                                                      "under this (default 0.05 / 0.06; higher is faster).")]
CacheInterval = Annotated[int | None, typer.Option("--cache-interval", help="taylorseer: compute every Nth step (default 5).")]
CacheCalibration = Annotated[Path | None, typer.Option("--cache-calibration", help="mag: the file `mirage calibrate-cache` wrote.")]




@dataclass(frozen=True)
class FlagGroup:
    """Flags declared once that a command receives as one value.

    ``keyword``: the command's parameter that stands for the group (its flags take its place in the
    command's signature, in this order); ``flags``: the flags as ``inspect.Parameter`` (annotated typer
    options with their defaults); ``build``: the flags' values by name -> the value the command gets.
    """

    keyword: str
    flags: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]

    def __call__(self, command: Callable | None = None, *, without: tuple[str, ...] = ()) -> Callable:
        """Decorate a command (``@GROUP`` or ``@GROUP(without=(...))``: flags the command does not offer,
        which then keep their defaults)."""
        if command is None:
            return lambda c: self._decorate(c, without)
        return self._decorate(command, without)

    def _decorate(self, command: Callable, without: tuple[str, ...]) -> Callable:
        unknown = set(without) - {p.name for p in self.flags}
        if unknown:
            raise ValueError(f"{command.__name__}: no such {self.keyword} flags: {sorted(unknown)}")
        hints = typing.get_type_hints(command, include_extras=True)
        signature = inspect.signature(command)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
        names = [p.name for p in own]
        if self.keyword not in names:
            raise ValueError(f"{command.__name__}: no parameter {self.keyword!r} for the flag group")
        flags = [p for p in self.flags if p.name not in without]
        at = names.index(self.keyword)
        parameters = own[:at] + flags + own[at + 1 :]
        flag_names = [p.name for p in flags]

        @functools.wraps(command)
        def with_group(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in flag_names}
            return command(*args, **kwargs, **{self.keyword: self.build(**values)})

        with_group.__signature__ = signature.replace(parameters=parameters, return_annotation=hints.get("return", None))
        with_group.__annotations__ = {p.name: p.annotation for p in parameters}
        del with_group.__wrapped__  # typer reads the signature above, not the command's own
        return with_group


def _flag(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)


def _backbone_options(**flags) -> BackboneOptions:
    """The model flags given (by parameter name) -> ``BackboneOptions``; a flag a command leaves out keeps
    the dataclass's default."""
    if "offload" in flags:
        flags["offload"] = Offload(flags["offload"]).value
    if "compile_" in flags:
        flags["compile"] = flags.pop("compile_")
    return BackboneOptions(**flags)


MODEL_FLAGS = FlagGroup(
    "backbone",
    (
        _flag("preset", Preset, BACKBONE.preset),
        _flag("random_weights", RandomWeights, BACKBONE.random_weights),
        _flag("random_text_encoder", RandomTextEncoder, BACKBONE.random_text_encoder),
        _flag("device", Device, BACKBONE.device),
        _flag("dtype", Dtype, BACKBONE.dtype),
        _flag("offload", OffloadFlag, Offload(BACKBONE.offload)),
        _flag("vae_tiling", VaeTiling, BACKBONE.vae_tiling),
        _flag("fp8", Fp8, BACKBONE.fp8),
        _flag("attention_backend", AttentionBackend, BACKBONE.attention_backend),
        _flag("compile_", Compile, BACKBONE.compile),
        _flag("vram_budget", VramBudget, BACKBONE.vram_budget),
    ),
    _backbone_options,
)
"""The model flags -> ``backbone: BackboneOptions``."""


def _step_cache_overrides(*, cache=None, cache_threshold=None, cache_interval=None, cache_calibration=None) -> dict:
    return {
        "step_cache.method": cache,
        "step_cache.threshold": cache_threshold,
        "step_cache.interval": cache_interval,
        "step_cache.calibration": None if cache_calibration is None else str(cache_calibration.expanduser().resolve()),
    }


STEP_CACHE_FLAGS = FlagGroup(
    "step_cache",
    (
        _flag("cache", StepCache, None),
        _flag("cache_threshold", CacheThreshold, None),
        _flag("cache_interval", CacheInterval, None),
        _flag("cache_calibration", CacheCalibration, None),
    ),
    _step_cache_overrides,
)
"""The step-cache flags -> ``step_cache: dict``, the spec overrides they make (None: not given)."""
