"""The Wan2.2-TI2V-5B components: load (real, tiny, random-weights), encode prompts, VAE encode/decode.

Three ways to get a ``Backbone``, all through the same diffusers / transformers classes
(``AutoencoderKLWan``, ``WanTransformer3DModel``, ``UMT5EncoderModel``):

- ``load_backbone(model)``: a diffusers model id (resolved through the Hugging Face cache, honouring
  offline mode) or a local directory in the diffusers layout (``vae/``, ``transformer/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``). Missing files are named before anything loads.
- ``load_backbone(preset="tiny")``: tiny random components, seeded, seconds on a CPU; the text
  encoder is a tiny random UMT5 behind a byte-level tokenizer built locally. ``save_tiny_model(dir)``
  writes the same components in the diffusers layout, so ``load_backbone(dir)`` exercises the real
  loading code.
- ``load_backbone(random_weights=True)``: the real 5B architecture with random weights, created
  directly on the target device (no 20 GB CPU init), with a model-free hashed text embedder at
  4096 x 512. For measuring speed on a GPU without any download.

Latents are *normalized* everywhere outside this module: ``(mu - latents_mean) / latents_std`` per
channel, as Wan's pipeline feeds the transformer. Memory, speed and precision options that diffusers
provides (offload, VAE tiling, layerwise fp8, attention backends, regional compilation) are passed
through to diffusers, not reimplemented.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mirage_cli.errors import InputError, Problem
from mirage_cli.options import BACKBONE_PRESETS, DEFAULT_MODEL, BackboneOptions, Offload
from mirage_cli.text_embedder import (
    TEXT_MAX_LENGTH,
    HashTextEmbedder,
    TextEmbedder,
    UMT5TextEmbedder,
    build_byte_tokenizer,
)

logger = logging.getLogger(__name__)

WAN_DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
"""Wan's default negative prompt (``sample_neg_prompt`` of the Wan2.2 configs), used when none is given."""

SPATIAL_SCALE = 16
"""Pixels per latent cell along x and y (VAE 2x2 patchify, then 8x)."""
TEMPORAL_SCALE = 4
"""Pixel frames per latent frame after the first (causal VAE): F = 4 * (T - 1) + 1."""

DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
CPU_PARAMETER_LIMIT = 500_000_000
"""A transformer larger than this is a real-size model: refused on the CPU (hours per step)."""

# Per-channel statistics of the Wan2.2 VAE latents, from the published
# Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json (the same 48 values the Wan2.2 release uses).
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Component configurations
# --------------------------------------------------------------------------------------------------


def wan22_vae_config() -> dict:
    """``AutoencoderKLWan`` kwargs of the Wan2.2 VAE (z_dim 48, 16x spatial, 4x temporal)."""
    return {
        "base_dim": 160,
        "decoder_base_dim": 256,
        "z_dim": 48,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "latents_mean": list(WAN22_LATENTS_MEAN),
        "latents_std": list(WAN22_LATENTS_STD),
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_spatial": SPATIAL_SCALE,
        "scale_factor_temporal": TEMPORAL_SCALE,
    }


def wan22_transformer_config() -> dict:
    """``WanTransformer3DModel`` kwargs of Wan2.2-TI2V-5B (24 heads x 128, 30 layers, ~5B parameters)."""
    return {
        "patch_size": [1, 2, 2],
        "num_attention_heads": 24,
        "attention_head_dim": 128,
        "in_channels": 48,
        "out_channels": 48,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 14336,
        "num_layers": 30,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
    }


def wan22_scheduler_config() -> dict:
    """``UniPCMultistepScheduler`` config of Wan2.2 (flow prediction, flow sigmas, shift 5)."""
    return {
        "num_train_timesteps": 1000,
        "solver_order": 2,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": 5.0,
        "predict_x0": True,
        "solver_type": "bh2",
        "lower_order_final": True,
        "disable_corrector": [],
        "timestep_spacing": "linspace",
        "final_sigmas_type": "zero",
    }


def tiny_vae_config() -> dict:
    """A tiny Wan2.2-style VAE: same geometry (patch 2, 16x spatial, 4x temporal, z_dim 48), ~80k parameters."""
    return {
        **wan22_vae_config(),
        "base_dim": 8,
        "decoder_base_dim": 8,
        "dim_mult": [1, 1, 1, 1],
        "num_res_blocks": 0,
    }


def tiny_transformer_config() -> dict:
    """A tiny ``WanTransformer3DModel``: patch (1,2,2), 2 layers, 2 heads x 12, text_dim 32, 48 channels."""
    return {
        **wan22_transformer_config(),
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "text_dim": 32,
        "freq_dim": 256,
        "ffn_dim": 32,
        "num_layers": 2,
    }


def tiny_text_encoder_config(vocab_size: int):
    """A tiny ``UMT5Config`` whose hidden size (32) matches the tiny transformer's ``text_dim``."""
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


# --------------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------------


@dataclass
class Backbone:
    """Wan2.2-TI2V components on one execution device.

    ``vae`` (float32), ``transformer`` (in ``dtype``, or fp8 storage with layerwise casting),
    ``text_embedder`` (prompt -> [1, 512, text_dim]), ``scheduler_config`` (UniPC config dict).
    ``device`` is where computation happens (with offloading the weights live on the CPU between
    uses). ``source`` says where the weights came from (a directory, ``"tiny"``, ``"random-weights"``).
    """

    vae: torch.nn.Module
    transformer: torch.nn.Module
    text_embedder: TextEmbedder
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    source: str
    offload: str = "none"
    offload_hooks: dict = field(default_factory=dict, repr=False)

    @property
    def z_dim(self) -> int:
        """Latent channels C (48 for Wan2.2)."""
        return int(self.vae.config.z_dim)

    @property
    def spatial_scale(self) -> int:
        """Pixels per latent cell (16)."""
        return int(self.vae.config.scale_factor_spatial)

    @property
    def temporal_scale(self) -> int:
        """Pixel frames per latent frame after the first (4)."""
        return int(self.vae.config.scale_factor_temporal)

    @property
    def text_dim(self) -> int:
        """Width D of the prompt embeddings the transformer cross-attends to."""
        return int(self.transformer.config.text_dim)

    def latents_mean(self) -> torch.Tensor:
        """Per-channel latent mean: [1, C, 1, 1, 1] float32 on ``device``."""
        return torch.tensor(self.vae.config.latents_mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1)

    def latents_std(self) -> torch.Tensor:
        """Per-channel latent std: [1, C, 1, 1, 1] float32 on ``device``."""
        return torch.tensor(self.vae.config.latents_std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1)

    def use(self, component: str) -> None:
        """With ``offload="model"``, move every other component back to the CPU before ``component`` runs.

        ``component`` is ``"vae"``, ``"transformer"`` or ``"text_encoder"``; the component itself is
        moved to the device by its accelerate hook when it is called. A no-op for other offload modes.
        """
        for name, hook in self.offload_hooks.items():
            if name != component:
                hook.offload()

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompt and the negative prompt (Wan's default when ``None``).

        Returns ``(cond, uncond)``, each [1, L, D] in ``dtype`` on ``device`` (L = 512 for Wan2.2).
        """
        if negative_prompt is None:
            negative_prompt = WAN_DEFAULT_NEGATIVE_PROMPT
        self.use("text_encoder")
        embeds = self.text_embedder.encode([prompt, negative_prompt], device=self.device, dtype=self.dtype)
        return embeds[0:1], embeds[1:2]  # [1, L, D] each

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE-encode pixels to normalized latents (posterior mode, like Wan's pipeline).

        ``pixels``: [B, 3, F, H, W] float in [-1, 1], F = 4k+1, H and W multiples of 16.
        Returns [B, C, T, h, w] float32 on ``device``: T = (F-1)/4 + 1, h = H/16, w = W/16,
        normalized as (mu - latents_mean) / latents_std.
        """
        _check_pixels(pixels, self.spatial_scale, self.temporal_scale)
        self.use("vae")
        posterior = self.vae.encode(pixels.to(device=self.device, dtype=torch.float32)).latent_dist
        mu = posterior.mode().to(device=self.device, dtype=torch.float32)  # [B, C, T, h, w]
        return (mu - self.latents_mean()) * (1.0 / self.latents_std())  # the pipeline's exact arithmetic

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode normalized latents to pixels.

        ``latents``: [B, C, T, h, w] normalized (see ``encode_video``). Returns [B, 3, F, H, W] float32
        in [-1, 1] on ``device``: F = 4(T-1)+1, H = 16h, W = 16w.
        """
        if latents.ndim != 5 or latents.shape[1] != self.z_dim:
            raise ValueError(
                f"latents: expected shape [B, {self.z_dim}, T, h, w], got {list(latents.shape)}"
            )
        self.use("vae")
        z = latents.to(device=self.device, dtype=torch.float32) / (1.0 / self.latents_std()) + self.latents_mean()
        pixels = self.vae.decode(z, return_dict=False)[0]  # [B, 3, F, H, W]
        return pixels.to(device=self.device, dtype=torch.float32).clamp(-1.0, 1.0)

    def make_scheduler(self, shift: float):
        """A fresh ``UniPCMultistepScheduler`` (flow prediction, flow sigmas) with ``flow_shift=shift``."""
        from diffusers import UniPCMultistepScheduler

        config = {
            **self.scheduler_config,
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
            "flow_shift": float(shift),
        }
        return UniPCMultistepScheduler.from_config(config)


def _check_pixels(pixels: torch.Tensor, spatial: int, temporal: int) -> None:
    """Raise ValueError unless ``pixels`` is [B, 3, F, H, W] with F = 4k+1 and H, W multiples of 16."""
    if pixels.ndim != 5 or pixels.shape[1] != 3:
        raise ValueError(f"pixels: expected shape [B, 3, F, H, W], got {list(pixels.shape)}")
    frames, height, width = pixels.shape[2:]
    if (frames - 1) % temporal != 0:
        raise ValueError(f"pixels: frame count F must be {temporal}k+1, got F={frames}")
    if height % spatial or width % spatial:
        raise ValueError(f"pixels: H and W must be multiples of {spatial}, got H={height}, W={width}")


# --------------------------------------------------------------------------------------------------
# Tiny components
# --------------------------------------------------------------------------------------------------


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


def _cast_like_from_pretrained(model: torch.nn.Module, dtype: torch.dtype, keep_fp32: list[str]) -> None:
    """Cast floating parameters to ``dtype`` in place, keeping modules named in ``keep_fp32`` in float32.

    The rule ``from_pretrained(torch_dtype=...)`` applies: a parameter stays float32 when one of the
    dotted parts of its name is in ``keep_fp32``. Buffers keep their dtype.
    """
    for name, parameter in model.named_parameters():
        if not parameter.is_floating_point():
            continue
        target = torch.float32 if any(part in keep_fp32 for part in name.split(".")) else dtype
        parameter.data = parameter.data.to(target)


def _tiny_backbone(device: torch.device, dtype: torch.dtype) -> Backbone:
    """The tiny preset on ``device``: cast exactly as loading the saved tiny model would."""
    parts = build_tiny_components()
    _cast_like_from_pretrained(parts.transformer, dtype, list(parts.transformer._keep_in_fp32_modules or []))
    text_keep = list(parts.text_encoder._keep_in_fp32_modules or []) if dtype == torch.float16 else []
    _cast_like_from_pretrained(parts.text_encoder, dtype, text_keep)
    return Backbone(
        vae=parts.vae,
        transformer=parts.transformer,
        text_embedder=UMT5TextEmbedder(parts.tokenizer, parts.text_encoder, TEXT_MAX_LENGTH),
        scheduler_config=parts.scheduler_config,
        device=device,
        dtype=dtype,
        source="tiny",
    )


# --------------------------------------------------------------------------------------------------
# Random weights at the real size
# --------------------------------------------------------------------------------------------------


def _empty_model(cls, config: dict) -> torch.nn.Module:
    """Instantiate ``cls(**config)`` with parameters on the meta device (no memory, no init)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return cls(**config)


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
    """Give every meta parameter of ``model`` random values directly on ``device``.

    Matrices and kernels ~ N(0, 0.02) from ``generator`` (a generator on ``device``), biases 0, other
    vectors (norm scales) 1. Parameters under a module named in ``keep_fp32`` are float32, the rest
    ``dtype``. Buffers are moved to ``device`` as they are.
    """
    from accelerate.utils import set_module_tensor_to_device

    for name, parameter in list(model.named_parameters()):
        target = torch.float32 if any(part in keep_fp32 for part in name.split(".")) else dtype
        value = torch.empty(parameter.shape, device=device, dtype=target)
        if name.endswith("bias"):
            value.zero_()
        elif parameter.ndim <= 1:
            value.fill_(1.0)
        else:
            value.normal_(0.0, 0.02, generator=generator)
        set_module_tensor_to_device(model, name, device, value=value, dtype=target)
    return model.to(device)


def _random_weights_backbone(device: torch.device, dtype: torch.dtype, build_on_cpu: bool = False) -> Backbone:
    """The 5B architecture with random weights, created where it will live (no extra CPU copy).

    ``device`` is the execution device; with ``build_on_cpu`` (offloading) the weights are created
    on the CPU instead.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    home = torch.device("cpu") if build_on_cpu else device
    generator = torch.Generator(device=home).manual_seed(0)
    transformer = _empty_model(WanTransformer3DModel, wan22_transformer_config())
    keep = list(WanTransformer3DModel._keep_in_fp32_modules or [])
    materialize_random(transformer, home, dtype, keep, generator).eval()
    vae = _empty_model(AutoencoderKLWan, wan22_vae_config())
    materialize_random(vae, home, torch.float32, [], generator).eval()
    return Backbone(
        vae=vae,
        transformer=transformer,
        text_embedder=HashTextEmbedder(dim=int(transformer.config.text_dim), max_length=TEXT_MAX_LENGTH),
        scheduler_config=wan22_scheduler_config(),
        device=device,
        dtype=dtype,
        source="random-weights",
    )


# --------------------------------------------------------------------------------------------------
# Model directories and the Hugging Face cache
# --------------------------------------------------------------------------------------------------

WEIGHTS_HINT = (
    f"get the weights with `hf download {DEFAULT_MODEL}` (or `huggingface-cli download {DEFAULT_MODEL}`) "
    "on a machine with internet access, or pass --model DIR (a diffusers-layout directory), "
    "or use --preset tiny for tiny random components"
)


def _weights_problems(folder: Path, single: str, index: str, what: str) -> list[str]:
    """Missing-file messages for one component's safetensors weights (single file or sharded)."""
    if (folder / single).is_file():
        return []
    index_path = folder / index
    if not index_path.is_file():
        return [f"{folder.name}/{single} is missing ({what}; safetensors weights are required)"]
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{folder.name}/{index} is unreadable ({exc})"]
    return [
        f"{folder.name}/{shard} is missing ({what}, a shard listed in {index})"
        for shard in shards
        if not (folder / shard).is_file()
    ]


def check_model_dir(directory: str | os.PathLike) -> list[str]:
    """Everything missing from a diffusers-layout Wan2.2 model directory, one message per missing item.

    Needs ``vae/`` and ``transformer/`` (``config.json`` + ``diffusion_pytorch_model.safetensors`` or a
    sharded ``.safetensors.index.json`` with its shards), ``text_encoder/`` (``config.json`` +
    ``model.safetensors`` or index + shards), ``tokenizer/`` (``tokenizer_config.json`` and
    ``tokenizer.json`` or ``spiece.model``) and ``scheduler/scheduler_config.json``. Empty when complete.
    """
    root = Path(directory)
    missing: list[str] = []
    diffusers_weights = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
    components = [
        ("vae", "config.json", diffusers_weights, "the VAE weights"),
        ("transformer", "config.json", diffusers_weights, "the transformer weights"),
        ("text_encoder", "config.json", ("model.safetensors", "model.safetensors.index.json"), "the text encoder"),
    ]
    for name, config_file, (single, index), what in components:
        folder = root / name
        if not folder.is_dir():
            missing.append(f"{name}/ is missing (the {name} subfolder)")
            continue
        if not (folder / config_file).is_file():
            missing.append(f"{name}/{config_file} is missing")
        missing.extend(_weights_problems(folder, single, index, what))
    tokenizer = root / "tokenizer"
    if not tokenizer.is_dir():
        missing.append("tokenizer/ is missing (the tokenizer subfolder)")
    else:
        if not (tokenizer / "tokenizer_config.json").is_file():
            missing.append("tokenizer/tokenizer_config.json is missing")
        if not ((tokenizer / "tokenizer.json").is_file() or (tokenizer / "spiece.model").is_file()):
            missing.append("tokenizer/tokenizer.json (or spiece.model) is missing")
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json is missing")
    return missing


def _is_hub_id(model: str) -> bool:
    """True when ``model`` reads as a hub id ``org/name`` and is not an existing local path."""
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        return False
    parts = model.split("/")
    return len(parts) == 2 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part) for part in parts)


def _hub_cache_dir() -> str:
    """The hub cache directory, read from the environment at call time (HF_HUB_CACHE, then HF_HOME)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def _offline(local_files_only: bool | None) -> bool:
    """Whether the hub may not be contacted: ``local_files_only`` if given, else huggingface_hub's own
    offline rule (``HF_HUB_OFFLINE``)."""
    if local_files_only is not None:
        return local_files_only
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


HUB_PATTERNS = ["model_index.json", "vae/*", "transformer/*", "text_encoder/*", "tokenizer/*", "scheduler/*"]


def resolve_model_dir(model: str, local_files_only: bool | None = None) -> Path:
    """Turn ``--model`` into a complete local diffusers-layout directory, or raise InputError.

    A local directory is checked as is. A hub id is looked up in the Hugging Face cache; when it is
    absent or incomplete and the hub may be contacted (not HF_HUB_OFFLINE / ``local_files_only``),
    the missing files are fetched with ``huggingface_hub.snapshot_download``. Every failure names
    the missing files and how to get them.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return _complete_or_raise(path)
    if _is_hub_id(model):
        return _resolve_hub_id(model, local_files_only)
    message = "not a directory" if path.exists() else "model directory does not exist"
    raise InputError(Problem(file=str(path), field="model", message=f"{message}; {WEIGHTS_HINT}"))


def _complete_or_raise(directory: Path) -> Path:
    """Return ``directory`` when ``check_model_dir`` finds nothing missing, else raise InputError."""
    missing = check_model_dir(directory)
    if missing:
        problems = [Problem(file=str(directory), field="model", message=message) for message in missing]
        problems.append(Problem(file=str(directory), field="model", message=WEIGHTS_HINT))
        raise InputError(problems)
    return directory


def _resolve_hub_id(repo_id: str, local_files_only: bool | None) -> Path:
    """Find (or, when allowed, fetch) a hub model's snapshot in the cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = _hub_cache_dir()
    offline = _offline(local_files_only)
    snapshot: Path | None = None
    try:
        found = snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True, allow_patterns=HUB_PATTERNS)
        snapshot = Path(found)
    except (LocalEntryNotFoundError, OSError, ValueError):
        snapshot = None
    if snapshot is not None and not check_model_dir(snapshot):
        return snapshot
    if not offline:
        logger.info("fetching %s from the Hugging Face hub into %s", repo_id, cache_dir)
        try:
            snapshot = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS))
        except Exception as exc:  # network, auth, unknown repo: all become a user-facing message
            logger.warning("downloading %s failed: %s", repo_id, exc)
        else:
            return _complete_or_raise(snapshot)
    if snapshot is None:
        mode = "offline mode (HF_HUB_OFFLINE)" if offline else "the download failed"
        raise InputError(
            Problem(
                file=None,
                field="model",
                message=f"{repo_id} is not in the Hugging Face cache ({cache_dir}) and {mode}; {WEIGHTS_HINT}",
            )
        )
    return _complete_or_raise(snapshot)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is an InputError."""
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {device!r} (use auto, cuda, cuda:N or cpu)", field="device") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        message = "CUDA was requested but no CUDA device is available (use --device cpu with --preset tiny)"
        raise InputError(message, field="device")
    if resolved.type not in {"cuda", "cpu"}:
        raise InputError(f"unsupported device {device!r} (use auto, cuda, cuda:N or cpu)", field="device")
    return resolved


def resolve_dtype(dtype: str) -> torch.dtype:
    """``bfloat16`` | ``float16`` | ``float32`` (or bf16/fp16/fp32) -> torch dtype; else InputError."""
    try:
        return DTYPES[dtype.strip().lower()]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r} (use bfloat16, float16 or float32)", field="dtype") from None


def _refuse_real_size_on_cpu(parameters: int, what: str) -> None:
    """InputError for a real-size transformer on the CPU, pointing to the tiny preset."""
    raise InputError(
        Problem(
            file=None,
            field="device",
            message=(
                f"{what} has {parameters / 1e9:.1f}B parameters and would take hours per step on the CPU; "
                "run it on a CUDA GPU, or use --preset tiny for a CPU run with tiny random components"
            ),
        )
    )


def _transformer_parameter_count(directory: Path) -> int:
    """Parameters of the transformer described by ``directory/transformer/config.json`` (meta device)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    config_path = directory / "transformer" / "config.json"
    try:
        config = json.loads(config_path.read_text())
        with init_empty_weights(include_buffers=False):
            model = WanTransformer3DModel.from_config(config)
    except (OSError, ValueError, TypeError) as exc:
        problem = Problem(file=str(config_path), field="model", message=f"unreadable transformer config: {exc}")
        raise InputError(problem) from exc
    return count_parameters(model)


def _load_from_dir(directory: Path, device: torch.device, dtype: torch.dtype, stage_on_cpu: bool) -> Backbone:
    """Load the five components of a checked diffusers-layout directory through from_pretrained."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    target = torch.device("cpu") if stage_on_cpu else device
    try:
        vae = AutoencoderKLWan.from_pretrained(
            directory, subfolder="vae", torch_dtype=torch.float32, local_files_only=True
        )
        transformer = WanTransformer3DModel.from_pretrained(
            directory, subfolder="transformer", torch_dtype=dtype, local_files_only=True
        )
        text_encoder = UMT5EncoderModel.from_pretrained(directory / "text_encoder", dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True)
        scheduler_config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(Problem(file=str(directory), field="model", message=f"cannot load the model: {exc}")) from exc
    return Backbone(
        vae=vae.to(target).eval(),
        transformer=transformer.to(target).eval(),
        text_embedder=UMT5TextEmbedder(tokenizer, text_encoder.to(target).eval(), TEXT_MAX_LENGTH),
        scheduler_config=dict(scheduler_config),
        device=device,
        dtype=dtype,
        source=str(directory),
    )


def load_backbone(
    model: str = DEFAULT_MODEL, options: BackboneOptions | None = None, *, local_files_only: bool | None = None
) -> Backbone:
    """Load the Wan2.2-TI2V components and apply the memory/speed options.

    Args:
        model: diffusers id or local directory (ignored with ``options.preset`` or
            ``options.random_weights``).
        options: ``BackboneOptions`` (preset, random weights, device, dtype, offload, VAE tiling,
            fp8, attention backend, compile); defaults when None.
        local_files_only: never contact the hub (default: ``HF_HUB_OFFLINE``).

    Raises:
        InputError: bad options, missing weights, or a real-size model on the CPU.
    """
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    options = (options or BackboneOptions()).resolved()
    torch_device, torch_dtype = _check_options(options)
    if options.preset == "tiny":
        backbone = _tiny_backbone(torch_device, torch_dtype)
        if options.offload == Offload.NONE:
            _move(backbone, torch_device)
    elif options.random_weights:
        from diffusers import WanTransformer3DModel

        if torch_device.type == "cpu":
            size = count_parameters(_empty_model(WanTransformer3DModel, wan22_transformer_config()))
            _refuse_real_size_on_cpu(size, "the Wan2.2-TI2V-5B architecture (--random-weights)")
        # Offloaded weights live on the CPU: build them there, else directly on the device.
        backbone = _random_weights_backbone(torch_device, torch_dtype, build_on_cpu=options.offload != Offload.NONE)
    else:
        directory = resolve_model_dir(model, local_files_only)
        if torch_device.type == "cpu":
            size = _transformer_parameter_count(directory)
            if size > CPU_PARAMETER_LIMIT:
                _refuse_real_size_on_cpu(size, f"the model in {directory}")
        backbone = _load_from_dir(directory, torch_device, torch_dtype, stage_on_cpu=options.offload != Offload.NONE)
    return apply_options(backbone, options)


def _check_options(options: BackboneOptions) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of ``options``; InputError naming the option for anything unusable."""
    if options.preset is not None and options.preset not in BACKBONE_PRESETS:
        raise InputError(f"unknown preset {options.preset!r} (available: {', '.join(BACKBONE_PRESETS)})", field="preset")
    if options.preset is not None and options.random_weights:
        raise InputError("--preset and --random-weights exclude each other", field="preset")
    if options.offload not in Offload.values():
        raise InputError(f"unknown offload mode {options.offload!r} (use {', '.join(Offload.values())})", field="offload")
    torch_dtype = resolve_dtype(options.dtype)
    torch_device = resolve_device(options.device)
    if options.offload != Offload.NONE and torch_device.type != "cuda":
        raise InputError(f"--offload {options.offload} needs a CUDA device (the device is {torch_device})", field="offload")
    return torch_device, torch_dtype


def _move(backbone: Backbone, device: torch.device) -> None:
    """Move every component's weights to ``device``."""
    backbone.vae.to(device)
    backbone.transformer.to(device)
    text_encoder = getattr(backbone.text_embedder, "text_encoder", None)
    if text_encoder is not None:
        text_encoder.to(device)


# --------------------------------------------------------------------------------------------------
# Memory and speed options: calls into diffusers / accelerate
# --------------------------------------------------------------------------------------------------


def apply_options(backbone: Backbone, options: BackboneOptions) -> Backbone:
    """Apply diffusers' own memory/speed features of ``options`` to a loaded backbone, in a compatible order.

    fp8 (``enable_layerwise_casting``: float8_e4m3fn storage, ``backbone.dtype`` compute) ->
    attention backend (``set_attention_backend``) -> offload (``model``: accelerate
    ``cpu_offload_with_hook`` per component; ``group``: diffusers group offloading, block level with
    CUDA streams; ``sequential``: accelerate ``cpu_offload``) -> VAE tiling (``enable_tiling``) ->
    ``compile_repeated_blocks``. Offloaded weights must start on the CPU.
    """
    if options.fp8:
        backbone.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=backbone.dtype)
    if options.attention_backend:
        set_attention_backend(backbone.transformer, options.attention_backend)
    if options.offload != Offload.NONE:
        _apply_offload(backbone, options.offload)
    backbone.offload = str(options.offload)
    if options.vae_tiling:
        backbone.vae.enable_tiling()
    if options.compile:
        backbone.transformer.compile_repeated_blocks(fullgraph=False)
    return backbone


def set_attention_backend(transformer: torch.nn.Module, name: str) -> None:
    """``transformer.set_attention_backend(name)``; unknown or unavailable backends -> InputError."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    known = [backend.value for backend in AttentionBackendName]
    if name not in known:
        message = f"unknown attention backend {name!r} (diffusers knows: {', '.join(known)})"
        raise InputError(message, field="attention-backend")
    try:
        transformer.set_attention_backend(name)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise InputError(f"attention backend {name!r} is not usable here: {exc}", field="attention-backend") from exc


def _offloadable_modules(backbone: Backbone) -> dict[str, torch.nn.Module]:
    """The components that hold weights: transformer, vae, and the text encoder when there is one."""
    modules = {"transformer": backbone.transformer, "vae": backbone.vae}
    text_encoder = getattr(backbone.text_embedder, "text_encoder", None)
    if text_encoder is not None:
        modules["text_encoder"] = text_encoder
    return modules


def _apply_offload(backbone: Backbone, mode: str) -> None:
    """Install the offloading hooks of ``mode`` on every component (weights on the CPU, compute on device)."""
    device = backbone.device
    modules = _offloadable_modules(backbone)
    if mode == "model":
        from accelerate import cpu_offload_with_hook

        for name, module in modules.items():
            _, hook = cpu_offload_with_hook(module, execution_device=device)
            backbone.offload_hooks[name] = hook
    elif mode == "group":
        from diffusers.hooks import apply_group_offloading

        for module in modules.values():
            apply_group_offloading(
                module,
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=True,
            )
    elif mode == "sequential":
        from accelerate import cpu_offload

        for module in modules.values():
            cpu_offload(module, execution_device=device)
