"""The VRAM predictor (mirage_cli.vram) against real runs of tiny models on the CPU, and against the
real-size figures it exists for.

Measured: a real tiny render on the CPU under ``LiveTensorBytes`` (the bytes of tensor storages alive,
op by op: "peak tensor bytes"); per stage, the weights on the device plus the most bytes the stage
allocated and held at once. Predicted: the same stages traced on the meta device (the denoising loop
on CPU tensors with a traced stand-in transformer). Nothing is mocked; there is no GPU here, so the
GPU-side plan choice is tested with given free-memory figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from render_helpers import write_small_scene

from mirage_cli.backbone import load_backbone
from mirage_cli.base.errors import InputError
from mirage_cli.base.options import BackboneOptions, RenderOptions
from mirage_cli.profiling.tensor_bytes import LiveTensorBytes
from mirage_cli.spec.plan import load_plan
from mirage_cli.vram.meta_models import meta_components
from mirage_cli.vram.meta_trace import traced_peak, weight_bytes
from mirage_cli.vram.plan import cached_transients, choose_vram_plan, parse_budget
from mirage_cli.vram.predict import GIB, STAGES, RenderShape, predict_vram


@pytest.fixture(scope="module", autouse=True)
def _trace_cache(tmp_path_factory):
    """The plan's trace cache goes to a temporary directory, not the user's home; the tests of this
    module share it, so a real-size stage is traced once (the cache key holds everything traced)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


def _measured_render(tmp_path: Path, depth_dir: Path, **scene):
    """A real tiny render on the CPU under the tracker: (plan, backbone, stage peaks)."""
    from mirage_cli.render.session import load_backbone_for, render

    if scene.pop("vace", False):
        from test_trained_weights import write_vace

        write_vace(tmp_path / "vace.safetensors", blocks=1, zero_after=False)
        scene["conditioning"] = {"method": "vace", "vace": str(tmp_path / "vace.safetensors")}
    spec = write_small_scene(tmp_path / "scene", depth_model=str(depth_dir), **scene)
    plan = load_plan(spec, overrides={"steps": 3})
    options = BackboneOptions(preset="tiny", device="cpu")
    backbone = load_backbone_for(plan, options)
    with LiveTensorBytes("cpu") as tracker:
        render(plan, RenderOptions(out=tmp_path / "run", backbone=options), backbone=backbone)
    return plan, backbone, tracker.stage_peaks


@pytest.mark.parametrize("scene", [{}, {"resolution": "320x192", "chunk_frames": 13}, {"vace": True}], ids=["small", "wider", "vace"])
def test_tiny_render_stages_match_their_prediction(tmp_path, tiny_depth_dir, scene):
    plan, backbone, measured = _measured_render(tmp_path, tiny_depth_dir, **scene)
    parts = meta_components(plan.model, BackboneOptions(preset="tiny", device="cpu"), str(tiny_depth_dir), torch.float32,
                            vace=plan.conditioning.vace)
    prediction = predict_vram(parts, RenderShape.of_plan(plan), offload="none", device_type="cpu")

    real = {"transformer": backbone.transformer, "vae": backbone.vae, "text_encoder": backbone.text_embedder.text_encoder}
    for name, module in real.items():  # the meta copies hold the same bytes as the loaded modules
        assert weight_bytes(getattr(parts, name)) == weight_bytes(module), name
    for stage in prediction.stages:
        weights = stage.weights  # every component stays on the CPU; checked above
        got, want = weights + measured[stage.stage], weights + stage.transient
        if stage.stage == "depth_estimation":  # predicted with the memory covering every pixel: an upper bound
            assert got <= want <= 1.15 * got, (stage.stage, got, want)
        else:
            assert abs(got - want) <= 0.10 * got, (stage.stage, got, want, measured[stage.stage], stage.transient)
    assert {stage.stage for stage in prediction.stages} == set(STAGES)


def test_validate_vram_cli(small_scene):
    """``mirage validate --vram`` prints the plan and its stages; a budget nothing fits exits 2 with one line."""
    from render_helpers import cli

    result = cli("validate", small_scene, "--vram", "--preset", "tiny", "--vram-budget", "4")
    assert result.exit_code == 0, result.stderr
    assert "memory plan:" in result.stdout and "decode" in result.stdout and "--vram-budget 4" in result.stdout
    refused = cli("validate", small_scene, "--vram", "--preset", "tiny", "--vram-budget", "0.0001")
    assert refused.exit_code == 2 and "does not fit the VRAM budget" in refused.stderr and "Traceback" not in refused.stderr
    bad = cli("validate", small_scene, "--vram", "--vram-budget", "plenty", "--preset", "tiny")
    assert bad.exit_code == 2 and "vram-budget" in bad.stderr
    as_given = cli("validate", small_scene, "--vram", "--preset", "tiny", "--vram-budget", "none", "--vae-tiling")
    assert as_given.exit_code == 0 and "the options as given" in as_given.stdout and "predicted peak" in as_given.stdout


def test_meta_trace_counts_what_a_cpu_run_holds():
    """The same module call traced on meta and measured on the CPU: the same peak tensor bytes."""
    from diffusers import AutoencoderKLWan

    from mirage_cli.backbone.configs import tiny_vae_config
    from mirage_cli.vram.meta_trace import meta_module

    torch.manual_seed(0)
    real = AutoencoderKLWan(**tiny_vae_config()).eval()
    meta = meta_module(AutoencoderKLWan, tiny_vae_config(), torch.float32)
    z = torch.zeros(1, 48, 4, 8, 14)
    tracker = LiveTensorBytes("cpu")
    with torch.no_grad(), tracker:
        real.decode(z, return_dict=False)
    z_meta = z.to("meta")
    assert traced_peak(lambda: meta.decode(z_meta, return_dict=False), replay=(meta.decoder,)) == tracker.peak


@pytest.fixture(scope="module")
def real_size():
    """Wan2.2-TI2V-5B and Depth Anything V2 Small at 1280x704, one 121-frame chunk: their published
    configurations on the meta device (nothing downloaded)."""
    shape = RenderShape(1280, 704, latent_frames=31, decode_context=4, guidance=5.0, stores_frames=True)
    return shape


def _real(shape, offload="none", **options):
    parts = meta_components("Wan-AI/Wan2.2-TI2V-5B-Diffusers", BackboneOptions(**options), "depth-anything/Depth-Anything-V2-Small-hf",
                            torch.bfloat16)
    return parts, predict_vram(parts, shape, offload=offload, transients=cached_transients(parts, shape))


def test_real_size_figures(real_size):
    """The table of issue 13 (meta-device traces of the real modules): weights 9.33 / 10.58 / 2.63 GiB,
    the denoising loop 1.89 GiB (the lean forward; diffusers' own forward alone holds 5.08 GiB,
    tests/test_lean_forward.py), an untiled decode of 35 latent frames 19.49, tiled 6.49."""
    parts, untiled = _real(real_size)
    assert weight_bytes(parts.transformer) / GIB == pytest.approx(9.33, abs=0.01)
    assert weight_bytes(parts.text_encoder) / GIB == pytest.approx(10.58, abs=0.01)
    assert weight_bytes(parts.vae) / GIB == pytest.approx(2.63, abs=0.01)
    stages = {stage.stage: stage for stage in untiled.stages}
    assert stages["decode"].transient / GIB == pytest.approx(19.49, abs=0.05)
    assert stages["denoise"].transient / GIB == pytest.approx(1.89, abs=0.05)  # the lean forward plus the loop's latents
    _, tiled = _real(real_size, vae_tiling=True)
    assert {stage.stage: stage for stage in tiled.stages}["decode"].transient / GIB == pytest.approx(6.49, abs=0.05)
    assert tiled.peak / GIB <= 22.0  # what --vram-budget auto picks on a 24 GiB card
    _, small = _real(real_size, offload="model", vae_tiling=True)
    assert small.peak / GIB <= 12.0  # --offload model --vae-tiling: a 12 GiB card (issue 13)


def test_the_vace_branch_is_counted(tmp_path, real_size):
    """A VACE file's layout comes from its header (15 blocks: every 2nd of 30 layers); the branch adds
    about 4.9 GiB of weights and the recipe's longer sequence (4 references, 2 preceding frames) more
    activations: an auto plan on a 24 GiB card then offloads the model and tiles the decode (19.1 GiB)."""
    from test_trained_weights import official_vace_names, write_sparse_safetensors

    header = tmp_path / "vace.safetensors"  # only the header is read: the 5B branch's names and shapes, its data a hole
    write_sparse_safetensors(header, official_vace_names(15, dim=3072, ffn=14336))
    model, depth = "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "depth-anything/Depth-Anything-V2-Small-hf"
    parts = meta_components(model, BackboneOptions(vae_tiling=True), depth, torch.bfloat16, vace=header)
    assert parts.transformer.config.vace_layers == list(range(0, 30, 2))
    assert weight_bytes(parts.transformer) / GIB == pytest.approx(14.19, abs=0.05)
    plan = choose_vram_plan(model, BackboneOptions(), depth, real_size, budget="auto", free=(int(23.5 * GIB), "test card"), vace=header)
    assert (plan.offload, plan.vae_tiling) == ("model", True) and plan.prediction.peak <= 20 * GIB


def test_budget_choices(real_size):
    """auto on a 24 GiB card adds tiling, an 80 GiB card changes nothing, a small card offloads, and
    a budget nothing fits is refused naming the budget, the prediction and the smallest plan."""
    model, depth = "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "depth-anything/Depth-Anything-V2-Small-hf"
    plan24 = choose_vram_plan(model, BackboneOptions(), depth, real_size, budget="auto", free=(int(23.5 * GIB), "test card"))
    assert (plan24.offload, plan24.vae_tiling) == ("none", True) and plan24.prediction.peak <= 22 * GIB
    plan80 = choose_vram_plan(model, BackboneOptions(), depth, real_size, budget="auto", free=(int(78 * GIB), "test card"))
    assert (plan80.offload, plan80.vae_tiling) == ("none", False)
    plan12 = choose_vram_plan(model, BackboneOptions(), depth, real_size, budget=parse_budget("12"), free=None)
    assert plan12.prediction.peak <= 12 * GIB and plan12.vae_tiling
    resumed = choose_vram_plan(model, BackboneOptions(), depth, real_size, budget=parse_budget("80"), free=None, recorded_tiling=True)
    assert resumed.vae_tiling  # a run rendered tiled stays tiled
    with pytest.raises(InputError) as refused:
        choose_vram_plan(model, BackboneOptions(), depth, real_size, budget=parse_budget("3"), free=None)
    message = str(refused.value.problems[0])
    assert "3.0 GiB" in message and "--offload sequential --vae-tiling" in message
    for bad in ("0", "-2", "lots", "nan"):
        with pytest.raises(InputError):
            parse_budget(bad)


def test_components_wait_on_the_cpu_until_their_first_use():
    """``Backbone.use`` moves a waiting component to the device once, and releasing the text encoder
    forgets it. On this CPU-only machine the device is the CPU (the move itself is ``Module.to``)."""
    backbone = load_backbone(options=BackboneOptions(preset="tiny", device="cpu"))
    encoder = backbone.text_embedder.text_encoder
    backbone.waiting = {"transformer": backbone.transformer, "vae": backbone.vae, "text_encoder": encoder}
    backbone.encode_prompt("a room")
    assert set(backbone.waiting) == {"transformer", "vae"}
    backbone.release_text_encoder()
    backbone.use("vae")
    assert set(backbone.waiting) == {"transformer"}


def test_render_refuses_a_bad_budget(tmp_path, small_scene):
    from render_helpers import SMALL, cli

    result = cli("render", small_scene, "--out", tmp_path / "run", "--vram-budget", "-1", *SMALL)
    assert result.exit_code == 2 and "vram-budget" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_validate_vram_budget_implies_vram_and_is_range_checked(small_scene):
    """``--vram-budget`` on ``validate`` asks for the plan it names (as ``--vram`` does); a value that is
    not a budget, or one beyond any float's GiB, is one line naming the flag, with or without ``--vram``."""
    from render_helpers import cli

    implied = cli("validate", small_scene, "--preset", "tiny", "--vram-budget", "4")
    assert implied.exit_code == 0, implied.stderr
    assert "memory plan:" in implied.stdout and "--vram-budget 4" in implied.stdout
    assert "memory plan:" not in cli("validate", small_scene, "--preset", "tiny").stdout
    for args in (("--vram-budget", "abc"), ("--vram", "--vram-budget", "1e308"), ("--vram-budget", "inf")):
        refused = cli("validate", small_scene, "--preset", "tiny", *args)
        (line,) = refused.stderr.strip().splitlines()
        assert refused.exit_code == 2 and line.startswith("error: --vram-budget: must be auto, none or a number of GiB"), line
    assert parse_budget("1048576") == 1048576.0
    with pytest.raises(InputError):
        parse_budget("1048577")
