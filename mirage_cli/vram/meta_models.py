"""The components a render will load, built on the meta device for the VRAM predictor.

``meta_components(model, options, depth_model)`` reads the same facts loading would use: the tiny
preset's configs, the 5B architecture for ``--random-weights`` (a text encoder only with
``--random-text-encoder``), or the ``config.json`` files of a model directory (local or in the
Hugging Face cache). The default model and depth model are described by their published configs when
they are not downloaded yet, so ``mirage validate --vram`` works before any download.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mirage_cli.backbone import configs
from mirage_cli.backbone.diffsynth_names import open_weights
from mirage_cli.backbone.lean_forward import use_lean_forward
from mirage_cli.backbone.text import build_byte_tokenizer
from mirage_cli.backbone.vace import VACE_IN_CHANNELS, check_vace_file
from mirage_cli.base.errors import InputError
from mirage_cli.base.hub import cached_file
from mirage_cli.base.options import DEFAULT_DEPTH_MODEL, DEFAULT_MODEL, BackboneOptions
from mirage_cli.depth.providers import TransformersDepth, is_no_model
from mirage_cli.depth.scene_scale import DEFAULT_METRIC_DEPTH_MODEL
from mirage_cli.depth.tiny import is_tiny_model, tiny_depth_config, tiny_depth_processor
from mirage_cli.vram.meta_trace import META, meta_module


@dataclass
class MetaComponents:
    """Meta-device modules: ``transformer``, ``vae``, ``text_encoder`` (None: a weight-free embedder),
    ``depth`` (a ``TransformersDepth`` on meta, or None without a depth model), ``dtype`` (transformer
    and text encoder), ``notes`` (what was assumed)."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module | None
    depth: object | None
    dtype: torch.dtype
    notes: list[str]


def depth_anything_v2_small_config():
    """The published configuration of depth-anything/Depth-Anything-V2-Small-hf (DINOv2-S backbone:
    384 wide, 6 heads, 12 layers, features of layers 3/6/9/12; DPT neck 48/96/192/384, fusion 64)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_attention_heads=6, num_hidden_layers=12, image_size=518, patch_size=14,
                            out_indices=[3, 6, 9, 12], out_features=["stage3", "stage6", "stage9", "stage12"],
                            reshape_hidden_states=False, apply_layernorm=True)
    return DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64,
                               depth_estimation_type="relative")


def _cached_dir(model: str, probe: str) -> Path | None:
    """The directory of ``model`` (a local directory, or the snapshot in the Hugging Face cache that
    holds ``probe``), or None."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    found = cached_file(model, probe)
    return None if found is None else found.parents[len(Path(probe).parts) - 1]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} to predict the VRAM: {exc}", file=str(path), field="model") from None


def _backbone_configs(model: str, options: BackboneOptions, notes: list[str]) -> tuple[dict, dict, object | None]:
    """(transformer kwargs, VAE kwargs, text encoder config or None) of the model a render loads."""
    from transformers import UMT5Config

    if options.preset == "tiny":
        return (configs.tiny_transformer_config(), configs.tiny_vae_config(),
                configs.tiny_text_encoder_config(len(build_byte_tokenizer(512))))
    if options.random_weights:
        text = configs.umt5_xxl_config() if options.random_text_encoder else None
        if text is None:
            notes.append("--random-weights embeds prompts without a text encoder (no weights to count)")
        return configs.wan22_transformer_config(), configs.wan22_vae_config(), text
    directory = _cached_dir(model, "transformer/config.json")
    if directory is None:
        if model != DEFAULT_MODEL:
            raise InputError(f"cannot predict the VRAM of {model!r}: its config files are not on this machine "
                             "(download the model first, or pass a local directory)", field="model")
        notes.append(f"{DEFAULT_MODEL} is not downloaded: its published configuration is used")
        return configs.wan22_transformer_config(), configs.wan22_vae_config(), configs.umt5_xxl_config()
    transformer = _read_json(directory / "transformer" / "config.json")
    vae = _read_json(directory / "vae" / "config.json")
    text = UMT5Config(**_read_json(directory / "text_encoder" / "config.json"))
    return _init_kwargs(transformer), _init_kwargs(vae), text


def _init_kwargs(config: dict) -> dict:
    return {key: value for key, value in config.items() if not key.startswith("_")}


def _depth_config(depth_model: str, notes: list[str]) -> tuple[object | None, object | None]:
    """(config, image processor or None) of the depth model, or (None, None) without one."""
    if is_no_model(depth_model):
        return None, None
    if is_tiny_model(depth_model):
        return tiny_depth_config(), tiny_depth_processor()
    directory = _cached_dir(depth_model, "config.json")
    if directory is not None:
        from transformers import AutoConfig, AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError):
            processor = None  # the render would fail to load it too; Depth Anything's preprocessing assumed
        return AutoConfig.from_pretrained(str(directory), local_files_only=True), processor

    if depth_model in (DEFAULT_DEPTH_MODEL, DEFAULT_METRIC_DEPTH_MODEL):
        notes.append(f"{depth_model} is not downloaded: its published configuration is used")
        config = depth_anything_v2_small_config()
        if depth_model == DEFAULT_METRIC_DEPTH_MODEL:  # the same network with a metric head (Hypersim, up to 20 m)
            config.depth_estimation_type, config.max_depth = "metric", 20.0
        return config, None
    notes.append(f"depth model {depth_model!r} is not on this machine: its memory is not counted")
    return None, None


def _vace_layers_of(path: Path, config: dict) -> list[int]:
    """The VACE layout of a weights file, from its checked header (no tensor is read): the file goes
    through the same checks a render makes (``check_vace_file``)."""
    _, model = check_vace_file(open_weights(path, "conditioning.vace"), config)
    return list(model.config.vace_layers)


def render_transformer_config(model: str, options: BackboneOptions) -> dict | None:
    """The constructor arguments of the transformer a render of ``model`` with ``options`` loads (as
    ``meta_components`` finds them), or None when its config is not on this machine (the default
    model's published configuration stands in for it)."""
    if options.preset == "tiny":
        return configs.tiny_transformer_config()
    if options.random_weights:
        return configs.wan22_transformer_config()
    directory = _cached_dir(model, "transformer/config.json")
    if directory is None:
        return configs.wan22_transformer_config() if model == DEFAULT_MODEL else None
    return _init_kwargs(_read_json(directory / "transformer" / "config.json"))


def meta_components(model: str, options: BackboneOptions, depth_model: str, dtype: torch.dtype,
                    vace: Path | None = None) -> MetaComponents:
    """The render's components on the meta device, cast as loading casts them (see module docstring);
    with ``vace`` (a VACE weights file) the transformer carries the VACE branch the file describes."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel, WanVACETransformer3DModel
    from transformers import AutoModelForDepthEstimation, UMT5EncoderModel

    notes: list[str] = []
    transformer_config, vae_config, text_config = _backbone_configs(model, options, notes)
    if vace is None:
        transformer = meta_module(WanTransformer3DModel, transformer_config, dtype)
    else:
        layers = _vace_layers_of(vace, transformer_config)
        transformer = meta_module(WanVACETransformer3DModel, {**transformer_config, "vace_layers": layers,
                                                               "vace_in_channels": VACE_IN_CHANNELS}, dtype)
    use_lean_forward(transformer)  # as apply_options does for a render
    if options.fp8:
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    vae = meta_module(AutoencoderKLWan, vae_config, torch.float32)
    if options.vae_tiling:
        vae.enable_tiling()
    text_encoder = None if text_config is None else meta_module(UMT5EncoderModel, text_config, dtype)
    depth = None
    depth_config, processor = _depth_config(depth_model, notes)
    if depth_config is not None:
        net = meta_module(AutoModelForDepthEstimation.from_config, depth_config, torch.float32)
        depth = TransformersDepth.from_model(depth_model, net, META, processor)
    return MetaComponents(transformer, vae, text_encoder, depth, dtype, notes)
