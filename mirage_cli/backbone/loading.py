"""``load_backbone``: options checked, components built or loaded, diffusers' memory and speed
features applied (offload, VAE tiling, layerwise fp8, attention backends, regional compilation),
never reimplemented."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mirage_cli.backbone.configs import CPU_PARAMETER_LIMIT, DTYPES, wan22_transformer_config
from mirage_cli.backbone.diffsynth_names import open_weights, read_weights
from mirage_cli.backbone.lean_forward import use_lean_forward
from mirage_cli.backbone.lora import apply_lora, check_lora
from mirage_cli.backbone.lora_stack import LoraFile, fuse_lora_stack
from mirage_cli.backbone.model_dir import resolve_model_dir
from mirage_cli.backbone.random_components import count_parameters, empty_model, random_weights_backbone, tiny_backbone
from mirage_cli.backbone.text import TEXT_MAX_LENGTH, UMT5TextEmbedder
from mirage_cli.backbone.vace import attach_vace
from mirage_cli.backbone.wan import Backbone
from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.options import BACKBONE_PRESETS, DEFAULT_MODEL, BackboneOptions, Offload, parse_vram_budget


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
    """Load the five components of a checked diffusers-layout directory through from_pretrained
    (onto the CPU with ``stage_on_cpu``: offloading, or placement at first use)."""
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
    model: str = DEFAULT_MODEL, options: BackboneOptions | None = None, *, local_files_only: bool | None = None,
    trained=None, loras: tuple[LoraFile, ...] = (),
) -> Backbone:
    """Load the Wan2.2-TI2V components and apply the memory/speed options.

    Args:
        model: diffusers id or local directory (ignored with ``options.preset`` or
            ``options.random_weights``).
        options: ``BackboneOptions`` (preset, random weights, device, dtype, offload, VAE tiling,
            fp8, attention backend, compile); defaults when None.
        local_files_only: never contact the hub (default: ``HF_HUB_OFFLINE``).
        trained: a ``ConditioningSettings`` whose VACE weights (the transformer becomes diffusers'
            ``WanVACETransformer3DModel``) and LoRA (fused) are loaded before the options apply.
        loras: a LoRA stack (the spec's ``loras:``) fused after ``trained``'s LoRA, in its order
            (``mirage_cli.backbone.lora_stack``); each file checked before the model loads.

    Raises:
        InputError: bad options, missing weights, or a real-size model on the CPU.
    """
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    options = (options or BackboneOptions()).resolved()
    torch_device, torch_dtype = check_backbone_options(options)
    if trained is not None and trained.method == "spatia" and trained.lora is not None:
        _check_late_lora(options)
    read = read_trained(trained) if trained is not None else {}  # before the model loads: bad weights cost no load
    if options.preset == "tiny":
        backbone = tiny_backbone(torch_device, torch_dtype)  # on the CPU
    elif options.random_weights:
        from diffusers import WanTransformer3DModel

        if torch_device.type == "cpu":
            size = count_parameters(empty_model(WanTransformer3DModel, wan22_transformer_config()))
            _refuse_real_size_on_cpu(size, "the Wan2.2-TI2V-5B architecture (--random-weights)")
        # Offloaded weights live on the CPU: build them there, else directly on the device.
        backbone = random_weights_backbone(torch_device, torch_dtype, build_on_cpu=options.offload != Offload.NONE,
                                           text_encoder=options.random_text_encoder)
    else:
        directory = resolve_model_dir(model, local_files_only)
        if torch_device.type == "cpu":
            size = _transformer_parameter_count(directory)
            if size > CPU_PARAMETER_LIMIT:
                _refuse_real_size_on_cpu(size, f"the model in {directory}")
        backbone = _load_from_dir(directory, torch_device, torch_dtype, stage_on_cpu=torch_device.type == "cuda")
    if trained is not None:
        attach_trained(backbone, trained, read)
    if loras:  # after the memory LoRA, before fp8 / offload / compile: fused into whole weights
        fuse_lora_stack(backbone.transformer, loras)
    if options.offload == Offload.NONE and torch_device.type != "cpu":
        backbone.waiting = {name: module for name, module in _offloadable_modules(backbone).items()
                            if any(p.device != torch_device for p in module.parameters())}
    return apply_options(backbone, options)


def read_trained(trained) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of ``trained``'s VACE file and of the LoRA fused at load (not Spatia's, fused later), by
    ``vace`` / ``lora``; each file's header checked and every value checked as it is read (InputError)."""
    files = {"vace": trained.vace, "lora": trained.lora if trained.method != "spatia" else None}
    return {name: read_weights(open_weights(path, f"conditioning.{name}")) for name, path in files.items() if path is not None}


def attach_trained(backbone: Backbone, trained, read: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """The VACE branch and the LoRA of ``trained`` (``ConditioningSettings``) on ``backbone.transformer``
    (``mirage_cli.backbone.vace``, ``mirage_cli.backbone.lora``); every key checked, InputError otherwise.
    Spatia's LoRA is only checked here: its recipe fuses it from the second chunk on, as Spatia's inference
    (``mirage_cli.conditioning.recipes.SpatiaRecipe``). ``read``: the files' tensors already read (``read_trained``)."""
    read = read or {}
    if trained.vace is not None:
        backbone.transformer = attach_vace(backbone.transformer, trained.vace, field="conditioning.vace", tensors=read.get("vace"))
    if trained.lora is not None and trained.method == "spatia":
        check_lora(backbone.transformer, trained.lora, field="conditioning.lora")
    elif trained.lora is not None:
        apply_lora(backbone.transformer, trained.lora, trained.lora_scale, merge=True, field="conditioning.lora",
                   tensors=read.get("lora"))


def _check_late_lora(options: BackboneOptions) -> None:
    """Spatia's LoRA is fused into the DiT after the first chunk: into weights that are whole and stored
    as they compute (not fp8, not split into offloaded groups or layers)."""
    if options.fp8:
        raise InputError("Spatia's LoRA is fused into the DiT after the first chunk; fp8 storage would fuse it lossily: "
                         "leave --fp8 off", field="fp8")
    if options.offload in (Offload.GROUP, Offload.SEQUENTIAL):
        raise InputError(f"Spatia's LoRA is fused into the DiT after the first chunk, which --offload {options.offload} splits "
                         f"across devices: use --offload model or none", field="offload")


def check_backbone_options(options: BackboneOptions) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of ``options``; InputError naming the option for anything unusable."""
    if options.preset is not None and options.preset not in BACKBONE_PRESETS:
        raise InputError(f"unknown preset {options.preset!r} (available: {', '.join(BACKBONE_PRESETS)})", field="preset")
    if options.preset is not None and options.random_weights:
        raise InputError("--preset and --random-weights exclude each other", field="preset")
    if options.random_text_encoder and not options.random_weights:
        raise InputError("--random-text-encoder goes with --random-weights (real weights bring their own)", field="random-text-encoder")
    if options.offload not in Offload.values():
        raise InputError(f"unknown offload mode {options.offload!r} (use {', '.join(Offload.values())})", field="offload")
    parse_vram_budget(options.vram_budget)  # checked by every command that takes it, before anything loads
    torch_dtype = resolve_dtype(options.dtype)
    torch_device = resolve_device(options.device)
    if options.offload != Offload.NONE and torch_device.type != "cuda":
        raise InputError(f"--offload {options.offload} needs a CUDA device (the device is {torch_device})", field="offload")
    return torch_device, torch_dtype


def apply_options(backbone: Backbone, options: BackboneOptions) -> Backbone:
    """Apply diffusers' own memory/speed features of ``options`` to a loaded backbone, in a compatible order.

    fp8 (``enable_layerwise_casting``: float8_e4m3fn storage, ``backbone.dtype`` compute) ->
    attention backend (``set_attention_backend``) -> offload (``model``: accelerate
    ``cpu_offload_with_hook`` per component; ``group``: diffusers group offloading, block level with
    CUDA streams; ``sequential``: accelerate ``cpu_offload``) -> VAE tiling (``enable_tiling``) ->
    ``compile_repeated_blocks``. Offloaded weights must start on the CPU. First of all, the transformer's
    forward becomes lean (``use_lean_forward``: the same output in a third of the activation memory).
    """
    use_lean_forward(backbone.transformer)
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


def check_attention_backend(name: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse (InputError) an attention backend that diffusers does not know or that cannot run on
    ``device`` in ``dtype``, before any weights load: one tiny attention call through diffusers'
    own dispatcher (what the Wan transformer calls), so every constraint of the backend is met
    (its package, its device, its dtype), not a list kept here."""
    from diffusers.models import attention_dispatch
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    known = [backend.value for backend in AttentionBackendName]
    if name not in known:
        raise InputError(f"unknown attention backend {name!r} (diffusers knows: {', '.join(known)})", field="attention-backend")
    probe = torch.zeros(1, 16, 2, 64, device=device, dtype=dtype)  # [B, S, heads, head_dim]
    try:
        # diffusers' own package check first: it names what to install (private in diffusers 0.36)
        getattr(attention_dispatch, "_check_attention_backend_requirements", lambda backend: None)(AttentionBackendName(name))
        dispatch_attention_fn(probe, probe, probe, backend=AttentionBackendName(name))
    except Exception as exc:  # each backend fails its own way (ImportError, RuntimeError: no kernel, ValueError)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"attention backend {name!r} cannot run on {device} in {str(dtype).removeprefix('torch.')}: {why}",
                         field="attention-backend") from None


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
