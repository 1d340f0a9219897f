"""The traced transient of each model stage of a render (see ``mirage_cli.vram.predict``): the same
functions the render calls, on meta tensors of the render's shapes (the denoising loop on CPU tensors
with a traced stand-in for the transformer). Each returns ``(carried, transient)`` in bytes: what the
stage receives from earlier stages, and the most it allocates and holds at once.
"""

from __future__ import annotations

import torch

from mirage_cli.backbone.configs import WAN_DEFAULT_NEGATIVE_PROMPT, wan22_scheduler_config
from mirage_cli.backbone.decoding import decode_with_context
from mirage_cli.backbone.text import UMT5TextEmbedder, build_byte_tokenizer
from mirage_cli.backbone.vace_forward import vace_forward
from mirage_cli.backbone.wan import Backbone
from mirage_cli.conditioning.vace import MAX_REFERENCES, PRECEDING_LATENT_FRAMES
from mirage_cli.denoise.loop import denoise_chunk
from mirage_cli.depth.providers import DepthAligner
from mirage_cli.profiling.tensor_bytes import LiveTensorBytes
from mirage_cli.vram.meta_models import MetaComponents
from mirage_cli.vram.meta_trace import META, fused_attention_on_meta, traced_peak

DENOISE_TRACE_STEPS = 3
"""Steps of the denoising loop run to measure it: UniPC's history is full from the third step on."""

TEXT_LENGTH = 512


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def meta_backbone(parts: MetaComponents) -> Backbone:
    """A ``Backbone`` of the meta modules (its encode/decode run the render's own code on meta)."""
    return Backbone(vae=parts.vae, transformer=parts.transformer, text_embedder=None, scheduler_config=wan22_scheduler_config(),
                    device=META, dtype=parts.dtype, source="meta")


def text_encoding(parts: MetaComponents, shape) -> tuple[int, int]:
    """``UMT5TextEmbedder.encode`` of the prompt and the negative prompt (2 x 512 tokens)."""
    if parts.text_encoder is None:
        return 0, 0

    # Any tokenizer padding to 512 gives the same shapes; the byte tokenizer is built locally.
    embedder = UMT5TextEmbedder(build_byte_tokenizer(TEXT_LENGTH), parts.text_encoder, TEXT_LENGTH)
    return 0, traced_peak(embedder.encode, ["a prompt", WAN_DEFAULT_NEGATIVE_PROMPT], device=META, dtype=parts.dtype)


def start_encode(parts: MetaComponents, shape) -> tuple[int, int]:
    """``Rollout.start``'s encoding of the start image: [3, H, W] in [0, 1] -> pixels in [-1, 1] ->
    ``Backbone.encode_video``."""
    image = torch.empty(3, shape.height, shape.width, device=META)
    backbone = meta_backbone(parts)

    def encode():
        backbone.encode_video((image * 2 - 1).view(1, 3, 1, shape.height, shape.width))

    carried = 2 * _nbytes(image)  # the image and its depth map
    return carried, traced_peak(encode, replay=(parts.vae.encoder,))


def _latent_hw(parts: MetaComponents, shape) -> tuple[int, int]:
    scale = int(parts.vae.config.scale_factor_spatial)
    return shape.height // scale, shape.width // scale


def transformer_forward(parts: MetaComponents, shape) -> int:
    """The traced transient of one transformer forward (per-token timesteps, 512 text tokens); with a
    VACE branch, ``vace_forward`` over the longest sequence the recipe builds (the chunk after the most
    references and before the preceding frames) with its context."""
    h, w = _latent_hw(parts, shape)
    patch = parts.transformer.config.patch_size
    vace = hasattr(parts.transformer, "vace_blocks")
    refs, pre = (MAX_REFERENCES, PRECEDING_LATENT_FRAMES) if vace else (0, 0)
    frames = refs + shape.latent_frames + pre
    hidden = torch.empty(1, parts.transformer.config.in_channels, frames, h, w, device=META, dtype=parts.dtype)
    timestep = torch.empty(1, frames * (h // patch[1]) * (w // patch[2]), device=META)
    text = torch.empty(1, TEXT_LENGTH, parts.transformer.config.text_dim, device=META, dtype=parts.dtype)
    if vace:
        control = torch.empty(1, parts.transformer.config.vace_in_channels, frames - refs, h, w, device=META, dtype=parts.dtype)
        return traced_peak(vace_forward, parts.transformer, hidden, timestep, text, control, ref_frames=refs)
    return traced_peak(parts.transformer, hidden_states=hidden, timestep=timestep, encoder_hidden_states=text, return_dict=False)


class _TracedTransformer(torch.nn.Module):
    """Stands in for the transformer in the CPU run of the denoising loop: returns a velocity of the
    right shape and counts the traced forward's transient (less that output) on the tracker."""

    def __init__(self, config, forward_bytes: int, tracker: LiveTensorBytes):
        super().__init__()
        self.config = config
        self.forward_bytes = forward_bytes
        self.tracker = tracker

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        out = torch.zeros_like(hidden_states)  # zeros, not empty: the loop checks its latents are finite
        self.tracker.bump(max(0, self.forward_bytes - _nbytes(out)))
        return (out,)


def denoise(parts: MetaComponents, shape) -> tuple[int, int]:
    """``denoise_chunk`` for ``DENOISE_TRACE_STEPS`` steps on CPU tensors of the real latent shape, memory
    pinned on half the cells, the transformer replaced by its traced forward."""
    forward_bytes = transformer_forward(parts, shape)
    h, w = _latent_hw(parts, shape)
    channels, frames = int(parts.vae.config.z_dim), shape.latent_frames
    tracker = LiveTensorBytes("cpu")
    backbone = Backbone(vae=None, transformer=_TracedTransformer(parts.transformer.config, forward_bytes, tracker),
                        text_embedder=None, scheduler_config=wan22_scheduler_config(), device=torch.device("cpu"),
                        dtype=parts.dtype, source="meta")
    text_dim = int(parts.transformer.config.text_dim)
    inputs = {
        "noise": torch.zeros(1, channels, frames, h, w), "cond_frame0": torch.zeros(channels, h, w),
        "pinned_latents": torch.zeros(frames, channels, h, w), "pin_mask": torch.arange(frames * h * w).view(frames, h, w) % 2 == 0,
        "prompt_embeds": torch.zeros(1, TEXT_LENGTH, text_dim, dtype=parts.dtype),
        "negative_prompt_embeds": torch.zeros(1, TEXT_LENGTH, text_dim, dtype=parts.dtype),
    }
    with torch.no_grad(), tracker:
        denoise_chunk(backbone, **inputs, pin_mode="clean", pin_until=1.0, guidance=shape.guidance, steps=DENOISE_TRACE_STEPS,
                      shift=5.0, generator=torch.Generator().manual_seed(0))
    transient = tracker.peak
    if hasattr(parts.transformer, "vace_blocks"):  # the recipe's score latent: an all-white video encoded once
        transient = max(transient, _score_encode(parts, shape, h, w))
    return _nbytes(*inputs.values()), transient


def _score_encode(parts: MetaComponents, shape, h: int, w: int) -> int:
    """``ScoreLatents.get``'s encode of the white video of the chunk and its preceding frames."""
    frames = shape.latent_frames + PRECEDING_LATENT_FRAMES
    backbone = meta_backbone(parts)

    def encode():  # the white video is made inside, as the recipe makes it
        backbone.encode_video(torch.ones(1, 3, 4 * (frames - 1) + 1, shape.height, shape.width, device=META))

    return traced_peak(encode, replay=(parts.vae.encoder,))


def decode(parts: MetaComponents, shape) -> tuple[int, int]:
    """``backbone.decoding.decode_with_context`` of the longest chunk after its decode context."""
    h, w = _latent_hw(parts, shape)
    channels = int(parts.vae.config.z_dim)
    latents = torch.empty(1, channels, shape.decode_latent_frames or shape.latent_frames, h, w, device=META)
    context = torch.empty(channels, shape.decode_context, h, w, device=META) if shape.decode_context else None
    carried = _nbytes(latents) + (_nbytes(context) if context is not None else 0)
    return carried, traced_peak(decode_with_context, meta_backbone(parts), latents, context, replay=(parts.vae.decoder,))


class _TracedDepth:
    """Stands in for the depth model in the CPU run of ``DepthAligner.new_frames``: returns a depth of
    the right shape and counts the traced model call's transient (less that output) on the tracker."""

    def __init__(self, provider, model_bytes: int, tracker: LiveTensorBytes):
        self.kind = provider.kind
        self.model_bytes = model_bytes
        self.tracker = tracker

    def estimate(self, frames: torch.Tensor) -> torch.Tensor:
        out = torch.ones(frames.shape[0], *frames.shape[-2:])
        self.tracker.bump(max(0, self.model_bytes - _nbytes(out)))
        return out


class _CoveredView:
    """A condition view whose memory covers every cell at depth 1: every frame is fitted on all its
    pixels, the most the alignment can hold (a render's coverage is only known when it runs)."""

    def __init__(self, frames: int, h: int, w: int):
        self.depth = torch.ones(frames, h, w)
        self.covered = torch.ones(frames, h, w, dtype=torch.bool)


def depth_estimation(parts: MetaComponents, shape) -> tuple[int, int]:
    """``DepthAligner.new_frames`` of the chunk's new latent frames (the model call traced on meta, the
    alignment to the memory run on CPU tensors of the real size, every frame fitted); carried: the
    decoded chunk and the frames given to the depth model (float32)."""
    if parts.depth is None or not shape.stores_frames or shape.latent_frames < 2:
        return 0, 0

    new = shape.latent_frames - 1
    with fused_attention_on_meta():
        model_bytes = traced_peak(parts.depth.estimate, torch.empty(new, 3, shape.height, shape.width, device=META))
    tracker = LiveTensorBytes("cpu")
    aligner = DepthAligner(_TracedDepth(parts.depth, model_bytes, tracker), (shape.height, shape.width))
    frames = torch.empty(new, 3, shape.height, shape.width, device=META)  # only its shape is read
    view = _CoveredView(shape.latent_frames, *_latent_hw(parts, shape))
    with torch.no_grad(), tracker:
        aligner.new_frames(frames, view)
    carried = 4 * 3 * shape.pixel_frames * shape.height * shape.width + _nbytes(frames)
    return carried, tracker.peak


TRACES = {"text_encoding": text_encoding, "start_encode": start_encode, "denoise": denoise, "decode": decode,
          "depth_estimation": depth_estimation}
