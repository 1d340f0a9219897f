"""Options and choices shared by the spec, the command line, the library and the bench, declared once.

- ``MemoryMode``, ``PinMode``, ``Offload``: the string choices (enums that compare equal to their
  values, so specs, JSON and YAML hold plain strings).
- ``BackboneOptions``: how the Wan2.2 components are built and run; ``RenderOptions``: what a render
  takes beyond the spec (it holds a ``BackboneOptions``). Their defaults are the command line's.
- The defaults that are Wan2.2 facts (frames, fps, resolution) and the default model ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from mirage_cli.base.errors import InputError
from mirage_cli.base.files import output_problem
from mirage_cli.base.limits import MAX_VRAM_BUDGET_GIB


class _Choice(str, Enum):
    """A string choice: compares equal to its value and prints as it (``f"{MemoryMode.RGB}"`` is ``rgb``)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class MemoryMode(_Choice):
    """What conditions each chunk (``mirage_cli.conditioning.conditioners``)."""

    LATENT = "latent"  # the latent spatial memory (the method)
    RGB = "rgb"  # the explicit RGB point-cloud baseline
    NONE = "none"  # plain chunked TI2V


class Projection(_Choice):
    """How a point memory is rendered into a view (``mirage_cli.geometry.splatting``)."""

    FOOTPRINT = "footprint"  # each point covers the cells of its footprint: few holes (for pinning)
    NEAREST = "nearest"  # each point its nearest cell, holes left empty (what the official Mirage code trains with)


class PinMode(_Choice):
    """How memory-covered latents are held during denoising (``mirage_cli.denoise.loop``)."""

    CLEAN = "clean"  # timestep 0, latents replaced before every step
    NOISED = "noised"  # forward-noised to the step's sigma, uniform timestep


class Progress(_Choice):
    """How ``mirage render`` reports progress on stderr (``mirage_cli.cli.progress``)."""

    AUTO = "auto"  # Rich bars on a terminal, one line per chunk otherwise
    JSONL = "jsonl"  # one JSON object per event, for programs


class Offload(_Choice):
    """diffusers / accelerate CPU offloading of the weights (CUDA only)."""

    NONE = "none"
    MODEL = "model"  # whole components, moved to the GPU when they run
    GROUP = "group"  # groups of blocks, overlapped with CUDA streams
    SEQUENTIAL = "sequential"  # layer by layer (least memory, slowest)


DEFAULT_FRAMES = 121
"""The default video length (4k+1): one Wan2.2-TI2V-5B clip."""
MAX_CHUNK_FRAMES = 121
"""The longest default chunk (``chunk_frames`` null): the clip length Wan2.2-TI2V-5B is trained on."""
DEFAULT_FPS = 24.0
"""Wan2.2-TI2V-5B's frame rate."""
DEFAULT_RESOLUTION = (1280, 704)
"""Wan2.2-TI2V-5B's native (width, height); 704x1280 works too."""
DEFAULT_MODEL = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
"""The diffusers id of Wan2.2-TI2V-5B (the spec's ``model`` default)."""
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
"""The transformers depth model for generated frames (the spec's ``depth_model`` default)."""
TINY_PRESET = "tiny"
"""``--preset tiny``: tiny random components (and the tiny depth model), seconds on a CPU."""
BACKBONE_PRESETS = (TINY_PRESET,)
"""``--preset`` values: ``tiny`` = tiny random Wan2.2 components, seconds on a CPU."""


def parse_vram_budget(text: str) -> str | float:
    """``--vram-budget``: ``auto`` | ``none`` | a number of GiB above 0 and at most ``MAX_VRAM_BUDGET_GIB``
    (``22``, ``22g``, ``22GiB``); else an InputError naming ``--vram-budget``."""
    value = str(text).strip().lower()
    if value in ("auto", "none"):
        return value
    try:
        gib = float(value.removesuffix("gib").removesuffix("g"))
    except ValueError:
        gib = float("nan")
    if not (math.isfinite(gib) and 0 < gib <= MAX_VRAM_BUDGET_GIB):
        raise InputError(f"must be auto, none or a number of GiB above 0 and at most {MAX_VRAM_BUDGET_GIB:,} (e.g. 22), "
                         f"got {str(text)[:40]!r}", field="--vram-budget")
    return gib


@dataclass(frozen=True)
class BackboneOptions:
    """How the Wan2.2 components are built and run (``mirage_cli.backbone.load_backbone``).

    Attributes:
        preset: ``tiny`` for tiny random components, or None for real weights.
        random_weights: the real 5B architecture with random weights (speed tests, no download).
        random_text_encoder: with ``random_weights``, a real-size UMT5-XXL text encoder with random
            weights instead of a hash embedder (memory figures then include its 10.6 GiB).
        device: ``auto`` (CUDA when available) | ``cuda`` | ``cuda:N`` | ``cpu``.
        dtype: transformer and text encoder dtype: ``auto`` (bfloat16 on CUDA, float32 on the CPU,
            where bfloat16 matmuls are ~10x slower) | ``bfloat16`` | ``float16`` | ``float32``.
            The VAE is always float32.
        offload: diffusers offloading of the weights to the CPU (``Offload``).
        vae_tiling: decode with VAE tiling (less memory).
        fp8: store the transformer's weights in fp8 (layerwise casting).
        attention_backend: a diffusers attention backend name, or None for the default.
        compile: regional compilation of the repeated transformer blocks.
        vram_budget: ``auto`` (the GPU's free memory) | ``none`` | GiB: on a GPU, offload and VAE tiling
            are added to these options when the predicted peak needs it (``mirage_cli.vram.plan``).
    """

    preset: str | None = None
    random_weights: bool = False
    random_text_encoder: bool = False
    device: str = "auto"
    dtype: str = "auto"
    offload: str = Offload.NONE.value
    vae_tiling: bool = False
    fp8: bool = False
    attention_backend: str | None = None
    compile: bool = False
    vram_budget: str = "auto"

    def resolved(self) -> BackboneOptions:
        """The same options with ``dtype="auto"`` made concrete for the device they will run on."""
        if self.dtype != "auto":
            return self
        import torch

        cuda = self.device.startswith("cuda") or (self.device == "auto" and torch.cuda.is_available())
        return replace(self, dtype="bfloat16" if cuda else "float32")


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


@dataclass(frozen=True)
class VideoOptions:
    """What the render writes besides its checkpoints (``mirage_cli.base.video``).

    Attributes:
        crf: x264 constant rate factor of the MP4 (0-51, lower is better quality).
        encoder_preset: x264 speed preset of the MP4 (``X264_PRESETS``).
        lossless: also write ``video.mkv``: FFV1, exactly the rendered RGB frames.
        frames_dir: also write every frame as a PNG into this directory, or None.
    """

    crf: int = 18
    encoder_preset: str = "medium"
    lossless: bool = False
    frames_dir: Path | None = None

    def problems(self) -> list[tuple[str, str]]:
        """(flag, message) for every value that cannot be used."""
        out = []
        if not 0 <= self.crf <= 51:
            out.append(("--crf", f"must be in 0..51, got {self.crf}"))
        if self.encoder_preset not in X264_PRESETS:
            out.append(("--encoder-preset", f"must be one of {', '.join(X264_PRESETS)}, got {self.encoder_preset!r}"))
        if self.frames_dir is not None:
            why = output_problem(self.frames_dir, directory=True)
            if why:
                out.append(("--frames", why))
        return out

    def config(self) -> dict:
        """The part of the render's configuration these options change (fingerprinted)."""
        frames = None if self.frames_dir is None else str(self.frames_dir.expanduser().resolve())
        return {"crf": self.crf, "encoder_preset": self.encoder_preset, "lossless": self.lossless, "frames_dir": frames}


@dataclass(frozen=True)
class RenderOptions:
    """What ``mirage render`` takes beyond the spec.

    Attributes:
        out: the run directory (None: the spec's ``output``).
        backbone: how the model runs (``BackboneOptions``).
        video: what is written besides checkpoints (``VideoOptions``).
        restart: discard an existing run in ``out`` and start over.
        trace_dir: write a torch.profiler Chrome trace of one chunk into this directory.
        parallel: ``ulysses`` | ``ring``: split each denoising step over torchrun's processes
            (``mirage_cli.render.parallel``); None: one process.
    """

    out: Path | None = None
    backbone: BackboneOptions = field(default_factory=BackboneOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    restart: bool = False
    trace_dir: Path | None = None
    parallel: str | None = None

    def problems(self) -> list[tuple[str, str]]:
        """(flag, message) for every option that cannot be used: the video options and the output
        directories (``--out``, ``--frames``, ``--trace``), checked before anything is written."""
        out = self.video.problems()
        for flag, path in (("--out", self.out), ("--trace", self.trace_dir)):
            why = None if path is None else output_problem(path, directory=True)
            if why:
                out.append((flag, why))
        return out
