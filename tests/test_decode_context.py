"""Chunk seams: decoding a chunk after the previous chunk's latent frames approaches a one-pass decode.

Tiny random AutoencoderKLWan (the real class; real weights cannot be downloaded here). The causal
decoder's output at a frame depends on the frames before it, so a chunk decoded on its own starts
"cold"; with DECODE_CONTEXT latent frames in front it sees what a one-pass decode of the whole video
would have seen.
"""

from __future__ import annotations

import torch

from mirage_cli.backbone import load_backbone
from mirage_cli.backbone.decoding import DECODE_CONTEXT, decode_with_context
from mirage_cli.base.options import BackboneOptions


def test_context_decode_matches_one_pass_decode_better_than_cold_decode():
    bb = load_backbone(options=BackboneOptions(preset="tiny", device="cpu", dtype="float32"))
    g = torch.Generator().manual_seed(0)
    T = 9
    video = torch.randn(1, bb.z_dim, 2 * T - 1, 2, 3, generator=g)  # [1, C, 17, h, w]: two chunks sharing frame 8
    one_pass = bb.decode(video)[0]  # [3, 65, H, W]
    chunk1 = video[:, :, T - 1 :]  # [1, C, T, h, w]
    reference = one_pass[:, 4 * (T - 1) :]  # [3, 33, H, W]: the frames of chunk 1 in the one-pass decode

    cold = decode_with_context(bb, chunk1, None)
    context = video[0, :, T - 1 - DECODE_CONTEXT : T - 1]  # [C, k, h, w]
    warm = decode_with_context(bb, chunk1, context)
    assert cold.shape == warm.shape == reference.shape

    # New frames only (frame 0 repeats the previous chunk and is dropped from the video).
    err_cold = (cold[:, 1:] - reference[:, 1:]).abs().mean().item()
    err_warm = (warm[:, 1:] - reference[:, 1:]).abs().mean().item()
    assert err_warm < 0.4 * err_cold, (err_warm, err_cold)
