"""The Wan VAE's slow CPU kernels routed to fast ones (``mirage_cli.backbone.cpu_vae``): the same
convolution and the same channel norm as the layers' own kernels, within float32 rounding, checked
against float64 references and on a tiny real Wan2.2 VAE."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm
from torch import nn

from mirage_cli.backbone.configs import tiny_vae_config
from mirage_cli.backbone.cpu_vae import route_conv3d_to_onednn, route_frame_joining, route_rms_norms, route_vae_cpu_kernels
from mirage_cli.backbone.random_components import tiny_backbone


def ops_of(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


def test_a_routed_layer_computes_the_same_convolution_in_onednn():
    torch.manual_seed(0)
    layer = nn.Conv3d(8, 12, 3, padding=(0, 1, 1))
    x = torch.randn(1, 8, 6, 34, 58)
    with torch.no_grad():
        reference = nn.functional.conv3d(x.double(), layer.weight.double(), layer.bias.double(), padding=(0, 1, 1))
        own = layer(x)
        assert "aten::slow_conv3d_forward" in ops_of(lambda: layer(x))  # ATen's size heuristic: its direct kernel
        assert route_conv3d_to_onednn(layer) == 1 and route_conv3d_to_onednn(layer) == 1  # again: the same
        routed = layer(x)
        ops = ops_of(lambda: layer(x))
    assert "aten::mkldnn_convolution" in ops and "aten::slow_conv3d_forward" not in ops
    err_own, err_routed = (float((y.double() - reference).abs().max()) for y in (own, routed))
    assert err_routed < 1e-4 and err_own < 1e-4, (err_own, err_routed)
    assert torch.equal(routed, layer(x))  # the same bytes on every call


def test_other_dtypes_take_the_layers_own_path():
    torch.manual_seed(0)
    layer = nn.Conv3d(4, 4, 3).double()
    route_conv3d_to_onednn(layer)
    x = torch.randn(1, 4, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(layer(x), nn.functional.conv3d(x, layer.weight, layer.bias))


@pytest.mark.parametrize("images", [True, False])
def test_a_routed_rms_norm_normalizes_over_channels_as_the_layer_does(images):
    torch.manual_seed(0)
    layer = WanRMS_norm(8, images=images, bias=True)
    with torch.no_grad():
        layer.gamma.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.1, 0.1)
    x = torch.randn(2, 8, 3, 16, 20) if not images else torch.randn(2, 8, 16, 20)
    x[0, :, 0] = 0.0  # all-zero channels: the norm's floor, as F.normalize's
    with torch.no_grad():
        reference = WanRMS_norm.forward(layer.double(), x.double())
        layer.float()
        own = layer(x)
        assert route_rms_norms(layer) == 1
        routed = layer(x)
        assert "aten::linalg_vector_norm" not in ops_of(lambda: layer(x))
        assert torch.equal(layer(x.double()), WanRMS_norm.forward(layer, x.double()))  # float64: the layer's own path
    err_own, err_routed = (float((y.double() - reference).abs().max()) for y in (own, routed))
    assert err_routed < 1e-6 and err_own < 1e-6, (err_own, err_routed)


def test_a_routed_wan_vae_decodes_and_encodes_as_before_within_float_rounding():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config()).eval()
    z = torch.randn(1, 48, 3, 4, 6)
    pixels = torch.rand(1, 3, 9, 64, 96) * 2 - 1
    with torch.no_grad():
        before, encoded_before = vae.decode(z).sample, vae.encode(pixels).latent_dist.mode()
        routed = route_vae_cpu_kernels(vae)
        after, encoded_after = vae.decode(z).sample, vae.encode(pixels).latent_dist.mode()
    assert routed == sum(isinstance(m, (nn.Conv3d, WanRMS_norm)) for m in vae.modules()) + 1 > 10  # and its _decode
    assert torch.allclose(after, before, atol=1e-4, rtol=0), float((after - before).abs().max())
    assert torch.allclose(encoded_after, encoded_before, atol=1e-4, rtol=0), float((encoded_after - encoded_before).abs().max())


def test_frames_joined_once_are_the_vaes_own_decode_bit_for_bit():
    """The routed ``_decode`` against the VAE's own (diffusers'), on the same routed layers: the same
    pixels exactly, the frames joined once, in float32 and float64; tiled decoding takes the VAE's own."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config()).eval()
    route_conv3d_to_onednn(vae)
    route_rms_norms(vae)
    assert route_frame_joining(vae) == 1 and route_frame_joining(vae) == 1  # a fresh VAE, never run: routed
    z = torch.randn(1, 48, 5, 4, 6)

    def cats(fn) -> int:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        return sum(e.name == "aten::cat" for e in prof.events())

    with torch.no_grad():
        own = type(vae)._decode(vae, z)
        own_cats = cats(lambda: type(vae)._decode(vae, z))
        joined = vae.decode(z)
        assert torch.equal(joined.sample, own.sample) and joined.sample.shape == (1, 3, 17, 64, 96)
        assert torch.equal(vae.decode(z, return_dict=False)[0], own.sample)
        assert cats(lambda: vae.decode(z)) == own_cats - (z.shape[2] - 2)  # one join, not one per frame after the first
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                          tile_sample_stride_width=16)
        assert torch.equal(vae.decode(z).sample, type(vae)._decode(vae, z).sample)  # tiled: the VAE's own method
        vae.disable_tiling()
        vae.double()  # any dtype (and device): the same copies
        assert torch.equal(vae.decode(z.double()).sample, type(vae)._decode(vae, z.double()).sample)
        assert cats(lambda: vae.decode(z.double())) == cats(lambda: type(vae)._decode(vae, z.double())) - (z.shape[2] - 2)
    assert route_frame_joining(nn.Conv3d(1, 1, 1)) == 0  # not a Wan VAE: left alone


def test_every_backbone_routes_its_vae():
    backbone = tiny_backbone(torch.device("cpu"), torch.float32)
    z = torch.randn(1, backbone.z_dim, 2, 4, 6)
    ops = ops_of(lambda: backbone.decode(z))
    assert "aten::mkldnn_convolution" in ops and "aten::slow_conv3d_forward" not in ops and "aten::linalg_vector_norm" not in ops
