"""The facts of Wan2.2-TI2V-5B's components as constructor arguments, and the tiny versions of them.

Real sizes: VAE z_dim 48, 16x spatial and 4x temporal compression; transformer 30 layers of 24 heads
x 128, patch (1, 2, 2); UniPC with flow prediction and shift 5. The tiny configurations keep every
geometric fact (channels, patch, compression) and shrink only widths and depths.
"""

from __future__ import annotations

import torch

WAN_DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
"""Wan's default negative prompt (``sample_neg_prompt`` of the Wan2.2 configs), used when none is given."""

SPATIA_NEGATIVE_PROMPT = (
    "画面切换，画面切出，镜头切换，镜头渐黑，镜头渐亮，最差质量, 节目横幅, 低质量, 正常质量, "
    "JPEG压缩残留, 噪点, 模糊, 细节缺失, 马赛克, 水印, 文字, 签名, 商标, 丑陋的, 畸形的, 毁容的, "
    "解剖学错误, 形态糟糕, 多余的肢体, 残缺的肢体, 融合的手指, 画得不好的手, 画得不好的脸, "
    "僵硬的表情, 杂乱的构图, 不协调的元素, 空旷的画面, 透视错误, 比例失调, 变形的物体, "
    "融合的物体, 物体穿模, 漂浮的物体, 平淡的光线, 不自然的光源, 单调的色彩, 奇怪的颜色, "
    "刺眼的颜色, 画面发灰"
)
"""The negative prompt Spatia's inference samples its weights with (a setting of theirs, kept as data)."""

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


_UMT5_SPECIAL_TOKENS = {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
"""UMT5's token ids (the byte tokenizer keeps them: 0 pad, 1 end)."""


def tiny_text_encoder_config(vocab_size: int):
    """A tiny ``UMT5Config`` whose hidden size (32) matches the tiny transformer's ``text_dim``."""
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, **_UMT5_SPECIAL_TOKENS,
    )


UMT5_XXL_VOCAB_SIZE = 256_384
"""The UMT5 vocabulary (google/umt5-xxl), the size of the real text encoder's embedding table."""


def umt5_xxl_config():
    """The ``UMT5Config`` of Wan2.2's text encoder, UMT5-XXL's encoder (facts of google/umt5-xxl):
    24 layers, d_model 4096, 64 heads of 64, a gated-GELU feed-forward of 10240, 256,384 tokens;
    5.68 B parameters, 10.6 GiB in bfloat16."""
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=UMT5_XXL_VOCAB_SIZE, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
        **_UMT5_SPECIAL_TOKENS,
    )
