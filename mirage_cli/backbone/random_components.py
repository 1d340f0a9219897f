"""Components with random weights from the real classes: the tiny preset (seconds on a CPU, and
``save_tiny_model`` to exercise the real loading code) and the real 5B architecture (speed tests on
a GPU without any download)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mirage_cli.backbone.configs import (
    tiny_text_encoder_config,
    tiny_transformer_config,
    tiny_vae_config,
    umt5_xxl_config,
    wan22_scheduler_config,
    wan22_transformer_config,
    wan22_vae_config,
)
from mirage_cli.backbone.text import TEXT_MAX_LENGTH, HashTextEmbedder, UMT5TextEmbedder, build_byte_tokenizer
from mirage_cli.backbone.wan import Backbone


@dataclass
class TinyComponents:
    """The float32 tiny components, as built (before any dtype cast or device move)."""

    vae: torch.nn.Module
    transformer: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict


def build_tiny_components(seed: int = 0) -> TinyComponents:
    """Build the tiny random components, reproducibly, without touching the caller's global RNG.

    Module initializers draw from torch's global generator; they run inside ``fork_rng`` seeded with
    ``seed``, so the same seed gives the same weights and the caller's RNG state is left unchanged.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    tokenizer = build_byte_tokenizer(TEXT_MAX_LENGTH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**tiny_vae_config()).eval()
        transformer = WanTransformer3DModel(**tiny_transformer_config()).eval()
        text_encoder = UMT5EncoderModel(tiny_text_encoder_config(len(tokenizer))).eval()
    return TinyComponents(vae, transformer, text_encoder, tokenizer, wan22_scheduler_config())


def save_tiny_model(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny components in the diffusers layout; ``load_backbone(directory)`` loads them back.

    Creates ``vae/``, ``transformer/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and a
    ``model_index.json`` (float32 safetensors weights). Returns the directory.
    """
    from diffusers import UniPCMultistepScheduler

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parts = build_tiny_components(seed)
    parts.vae.save_pretrained(directory / "vae", safe_serialization=True)
    parts.transformer.save_pretrained(directory / "transformer", safe_serialization=True)
    parts.text_encoder.save_pretrained(directory / "text_encoder", safe_serialization=True)
    parts.tokenizer.save_pretrained(directory / "tokenizer")
    UniPCMultistepScheduler.from_config(parts.scheduler_config).save_pretrained(directory / "scheduler")
    index = {
        "_class_name": "WanImageToVideoPipeline",
        "expand_timesteps": True,
        "vae": ["diffusers", "AutoencoderKLWan"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "AutoTokenizer"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return directory


def keep_fp32_modules(model: torch.nn.Module, dtype: torch.dtype) -> list[str]:
    """The module names ``from_pretrained(dtype)`` keeps in float32: a diffusers model's
    ``_keep_in_fp32_modules``; for a transformers model, ``_keep_in_fp32_modules_strict`` and, in
    float16 only, ``_keep_in_fp32_modules`` (UMT5's ``wo`` stays bfloat16 in a bfloat16 load)."""
    keep = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    if not hasattr(model, "_keep_in_fp32_modules_strict"):  # diffusers
        return keep
    strict = list(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    return strict + (keep if dtype == torch.float16 else [])


def cast_like_from_pretrained(model: torch.nn.Module, dtype: torch.dtype, keep_fp32: list[str]) -> None:
    """Cast floating parameters to ``dtype`` in place, keeping modules named in ``keep_fp32`` in float32.

    The rule ``from_pretrained(torch_dtype=...)`` applies: a parameter stays float32 when one of the
    dotted parts of its name is in ``keep_fp32``. Buffers keep their dtype.
    """
    for name, parameter in model.named_parameters():
        if not parameter.is_floating_point():
            continue
        target = torch.float32 if any(part in keep_fp32 for part in name.split(".")) else dtype
        parameter.data = parameter.data.to(target)


def tiny_backbone(device: torch.device, dtype: torch.dtype) -> Backbone:
    """The tiny preset on ``device``: cast exactly as loading the saved tiny model would."""
    parts = build_tiny_components()
    cast_like_from_pretrained(parts.transformer, dtype, keep_fp32_modules(parts.transformer, dtype))
    cast_like_from_pretrained(parts.text_encoder, dtype, keep_fp32_modules(parts.text_encoder, dtype))
    return Backbone(
        vae=parts.vae,
        transformer=parts.transformer,
        text_embedder=UMT5TextEmbedder(parts.tokenizer, parts.text_encoder, TEXT_MAX_LENGTH),
        scheduler_config=parts.scheduler_config,
        device=device,
        dtype=dtype,
        source="tiny",
    )




def empty_model(cls, config: dict) -> torch.nn.Module:
    """Instantiate ``cls(**config)`` with parameters on the meta device (no memory, no init)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = cls(**config)
    _tie(model)  # what a normal construction ties (a transformers encoder's shared embedding) stays one tensor
    return model


def _tie(model: torch.nn.Module) -> None:
    if callable(getattr(model, "tie_weights", None)):
        model.tie_weights()


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(parameter.numel() for parameter in model.parameters())


def materialize_random(
    model: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    keep_fp32: list[str],
    generator: torch.Generator,
) -> torch.nn.Module:
    """Give every meta parameter of ``model`` random values, stored on ``device``.

    Matrices and kernels ~ N(0, 0.02) from ``generator``, biases 0, other vectors (norm scales) 1.
    Values are drawn on the generator's device, one parameter at a time, then moved to ``device``: a
    GPU generator fills CPU-held weights (offloading) in seconds where the CPU would take minutes, and
    gives the same weights as a build on the GPU. Parameters under a module named in ``keep_fp32``
    are float32, the rest ``dtype``. Buffers are moved to ``device`` as they are.
    """
    from accelerate.utils import set_module_tensor_to_device

    for name, parameter in list(model.named_parameters()):
        target = torch.float32 if any(part in keep_fp32 for part in name.split(".")) else dtype
        value = torch.empty(parameter.shape, device=generator.device, dtype=target)
        if name.endswith("bias"):
            value.zero_()
        elif parameter.ndim <= 1:
            value.fill_(1.0)
        else:
            value.normal_(0.0, 0.02, generator=generator)
        set_module_tensor_to_device(model, name, device, value=value.to(device), dtype=target)
    _tie(model)  # tied parameters are listed once: their other holders take the new value here
    return model.to(device)


def random_text_embedder(config, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> UMT5TextEmbedder:
    """A ``UMT5EncoderModel`` of ``config`` with random weights made on ``device`` (no CPU copy), behind
    the byte tokenizer: the text encoder's memory and time at its real size, without a download."""
    from transformers import UMT5EncoderModel

    encoder = empty_model(UMT5EncoderModel, {"config": config})
    materialize_random(encoder, device, dtype, keep_fp32_modules(encoder, dtype), generator).eval()
    return UMT5TextEmbedder(build_byte_tokenizer(TEXT_MAX_LENGTH), encoder)


def random_weights_backbone(device: torch.device, dtype: torch.dtype, build_on_cpu: bool = False,
                            text_encoder: bool = False) -> Backbone:
    """The 5B architecture with random weights, created where it will live (no extra CPU copy).

    ``device`` is the execution device; with ``build_on_cpu`` (offloading) the weights are stored on
    the CPU instead (still drawn on ``device``: the same weights either way). ``text_encoder``: a
    real-size UMT5-XXL encoder with random weights (``random_text_embedder``) instead of the hash
    embedder, so memory figures include its 10.6 GiB.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    home = torch.device("cpu") if build_on_cpu else device
    generator = torch.Generator(device=device).manual_seed(0)
    transformer = empty_model(WanTransformer3DModel, wan22_transformer_config())
    keep = list(WanTransformer3DModel._keep_in_fp32_modules or [])
    materialize_random(transformer, home, dtype, keep, generator).eval()
    vae = empty_model(AutoencoderKLWan, wan22_vae_config())
    materialize_random(vae, home, torch.float32, [], generator).eval()
    if text_encoder:
        embedder = random_text_embedder(umt5_xxl_config(), home, dtype, generator)
    else:
        embedder = HashTextEmbedder(dim=int(transformer.config.text_dim), max_length=TEXT_MAX_LENGTH)
    return Backbone(
        vae=vae,
        transformer=transformer,
        text_embedder=embedder,
        scheduler_config=wan22_scheduler_config(),
        device=device,
        dtype=dtype,
        source="random-weights",
    )
