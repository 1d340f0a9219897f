"""The few-step sampler of DMD-distilled models (mirage_cli/denoise/few_step.py) inside the chunk loops.

Real tiny Wan2.2 components (float32 on the CPU so equalities are exact); nothing is mocked. The oracle
is FastVideo's DMD stage (hao-ai-lab/FastVideo ``fastvideo/pipelines/stages/denoising.py``
``DmdDenoisingStage``): running the stage itself needs FastVideo's pipeline machinery and its own
transformer class, so the test runs FastVideo's own per-step pieces (its ``FlowMatchEulerDiscreteScheduler``
table and ``add_noise``, and ``fastvideo/models/utils.py`` ``pred_noise_to_pred_video``) from a checkout
at ``FASTVIDEO_REPO`` (default /tmp/FastVideo; skipped when absent) inside a twin of the stage's loop,
beside a plain-math twin written from reading that code, on the same diffusers ``WanTransformer3DModel``.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_denoise import H, T, W, make_inputs

from mirage_cli.backbone import load_backbone
from mirage_cli.base.options import BackboneOptions
from mirage_cli.denoise.few_step import FewStepScheduler, check_timesteps, sigma_of, sigma_table
from mirage_cli.denoise.loop import DenoiseState, denoise_chunk

FASTWAN = (1000, 757, 522)  # FastVideo FastWan2_2_TI2V_5B_Config.dmd_denoising_steps
DMD_SHIFT = 8.0  # DmdDenoisingStage: FlowMatchEulerDiscreteScheduler(shift=8.0)
FASTVIDEO = Path(os.environ.get("FASTVIDEO_REPO", "/tmp/FastVideo"))


def fastvideo_pieces():
    """FastVideo's scheduler module and models/utils.py, imported from the checkout without running its
    package ``__init__`` (which pulls in the whole inference stack); skips when the checkout is absent."""
    if not (FASTVIDEO / "fastvideo" / "models" / "utils.py").exists():
        pytest.skip(f"FastVideo checkout not at {FASTVIDEO} (set FASTVIDEO_REPO)")
    for name in ("fastvideo", "fastvideo.models", "fastvideo.models.schedulers"):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(FASTVIDEO.joinpath(*name.split(".")))]
            sys.modules[name] = package
    scheduling = importlib.import_module("fastvideo.models.schedulers.scheduling_flow_match_euler_discrete")
    return scheduling.FlowMatchEulerDiscreteScheduler, importlib.import_module("fastvideo.models.utils")


def run(backbone, prompts, *, mode="clean", mask=None, timesteps=FASTWAN, generator_seed=7, **kw):
    noise, cond_frame0, pinned, pin_mask = make_inputs()
    return denoise_chunk(
        backbone, noise=noise, cond_frame0=cond_frame0, pinned_latents=pinned,
        pin_mask=pin_mask if mask is None else mask, pin_mode=mode, pin_until=kw.pop("pin_until", 1.0),
        prompt_embeds=prompts[0], negative_prompt_embeds=prompts[1], guidance=1.0, steps=len(timesteps), shift=DMD_SHIFT,
        generator=kw.pop("generator", None) or torch.Generator().manual_seed(generator_seed), timesteps=timesteps, **kw,
    )


# --- the sigma table --------------------------------------------------------------------------------


def test_sigma_of_timesteps_hand_cases():
    sigmas = sigma_of(FASTWAN, DMD_SHIFT)
    assert float(sigmas[0]) == 1.0  # t = 1000 is the table's first entry
    assert torch.allclose(sigmas, torch.tensor([1.0, 0.757, 0.522]), atol=1e-3)  # sigma(t) = t/1000 up to the spacing
    table_t, table_sigma = sigma_table(DMD_SHIFT)
    assert table_t.shape == (1000,) and torch.all(table_t[1:] < table_t[:-1])
    with pytest.raises(ValueError, match="decreasing"):
        check_timesteps([757, 1000])
    with pytest.raises(ValueError, match="timesteps"):
        check_timesteps([1200, 500])


def test_sigma_table_is_fastvideos():
    scheduler_cls, utils = fastvideo_pieces()
    theirs = scheduler_cls(shift=DMD_SHIFT)
    table_t, table_sigma = sigma_table(DMD_SHIFT)
    assert torch.equal(table_t, theirs.timesteps) and torch.equal(table_sigma, theirs.sigmas)
    # their nearest-timestep lookup (pred_noise_to_pred_video with unit velocity gives sigma back)
    for t, ours in zip(FASTWAN, sigma_of(FASTWAN, DMD_SHIFT)):
        x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
        sigma = -utils.pred_noise_to_pred_video(torch.ones_like(x), x, torch.tensor([t]), theirs)
        assert float(sigma) == float(ours)


# --- the oracle: FastVideo's DMD loop -----------------------------------------------------------------


def plain_sigma(t: float, shift: float) -> float:
    """sigma(t) written from FastVideo's scheduler and lookup: the nearest entry of the shifted table."""
    u = np.linspace(1, 1000, 1000, dtype=np.float32)[::-1] / np.float32(1000)
    sigmas = np.float32(shift) * u / (np.float32(1) + np.float32(shift - 1) * u)
    return float(sigmas[np.argmin(np.abs(sigmas * 1000 - t))])


def dmd_stage_twin(transformer, noise, prompt_embeds, timesteps, generator, fastvideo=None):
    """DmdDenoisingStage.forward's loop (no TI2V image path, as in FastVideo), float32: x0 from the
    prediction at each timestep, re-noised to the next with ``torch.randn(shape, generator=...)``.
    With ``fastvideo`` = (scheduler class, utils) its own pieces do the math, else plain math."""
    latents = noise.clone()
    if fastvideo is not None:
        scheduler = fastvideo[0](shift=DMD_SHIFT)
    for i, t in enumerate(timesteps):
        t_expand = torch.tensor([t], dtype=torch.long)
        velocity = transformer(hidden_states=latents, timestep=t_expand, encoder_hidden_states=prompt_embeds,
                               return_dict=False)[0]  # [1, C, T, h, w]
        if fastvideo is not None:  # [B, C, T, h, w] -> FastVideo's [B*T, C, h, w] frames with one timestep
            flat = lambda x: x.permute(0, 2, 1, 3, 4).flatten(0, 1)  # noqa: E731
            unflat = lambda x: x.unflatten(0, (1, T)).permute(0, 2, 1, 3, 4)  # noqa: E731
            x0 = unflat(fastvideo[1].pred_noise_to_pred_video(flat(velocity), flat(latents), t_expand, scheduler))
        else:
            x0 = latents - plain_sigma(t, DMD_SHIFT) * velocity
        if i == len(timesteps) - 1:
            return x0
        eps = torch.randn(tuple(noise.shape), dtype=torch.float32, generator=generator)
        if fastvideo is not None:
            latents = unflat(scheduler.add_noise(flat(x0), flat(eps), torch.tensor([timesteps[i + 1]], dtype=torch.long)))
        else:
            sigma_next = plain_sigma(timesteps[i + 1], DMD_SHIFT)
            latents = (1 - sigma_next) * x0 + sigma_next * eps


def our_plain_loop(transformer, noise, prompt_embeds, timesteps, generator):
    """The same loop with our FewStepScheduler's step (what denoise_chunk runs, minus the TI2V frame 0)."""
    scheduler = FewStepScheduler(timesteps, DMD_SHIFT, generator, "cpu")
    latents = noise.clone()
    for t in scheduler.timesteps:
        velocity = transformer(hidden_states=latents, timestep=t.view(1), encoder_hidden_states=prompt_embeds, return_dict=False)[0]
        latents = scheduler.step(velocity, t, latents)[0]
    return latents


@pytest.mark.parametrize("timesteps", [FASTWAN, (1000, 750, 500, 250)])
def test_matches_fastvideos_dmd_loop(backbone, prompts, timesteps):
    """Same tiny WanTransformer3DModel, noise, timesteps and re-noise generator seed: our scheduler's
    latents equal the plain-math twin exactly, and FastVideo's own pieces to 1e-5 (they form x0 in
    float64 before casting back, we in float32)."""
    noise = make_inputs()[0]
    ours = our_plain_loop(backbone.transformer, noise, prompts[0], timesteps, torch.Generator().manual_seed(3))
    plain = dmd_stage_twin(backbone.transformer, noise, prompts[0], timesteps, torch.Generator().manual_seed(3))
    assert torch.equal(ours, plain)
    theirs = dmd_stage_twin(backbone.transformer, noise, prompts[0], timesteps, torch.Generator().manual_seed(3),
                            fastvideo=fastvideo_pieces())
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), float((ours - theirs).abs().max())


def test_denoise_chunk_is_the_dmd_loop_with_frame0_held(backbone, prompts):
    """denoise_chunk with nothing pinned = the stage's loop plus TI2V's frame 0 (timestep 0 on its tokens,
    the condition written back before every step and in the output)."""
    noise, cond_frame0, _, _ = make_inputs()
    ours = run(backbone, prompts, mask=torch.zeros(T, H, W, dtype=torch.bool), generator_seed=3).latents
    g = torch.Generator().manual_seed(3)
    latents = noise.clone()
    tokens_per_frame = (H // 2) * (W // 2)
    for i, t in enumerate(FASTWAN):
        latents[:, :, 0] = cond_frame0
        timestep = torch.full((1, T * tokens_per_frame), float(t))
        timestep[:, :tokens_per_frame] = 0
        velocity = backbone.transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=prompts[0],
                                        return_dict=False)[0]
        velocity[:, :, 0] = 0
        x0 = latents - plain_sigma(t, DMD_SHIFT) * velocity
        if i == len(FASTWAN) - 1:
            latents = x0
            break
        eps = torch.randn(tuple(noise.shape), generator=g)
        sigma_next = plain_sigma(FASTWAN[i + 1], DMD_SHIFT)
        latents = (1 - sigma_next) * x0 + sigma_next * eps
    latents[:, :, 0] = cond_frame0
    assert torch.equal(ours, latents)


# --- the memory's pins and resume ---------------------------------------------------------------------


def test_pins_hold_under_the_few_step_sampler(backbone, prompts):
    noise, cond_frame0, pinned, mask = make_inputs()
    clean = run(backbone, prompts, mode="clean").latents
    assert torch.equal(clean[0, :, 0], cond_frame0)
    assert torch.equal(clean[0, :, 1, 0:2, 0:4], pinned[1, :, 0:2, 0:4])  # clean-pinned tokens are the memory
    assert torch.equal(clean[0, :, 2, 2:4, 2:6], pinned[2, :, 2:4, 2:6])
    free = run(backbone, prompts, mode="clean", mask=torch.zeros(T, H, W, dtype=torch.bool)).latents
    assert not torch.equal(free[0, :, 1, 0:2, 0:4], pinned[1, :, 0:2, 0:4])
    noised = run(backbone, prompts, mode="noised").latents
    assert torch.isfinite(noised).all() and not torch.equal(noised, clean) and not torch.equal(noised, free)
    assert torch.equal(run(backbone, prompts, mode="noised").latents, noised)  # same seed, same bytes


@pytest.mark.parametrize("mode", ["clean", "noised"])
def test_resume_mid_chunk_is_bit_exact(backbone, prompts, tmp_path, mode):
    timesteps = (1000, 750, 500, 250)
    full = run(backbone, prompts, mode=mode, timesteps=timesteps, pin_until=0.6)
    part = run(backbone, prompts, mode=mode, timesteps=timesteps, pin_until=0.6, on_step=lambda i, s: i == 1)
    assert not part.completed and part.state.step == 2
    path = tmp_path / "state.safetensors"
    save_file({k: v.cpu() for k, v in part.state.to_tensors().items()}, str(path))
    fresh = load_backbone(options=BackboneOptions(preset="tiny", device="cpu", dtype="float32"))
    state = DenoiseState.from_tensors(load_file(str(path)))
    resumed = run(fresh, fresh.encode_prompt("a quiet room with a window", None), mode=mode, timesteps=timesteps,
                  pin_until=0.6, resume_state=state, generator=torch.Generator().manual_seed(999))
    assert resumed.completed and torch.equal(resumed.latents, full.latents)


def test_unipc_state_does_not_resume_a_few_step_chunk(backbone, prompts):
    noise, cond_frame0, pinned, mask = make_inputs()
    unipc = denoise_chunk(
        backbone, noise=noise, cond_frame0=cond_frame0, pinned_latents=pinned, pin_mask=mask, pin_mode="clean", pin_until=1.0,
        prompt_embeds=prompts[0], negative_prompt_embeds=None, guidance=1.0, steps=3, shift=DMD_SHIFT,
        generator=torch.Generator().manual_seed(0), on_step=lambda i, s: True,
    )
    with pytest.raises(ValueError, match="resume_state"):
        run(backbone, prompts, resume_state=unipc.state)
    with pytest.raises(ValueError, match="steps"):
        denoise_chunk(
            backbone, noise=noise, cond_frame0=cond_frame0, pinned_latents=pinned, pin_mask=mask, pin_mode="clean",
            pin_until=1.0, prompt_embeds=prompts[0], negative_prompt_embeds=None, guidance=1.0, steps=4, shift=DMD_SHIFT,
            generator=torch.Generator(), timesteps=FASTWAN)


# --- the spec's sampler: and the render ----------------------------------------------------------------


def test_spec_sampler_sets_steps_and_guidance_and_refuses_contradictions(tmp_path):
    from render_helpers import write_small_scene

    from mirage_cli.base.errors import InputError
    from mirage_cli.spec.plan import load_plan

    plan = load_plan(write_small_scene(tmp_path / "a", sampler="dmd"))
    assert plan.sampler.timesteps == FASTWAN and plan.steps == 3 and plan.guidance == 1.0
    assert plan.summary()["sampler"] == {"name": "dmd", "timesteps": [1000, 757, 522], "shift": 8.0}
    assert "sampler     dmd, timesteps [1000, 757, 522]" in plan.describe()
    turbo = load_plan(write_small_scene(tmp_path / "b", sampler={"timesteps": [1000, 750, 500, 250]}))
    assert turbo.steps == 4 and turbo.sampler.name == "dmd"
    assert load_plan(write_small_scene(tmp_path / "c")).sampler.summary() == {"name": "unipc"}
    for changes, field, words in [
        (dict(sampler="dmd", guidance=5), "guidance", "guidance-distilled"),
        (dict(sampler="dmd", steps=50), "steps", "one step per timestep"),
        (dict(sampler="euler"), "sampler", "expected one of"),
        (dict(sampler={"name": "dmd", "timesteps": [500, 757]}), "sampler.timesteps", "decreasing"),
        (dict(sampler={"name": "dmd", "timesteps": []}), "sampler.timesteps", "non-empty"),
        (dict(sampler={"name": "dmd", "shift": -1}), "sampler.shift", "> 0"),
        (dict(sampler={"name": "unipc", "timesteps": [1000]}), "sampler.timesteps", "only the dmd"),
        (dict(sampler={"name": "dmd", "step": 3}), "sampler.step", "unknown key"),
    ]:
        with pytest.raises(InputError) as info:
            load_plan(write_small_scene(tmp_path / field.replace(".", "_"), **changes))
        assert any(p.field == field and words in p.message for p in info.value.problems), str(info.value)


def test_render_with_the_dmd_sampler_is_deterministic_and_fingerprinted(tmp_path):
    import json

    from render_helpers import cli, file_hash, write_small_scene

    scene = write_small_scene(tmp_path / "scene", sampler="dmd")
    args = ["--preset", "tiny", "--quiet", "--json"]
    first = cli("render", scene, "--out", tmp_path / "a", *args)
    assert first.exit_code == 0, first.stderr
    again = cli("render", scene, "--out", tmp_path / "b", *args)
    assert again.exit_code == 0, again.stderr
    assert file_hash(tmp_path / "a" / "video.mp4") == file_hash(tmp_path / "b" / "video.mp4")
    other = write_small_scene(tmp_path / "scene", sampler={"timesteps": [1000, 750, 500, 250]})
    changed = cli("render", other, "--out", tmp_path / "a", *args)
    assert changed.exit_code == 2 and "sampler" in changed.stderr, changed.stderr
    assert json.loads(first.stdout)


def test_the_sampler_flag_overrides_the_spec_and_keeps_its_timesteps(tmp_path):
    from render_helpers import cli, write_small_scene

    from mirage_cli.spec.plan import load_plan

    plain = write_small_scene(tmp_path / "plain")
    assert load_plan(plain, overrides={"sampler": "dmd"}).sampler.timesteps == FASTWAN
    own = write_small_scene(tmp_path / "own", sampler={"name": "dmd", "timesteps": [1000, 500]})
    kept = load_plan(own, overrides={"sampler": "dmd"})
    assert kept.sampler.timesteps == (1000, 500) and kept.steps == 2 and kept.sampler.source == "flag"
    assert load_plan(own, overrides={"sampler": "unipc"}).sampler.summary() == {"name": "unipc"}
    shown = cli("validate", plain, "--sampler", "dmd")
    assert shown.exit_code == 0 and "sampler     dmd, timesteps [1000, 757, 522]" in shown.stdout, shown.stderr
    assert "3 steps, guidance 1" in shown.stdout
    bad = cli("validate", plain, "--sampler", "euler")
    assert bad.exit_code == 2 and "--sampler" in bad.stderr


@pytest.mark.parametrize("how", ["name", "model_index", "turbo"])
def test_the_model_chooses_the_few_step_sampler_where_it_says(tmp_path, how):
    from render_helpers import cli, write_small_scene

    from mirage_cli.spec.plan import load_plan

    if how == "name":  # FastVideo's registry knows FastWan2.2-TI2V-5B by its name
        model = tmp_path / "FastWan2.2-TI2V-5B-FullAttn-Diffusers"
        model.mkdir()
    elif how == "turbo":  # Wan2.2-TI2V-5B-Turbo, by its name: its own 4 timesteps
        model = tmp_path / "Wan2.2-TI2V-5B-Turbo"
        model.mkdir()
    else:  # a local folder whose pipeline class is a DMD pipeline (FastVideo's naming)
        model = tmp_path / "distilled"
        model.mkdir()
        (model / "model_index.json").write_text('{"_class_name": "WanDMDPipeline"}')
    scene = write_small_scene(tmp_path / "scene", model=str(model))
    plan = load_plan(scene)
    timesteps = (1000, 750, 500, 250) if how == "turbo" else (1000, 757, 522)
    assert plan.sampler.name == "dmd" and plan.sampler.timesteps == timesteps and plan.sampler.shift == 8.0
    assert plan.steps == len(timesteps) and plan.guidance == 1.0
    assert load_plan(scene, overrides={"sampler": "dmd"}).sampler.timesteps == timesteps  # a bare flag keeps the model's
    named = write_small_scene(tmp_path / "named", model=str(model), sampler="dmd")
    assert load_plan(named).sampler.timesteps == timesteps  # and so does a bare sampler: dmd in the spec
    assert plan.sampler.source.startswith("model") and "from the model" in plan.describe()
    assert load_plan(scene, overrides={"sampler": "unipc"}).sampler.name == "unipc"
    refused = cli("render", scene, "--steps", "50", "--preset", "tiny", "--out", tmp_path / "run")
    assert refused.exit_code == 2 and "steps" in refused.stderr and "--sampler unipc" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1
    # a plain Wan2.2 folder says nothing: UniPC
    other = tmp_path / "Wan2.2-TI2V-5B-Diffusers"
    other.mkdir()
    (other / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    assert load_plan(write_small_scene(tmp_path / "wan", model=str(other))).sampler.name == "unipc"


def test_bench_puts_the_few_step_sampler_beside_unipc(tmp_path):
    import json

    from render_helpers import cli, write_small_scene

    from mirage_cli.measure.sampler_bench import ON_THE_CRITICAL_PATH, STAGE_GROUPS

    scene = write_small_scene(tmp_path / "scene")
    result = cli("bench", scene, "--preset", "tiny", "--sampler", "dmd", "--steps", "4", "--repeat", "1", "--chunks", "1", "--json")
    assert result.exit_code == 0, result.stderr
    measured = json.loads(result.stdout)
    unipc = measured["settings"]["unipc"]
    assert unipc["sampler"] == {"name": "unipc"} and unipc["steps"] == 4 and unipc["guidance"] > 1
    assert measured["settings"]["dmd"]["steps"] == 3 and measured["settings"]["dmd"]["guidance"] == 1.0
    for run in measured["runs"].values():
        assert set(run) == {"end_to_end_seconds", "wall", *STAGE_GROUPS} and run["denoise"] > 0 and run["decode"] > 0
    assert measured["dominant_stage"] in ON_THE_CRITICAL_PATH and measured["speedup_denoise"] > 0
    for args, words in [(["--sampler", "unipc"], "name one (dmd)"), (["--sampler", "dmd", "--cache", "first-block"], "--cache")]:
        refused = cli("bench", scene, "--preset", "tiny", *args)
        assert refused.exit_code == 2 and words in refused.stderr, refused.stderr
