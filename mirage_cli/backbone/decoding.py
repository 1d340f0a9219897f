"""Decoding a chunk after the previous chunk's last latent frames (the decode context), so the causal VAE
decoder sees what leads into the chunk and the seams between chunks stay small.
"""

from __future__ import annotations

import torch

# Chunk c > 0 is decoded after this many of the previous chunk's latent frames, so the causal VAE
# decoder sees the frames leading into the chunk (each causal convolution looks back 2 frames, and
# the layers stack). On the tiny VAE, 4 frames cut the difference to a one-pass decode of the whole
# video by ~4x (tests/test_decode_context.py), for 4 extra latent frames per chunk (13% more decode
# at 31 latent frames). Streaming the decoder's cache across chunks instead would be exact but puts
# gigabytes of full-resolution features into every checkpoint at 1280x704.
DECODE_CONTEXT = 4


def decode_with_context(backbone, latents: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Decode a chunk's latents after some of the previous chunk's latent frames.

    Args:
        backbone: ``mirage_cli.backbone.Backbone``.
        latents: float [1, C, T, h, w] the chunk (frame 0 = previous chunk's last latent).
        context: float [C, k, h, w] the previous latent frames before ``latents[:, :, 0]``, or None.

    Returns:
        float [3, F, H, W] in [-1, 1], F = 4(T-1)+1: the decoder runs over k + T latent frames and the
        first 4k pixel frames (the context's) are dropped.
    """
    if context is None:
        return backbone.decode(latents)[0]  # [3, F, H, W]
    k = context.shape[1]
    z = torch.cat([context.unsqueeze(0).to(latents), latents], dim=2)  # [1, C, k+T, h, w]
    return backbone.decode(z)[0][:, 4 * k :]  # [3, F, H, W]


def next_decode_context(latents: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor | None:
    """The decode context of the chunk after this one: the DECODE_CONTEXT latent frames before this
    chunk's last one, taken from this chunk and the context before it.

    Args:
        latents: [C, T, h, w] this chunk's latents (frame 0 = previous chunk's last latent).
        context: [C, k, h, w] this chunk's own decode context, or None (chunk 0).

    Returns:
        [C, <=DECODE_CONTEXT, h, w], or None when DECODE_CONTEXT is 0.
    """
    if DECODE_CONTEXT == 0:
        return None
    history = latents[:, :-1]  # [C, T-1, h, w]
    if context is not None:
        history = torch.cat([context.to(latents), history], dim=1)
    return history[:, -DECODE_CONTEXT:].clone()  # [C, <=k, h, w]
