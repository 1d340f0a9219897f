"""Seconds per chunk of the few-step DMD sampler (3 steps, no guidance) beside 50-step UniPC with
guidance 5, in one run on the same backbone and inputs (``denoise_chunk``; tiny preset on the CPU by
default). Prints each sampler's seconds per chunk, per step and the ratio.

    python benchmarks/few_step_speed.py [--preset tiny] [--device cpu] [--latent 3x8x14] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from mirage_cli.backbone import load_backbone
from mirage_cli.base.options import BackboneOptions
from mirage_cli.denoise.loop import denoise_chunk
from mirage_cli.spec.sampler import DMD_TABLE_SHIFT, FASTWAN_TIMESTEPS


def chunk_seconds(backbone, prompts, latent_shape, *, steps, guidance, shift, timesteps, repeats) -> float:
    """Best of ``repeats`` wall seconds of one chunk's denoising."""
    frames, height, width = latent_shape
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, backbone.z_dim, frames, height, width, generator=g)
    cond = torch.randn(backbone.z_dim, height, width, generator=g)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        denoise_chunk(backbone, noise=noise, cond_frame0=cond, pinned_latents=torch.zeros(frames, backbone.z_dim, height, width),
                      pin_mask=torch.zeros(frames, height, width, dtype=torch.bool), pin_mode="clean", pin_until=1.0,
                      prompt_embeds=prompts[0], negative_prompt_embeds=prompts[1], guidance=guidance, steps=steps, shift=shift,
                      generator=torch.Generator().manual_seed(1), timesteps=timesteps)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--latent", default="3x8x14", help="latent frames x h x w of the chunk")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backbone = load_backbone(options=BackboneOptions(preset=args.preset, device=args.device, dtype="float32"))
    prompts = backbone.encode_prompt("a quiet room with a window", None)
    shape = tuple(int(x) for x in args.latent.split("x"))
    unipc = chunk_seconds(backbone, prompts, shape, steps=50, guidance=5.0, shift=5.0, timesteps=None, repeats=args.repeats)
    dmd = chunk_seconds(backbone, prompts, shape, steps=len(FASTWAN_TIMESTEPS), guidance=1.0, shift=DMD_TABLE_SHIFT,
                        timesteps=FASTWAN_TIMESTEPS, repeats=args.repeats)
    print(f"unipc 50 steps, guidance 5: {unipc:.4f} s/chunk ({unipc / 50:.5f} s/step)")
    print(f"dmd {len(FASTWAN_TIMESTEPS)} steps, guidance 1: {dmd:.4f} s/chunk ({dmd / len(FASTWAN_TIMESTEPS):.5f} s/step)")
    print(f"speedup: {unipc / dmd:.1f}x")


if __name__ == "__main__":
    main()
