"""The Wan VAE's slow paths on the CPU (two kernels and its frame joining), routed to fast ones that compute the same thing.

- **3D convolutions.** For a float32 3D convolution on the CPU with a batch of 1, ATen takes its own
  direct kernel (``slow_conv3d``) instead of oneDNN whenever N*C*D*H <= 20480 (a size heuristic in its
  convolution dispatch). Every causal convolution of a Wan VAE at a chunk's sizes falls under it: one
  8-channel 3x3x3 convolution over 6 x 130 x 226 takes 58 ms there and 3.7 ms in oneDNN on this 2-core
  machine. ``route_conv3d_to_onednn`` makes ``nn.Conv3d`` layers call oneDNN
  (``torch.mkldnn_convolution``) for CPU float32 inputs.
- **The channel RMS norm.** ``WanRMS_norm`` normalizes over the channel dimension with
  ``F.normalize(x, dim=1)``, whose norm reduction over a non-innermost dimension is not vectorized on
  the CPU: 11 ms for one [1, 8, 4, 128, 224] tensor, against 0.26 ms for the same norm as the square
  root of a sum of squares over channels. ``route_rms_norms`` makes ``WanRMS_norm`` layers take that
  form for CPU float32 inputs.

- **The decoded frames, joined once.** ``AutoencoderKLWan._decode`` decodes one latent frame at a
  time and appends each frame's pixels to the frames before by ``torch.cat``: the chunk's pixels are
  copied once per latent frame (about 50 ms of a 9-frame 448x256 decode here, 15-20% of it).
  ``route_frame_joining`` makes it collect the frames and join them once, and clamp in place: the
  same decoder calls in the same order, bit-equal pixels (tested against the VAE's own ``_decode``),
  one full-size copy fewer held at the end. Being plain copies, this holds on every device and dtype
  (the VRAM plan traces it on the meta device); tiled decoding keeps the VAE's own method.

For the first two, every other device or dtype (a GPU's, bfloat16), and a build without oneDNN, takes
the layer's own path. They compute in float32 with errors of the same size against a float64 reference
(tested); they are not bit-equal to the layers' own kernels, and give the same bytes on every run.
``route_vae_cpu_kernels`` routes all three in a VAE; ``Backbone`` does it for its VAE.
"""

from __future__ import annotations

import inspect
import types

import torch
from torch import Tensor, nn

NORM_EPS = 1e-12
"""``F.normalize``'s default floor on the norm."""
RMS_NORM_CLASS = "WanRMS_norm"
"""diffusers' channel RMS norm of the Wan VAE (``models/autoencoders/autoencoder_kl_wan.py``), told by
its class name: importing diffusers' VAE module here would load diffusers and transformers for every
command that reads a spec."""


def _fast_on_cpu(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32


def _onednn_conv_forward(self: nn.Conv3d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``nn.Conv3d._conv_forward`` with oneDNN for CPU float32 (zero padding, as the VAE's layers)."""
    if (_fast_on_cpu(x) and x.dim() == 5 and weight.dtype == torch.float32 and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple) and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return torch.mkldnn_convolution(x.contiguous(), weight.contiguous(), bias, self.padding, self.stride, self.dilation, self.groups)
    return nn.Conv3d._conv_forward(self, x, weight, bias)


def _rms_norm_forward(self: nn.Module, x: Tensor) -> Tensor:
    """``WanRMS_norm.forward`` with the channel norm as sqrt(sum of squares) for CPU float32."""
    if not (_fast_on_cpu(x) and self.channel_first):
        return type(self).forward(self, x)
    norm = x.square().sum(dim=1, keepdim=True).sqrt().clamp_min(NORM_EPS)  # [B, 1, ...]
    return (x / norm) * self.scale * self.gamma + self.bias


def _route(module: nn.Module, chosen, attribute: str, method) -> int:
    routed = 0
    for layer in module.modules():
        if chosen(layer):
            setattr(layer, attribute, types.MethodType(method, layer))
            routed += 1
    return routed


def route_conv3d_to_onednn(module: nn.Module) -> int:
    """Route every ``nn.Conv3d`` inside ``module`` through oneDNN for CPU float32 inputs; returns how
    many layers were routed. Calling it again changes nothing."""
    return _route(module, lambda layer: isinstance(layer, nn.Conv3d), "_conv_forward", _onednn_conv_forward)


def route_rms_norms(module: nn.Module) -> int:
    """Route every ``WanRMS_norm`` inside ``module`` to the sum-of-squares norm for CPU float32
    inputs; returns how many layers were routed. Calling it again changes nothing."""
    return _route(module, lambda layer: type(layer).__name__ == RMS_NORM_CLASS, "forward", _rms_norm_forward)


def _decode_joining_once(self: nn.Module, z: Tensor, return_dict: bool = True):
    """``AutoencoderKLWan._decode`` (diffusers 0.35-0.42), its frames joined once, on any device and
    dtype; a tiled decode goes to the VAE's own method.

    ``z``: [B, z_dim, T, h, w] (un-normalized latents). Returns what the VAE's method returns: pixels
    [B, 3, 4(T-1)+1, 16h, 16w] in [-1, 1], in a tuple or a ``DecoderOutput``.
    """
    own = type(self)._decode
    tile_h = self.tile_sample_min_height // self.spatial_compression_ratio
    tile_w = self.tile_sample_min_width // self.spatial_compression_ratio
    if self.use_tiling and (z.shape[-1] > tile_w or z.shape[-2] > tile_h):
        return own(self, z, return_dict)
    self.clear_cache()
    x = self.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        self._conv_idx = [0]  # the decoder's position in its causal cache, from the first layer each frame
        frames.append(self.decoder(x[:, :, i : i + 1], feat_cache=self._feat_map, feat_idx=self._conv_idx, first_chunk=i == 0))
    out = torch.cat(frames, dim=2)  # [B, C*p*p, F, H/p, W/p]
    del frames
    # the VAE's own module: loaded with the VAE already, not imported for every command that reads a spec
    from diffusers.models.autoencoders.autoencoder_kl_wan import DecoderOutput, unpatchify

    if self.config.patch_size is not None:
        out = unpatchify(out, patch_size=self.config.patch_size)
    out = out.clamp_(-1.0, 1.0)
    self.clear_cache()
    return (out,) if not return_dict else DecoderOutput(sample=out)


def route_frame_joining(vae: nn.Module) -> int:
    """Route ``vae``'s ``_decode`` to ``_decode_joining_once`` when it is a Wan VAE whose decoder takes
    ``first_chunk`` (diffusers' Wan2.2 VAE); returns 1 when routed, else 0. Calling it again changes nothing."""
    decoder = getattr(vae, "decoder", None)
    if not (hasattr(vae, "clear_cache") and hasattr(vae, "post_quant_conv") and decoder is not None
            and "first_chunk" in inspect.signature(type(decoder).forward).parameters):
        return 0
    vae._decode = types.MethodType(_decode_joining_once, vae)
    return 1


def route_vae_cpu_kernels(vae: nn.Module) -> int:
    """The three routes in ``vae``; returns the number of layers and methods routed."""
    return route_conv3d_to_onednn(vae) + route_rms_norms(vae) + route_frame_joining(vae)
