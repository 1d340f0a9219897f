"""Backbone loading (tiny preset, saved directories, the hub cache, random-weights configs), the VAE's
geometry, prompt encoding, and the diffusers pass-through options.

Real tiny components from the diffusers / transformers classes, real files in tmp_path. What cannot
exist here is not mocked but skipped with a reason (CUDA-only options) or checked without weights
(the 5B configuration is instantiated on the meta device only).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mirage_cli.backbone import (
    CPU_PARAMETER_LIMIT,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    WAN_DEFAULT_NEGATIVE_PROMPT,
    Backbone,
    build_tiny_components,
    check_model_dir,
    count_parameters,
    load_backbone,
    materialize_random,
    save_tiny_model,
    tiny_transformer_config,
    wan22_transformer_config,
    wan22_vae_config,
)
from mirage_cli.backbone.text import HashTextEmbedder, build_byte_tokenizer
from mirage_cli.base.errors import InputError
from mirage_cli.base.options import BackboneOptions

cuda_only = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (offloading moves weights between CPU and GPU)"
)


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return load_backbone(options=BackboneOptions(preset="tiny", device="cpu", dtype="bfloat16"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def messages(excinfo) -> str:
    return "\n".join(str(p) for p in excinfo.value.problems)


# ---------------------------------------------------------------- tiny preset: geometry and prompts


def test_tiny_vae_geometry(tiny):
    assert (tiny.z_dim, tiny.spatial_scale, tiny.temporal_scale) == (48, 16, 4)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 3, 9, 64, 96, generator=g) * 2 - 1  # F = 4*2+1
    latents = tiny.encode_video(pixels)
    assert latents.shape == (1, 48, 3, 4, 6) and latents.dtype == torch.float32
    assert tiny.encode_video(pixels[:, :, :1]).shape == (1, 48, 1, 4, 6)
    assert tiny.encode_video(pixels[:, :, :5]).shape == (1, 48, 2, 4, 6)
    decoded = tiny.decode(latents)
    assert decoded.shape == (1, 3, 9, 64, 96) and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1


def test_encode_video_normalizes_with_latents_statistics(tiny):
    pixels = torch.zeros(1, 3, 1, 32, 32)
    normalized = tiny.encode_video(pixels)
    mu = tiny.vae.encode(pixels).latent_dist.mode()
    mean = torch.tensor(WAN22_LATENTS_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(WAN22_LATENTS_STD).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(normalized, (mu - mean) / std)


@pytest.mark.parametrize(
    "shape, match",
    [((1, 3, 8, 32, 32), "4k\\+1"), ((1, 3, 5, 40, 32), "multiples of 16"), ((1, 4, 5, 32, 32), "pixels")],
)
def test_encode_video_rejects_bad_shapes(tiny, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny.encode_video(torch.zeros(shape))


def test_decode_rejects_wrong_channels(tiny):
    with pytest.raises(ValueError, match="latents"):
        tiny.decode(torch.zeros(1, 16, 2, 4, 4))


def test_tiny_build_is_seeded_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a = build_tiny_components()
    b = build_tiny_components()
    assert torch.equal(torch.random.get_rng_state(), before)
    for x, y in zip(a.transformer.state_dict().values(), b.transformer.state_dict().values()):
        assert torch.equal(x, y)
    for x, y in zip(a.vae.state_dict().values(), b.vae.state_dict().values()):
        assert torch.equal(x, y)
    other = build_tiny_components(seed=1)
    assert not torch.equal(next(other.transformer.parameters()), next(a.transformer.parameters()))


def test_encode_prompt_shapes_and_default_negative(tiny):
    cond, uncond = tiny.encode_prompt("a red door", None)
    assert cond.shape == (1, 512, 32) and uncond.shape == (1, 512, 32)
    assert cond.dtype == torch.bfloat16
    n_tokens = len(tiny.text_embedder.tokenizer("a red door").input_ids)
    assert torch.count_nonzero(cond[0, n_tokens:]) == 0  # zero past the prompt, like Wan's pipeline
    assert torch.count_nonzero(cond[0, :n_tokens]) > 0
    _, explicit = tiny.encode_prompt("a red door", WAN_DEFAULT_NEGATIVE_PROMPT)
    assert torch.equal(uncond, explicit)
    other, empty_negative = tiny.encode_prompt("a blue door", "")
    assert not torch.equal(cond, other)
    assert not torch.equal(uncond, empty_negative)


def test_text_encoder_released_after_the_prompts():
    backbone = load_backbone(options=BackboneOptions(preset="tiny", device="cpu", dtype="float32"))
    cond, uncond = backbone.encode_prompt("a room")
    encoder = backbone.text_embedder.text_encoder  # a reference kept elsewhere does not keep the weights
    assert backbone.release_text_encoder() > 0 and backbone.text_embedder.text_encoder is None
    assert all(p.device.type == "meta" for p in encoder.parameters())
    assert backbone.release_text_encoder() == 0  # twice is harmless
    again = backbone.encode_prompt("a room")  # embedded before the release: answered without the encoder
    assert again[0] is cond and again[1] is uncond
    with pytest.raises(RuntimeError, match="the text encoder was released"):
        backbone.encode_prompt("a hall")


def test_default_negative_prompt_is_wans():
    assert WAN_DEFAULT_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态")
    assert WAN_DEFAULT_NEGATIVE_PROMPT.endswith("背景人很多，倒着走")


def test_byte_tokenizer_is_lossless_for_any_language():
    tokenizer = build_byte_tokenizer()
    ids = tokenizer(WAN_DEFAULT_NEGATIVE_PROMPT).input_ids
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == WAN_DEFAULT_NEGATIVE_PROMPT


def test_hash_text_embedder_is_deterministic():
    embedder = HashTextEmbedder(dim=16, max_length=8)
    a = embedder.encode(["A cat, sleeping", "a dog"], torch.device("cpu"), torch.float32)
    b = embedder.encode(["a cat , sleeping", "a dog"], torch.device("cpu"), torch.float32)
    assert a.shape == (2, 8, 16)
    assert torch.equal(a[0], b[0])  # same tokens after cleaning and lowercasing
    assert torch.equal(a[0, 0], a[1, 0])  # the word "a" embeds the same anywhere
    assert not torch.equal(a[0, 1], a[1, 1])
    assert torch.count_nonzero(a[0, 5:]) == 0  # 4 tokens + </s>, then zero padding


# ---------------------------------------------------------------- saved directories and the hub cache


def test_saved_tiny_model_loads_back_identically(tiny, tiny_dir):
    for sub in ("vae", "transformer", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_dir / sub).is_dir()
    assert check_model_dir(tiny_dir) == []
    loaded = load_backbone(str(tiny_dir), BackboneOptions(device="cpu", dtype="bfloat16"))
    assert loaded.source == str(tiny_dir)
    for name in ("transformer", "vae"):
        a, b = getattr(tiny, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
    assert torch.equal(tiny.encode_prompt("a hall")[0], loaded.encode_prompt("a hall")[0])
    assert loaded.make_scheduler(3.0).config.flow_shift == 3.0
    assert loaded.make_scheduler(3.0).config.prediction_type == "flow_prediction"


def test_missing_directory(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load_backbone(str(tmp_path / "nope"), BackboneOptions(device="cpu", dtype="bfloat16"))
    text = messages(excinfo)
    assert "nope" in text and "does not exist" in text and "--preset tiny" in text


def copy_model(tiny_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_dir, target)
    return target


def test_missing_subfolder_is_named(tiny_dir, tmp_path):
    model = copy_model(tiny_dir, tmp_path)
    shutil.rmtree(model / "text_encoder")
    with pytest.raises(InputError) as excinfo:
        load_backbone(str(model), BackboneOptions(device="cpu", dtype="bfloat16"))
    text = messages(excinfo)
    assert "text_encoder/ is missing" in text and "hf download" in text
    assert "vae" not in text.replace("--model", "")


def test_missing_weights_file_is_named(tiny_dir, tmp_path):
    model = copy_model(tiny_dir, tmp_path)
    (model / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    (model / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(InputError) as excinfo:
        load_backbone(str(model), BackboneOptions(device="cpu", dtype="bfloat16"))
    text = messages(excinfo)
    assert "transformer/diffusion_pytorch_model.safetensors is missing" in text
    assert "scheduler/scheduler_config.json is missing" in text


def test_missing_shard_is_named(tiny_dir, tmp_path):
    model = copy_model(tiny_dir, tmp_path)
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    weights.rename(model / "vae" / "diffusion_pytorch_model-00001-of-00002.safetensors")
    shards = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    index = {"metadata": {}, "weight_map": {"a": shards[0], "b": shards[1]}}
    (model / "vae" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert check_model_dir(model) == [
        f"vae/{shards[1]} is missing (the VAE weights, a shard listed in diffusion_pytorch_model.safetensors.index.json)"
    ]


def test_path_that_is_a_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"")
    with pytest.raises(InputError) as excinfo:
        load_backbone(str(target), BackboneOptions(device="cpu", dtype="bfloat16"))
    assert "not a directory" in messages(excinfo)


def test_unreadable_transformer_config(tiny_dir, tmp_path):
    model = copy_model(tiny_dir, tmp_path)
    (model / "transformer" / "config.json").write_text("{not json")
    with pytest.raises(InputError) as excinfo:
        load_backbone(str(model), BackboneOptions(device="cpu", dtype="bfloat16"))
    assert "transformer" in messages(excinfo) and "config" in messages(excinfo)


def test_hub_id_not_cached_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError) as excinfo:
        load_backbone("Wan-AI/Wan2.2-TI2V-5B-Diffusers", BackboneOptions(device="cpu", dtype="bfloat16"), local_files_only=True)
    text = messages(excinfo)
    assert "not in the Hugging Face cache" in text and "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in text


def test_hub_id_resolves_through_the_cache(tiny_dir, tmp_path, monkeypatch):
    # The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/...}.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--acme--tiny-wan"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    loaded = load_backbone("acme/tiny-wan", BackboneOptions(device="cpu", dtype="bfloat16"), local_files_only=True)
    assert loaded.source.endswith(commit)
    (repo / "snapshots" / commit / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(InputError) as excinfo:
        load_backbone("acme/tiny-wan", BackboneOptions(device="cpu", dtype="bfloat16"), local_files_only=True)
    assert "vae/diffusion_pytorch_model.safetensors is missing" in messages(excinfo)


# ---------------------------------------------------------------- real size: configs, refusal on CPU


def test_real_architecture_numbers():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    vae_config = wan22_vae_config()
    assert (vae_config["z_dim"], vae_config["base_dim"], vae_config["decoder_base_dim"]) == (48, 160, 256)
    assert (vae_config["patch_size"], vae_config["in_channels"], vae_config["is_residual"]) == (2, 12, True)
    assert len(vae_config["latents_mean"]) == len(vae_config["latents_std"]) == 48
    config = wan22_transformer_config()
    with init_empty_weights(include_buffers=False):
        transformer = WanTransformer3DModel(**config)
        vae = AutoencoderKLWan(**vae_config)
    assert transformer.config.num_attention_heads * transformer.config.attention_head_dim == 3072
    assert (transformer.config.num_layers, transformer.config.ffn_dim, transformer.config.text_dim) == (30, 14336, 4096)
    assert 4.9e9 < count_parameters(transformer) < 5.1e9
    assert 6.5e8 < count_parameters(vae) < 7.5e8
    assert next(transformer.parameters()).device.type == "meta"


def test_materialize_random_on_a_small_config():
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights(include_buffers=False):
        model = WanTransformer3DModel(**tiny_transformer_config())
    keep = list(WanTransformer3DModel._keep_in_fp32_modules)
    materialize_random(model, torch.device("cpu"), torch.bfloat16, keep, torch.Generator().manual_seed(0))
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert all(p.device.type == "cpu" and torch.isfinite(p.float()).all() for p in model.parameters())
    assert dtypes["condition_embedder.time_embedder.linear_1.weight"] == torch.float32
    assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16
    out = model(hidden_states=torch.zeros(1, 48, 1, 2, 2, dtype=torch.bfloat16), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.zeros(1, 4, 32, dtype=torch.bfloat16), return_dict=False)[0]
    assert out.shape == (1, 48, 1, 2, 2) and torch.isfinite(out.float()).all()


def test_real_size_text_encoder_numbers_and_the_random_builder():
    from transformers import UMT5EncoderModel

    from mirage_cli.backbone.configs import tiny_text_encoder_config, umt5_xxl_config
    from mirage_cli.backbone.random_components import empty_model, random_text_embedder

    real = empty_model(UMT5EncoderModel, {"config": umt5_xxl_config()})
    size = count_parameters(real)
    assert 5.6e9 < size < 5.8e9 and 10.4 < size * 2 / 2**30 < 10.7  # the 10.6 GiB of bfloat16 weights
    # the same builder at a small size: random weights made where they live, the byte tokenizer in front
    embedder = random_text_embedder(tiny_text_encoder_config(512), torch.device("cpu"), torch.float32, torch.Generator().manual_seed(0))
    out = embedder.encode(["a room", "ein Zimmer"], torch.device("cpu"), torch.float32)
    assert out.shape[0] == 2 and out.shape[-1] == 32 and torch.isfinite(out).all()


def test_random_text_encoder_needs_random_weights():
    with pytest.raises(InputError, match="--random-text-encoder goes with --random-weights"):
        load_backbone(options=BackboneOptions(random_text_encoder=True, preset="tiny", device="cpu"))


def test_random_weights_refused_on_cpu():
    with pytest.raises(InputError) as excinfo:
        load_backbone(options=BackboneOptions(random_weights=True, device="cpu", dtype="bfloat16"))
    assert "--preset tiny" in messages(excinfo) and "5.0B" in messages(excinfo)


def test_real_size_directory_refused_on_cpu(tiny_dir, tmp_path):
    model = copy_model(tiny_dir, tmp_path)
    config = json.loads((model / "transformer" / "config.json").read_text())
    config.update(wan22_transformer_config())
    (model / "transformer" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as excinfo:
        load_backbone(str(model), BackboneOptions(device="cpu", dtype="bfloat16"))
    assert "--preset tiny" in messages(excinfo)
    assert CPU_PARAMETER_LIMIT < 5e9


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(preset="huge"), "preset"),
        (dict(preset="tiny", random_weights=True), "preset"),
        (dict(preset="tiny", dtype="int8"), "dtype"),
        (dict(preset="tiny", offload="disk"), "offload"),
        (dict(preset="tiny", device="cpu", offload="model"), "offload"),
        (dict(preset="tiny", device="tpu"), "device"),
        (dict(preset="tiny", device="cpu", attention_backend="warp-speed"), "attention-backend"),
    ],
)
def test_bad_options_are_input_errors(kwargs, field):
    with pytest.raises(InputError) as excinfo:
        load_backbone(options=BackboneOptions(**kwargs))
    assert excinfo.value.problems[0].field == field


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_cuda_requested_without_cuda():
    with pytest.raises(InputError) as excinfo:
        load_backbone(options=BackboneOptions(preset="tiny", device="cuda"))
    assert "no CUDA device" in messages(excinfo)


def test_device_auto_on_this_machine():
    backbone = load_backbone(options=BackboneOptions(preset="tiny", device="auto"))
    assert backbone.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_runnable_options(tiny_dir):
    options = BackboneOptions(device="cpu", vae_tiling=True, fp8=True, attention_backend="native", compile=True, dtype="bfloat16")
    backbone = load_backbone(str(tiny_dir), options)
    assert backbone.vae.use_tiling
    assert backbone.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert all(block._compiled_call_impl is not None for block in backbone.transformer.blocks)
    plain = load_backbone(str(tiny_dir), BackboneOptions(device="cpu", fp8=True, dtype="bfloat16"))  # fp8 storage still runs on the CPU
    cond, _ = plain.encode_prompt("a hall")
    out = plain.transformer(hidden_states=torch.zeros(1, 48, 1, 2, 2, dtype=torch.bfloat16), timestep=torch.tensor([[0.0]]),
                            encoder_hidden_states=cond, return_dict=False)[0]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


@cuda_only
@pytest.mark.parametrize("offload", ["model", "group", "sequential"])
def test_offload_modes_run_on_cuda(offload):
    backbone = load_backbone(options=BackboneOptions(preset="tiny", device="cuda", offload=offload))
    latents = backbone.encode_video(torch.zeros(1, 3, 5, 64, 64, device="cuda"))
    assert latents.device.type == "cuda"
    assert backbone.decode(latents).shape == (1, 3, 5, 64, 64)
    cond, _ = backbone.encode_prompt("a hall")
    assert cond.device.type == "cuda"
    # released, the encoder leaves the GPU at once (under --offload model it ran there and stayed)
    on_gpu = sum(p.numel() * p.element_size() for p in backbone.text_embedder.text_encoder.parameters() if p.device.type == "cuda")
    before = torch.cuda.memory_allocated()
    backbone.release_text_encoder()
    assert torch.cuda.memory_allocated() <= before - on_gpu
