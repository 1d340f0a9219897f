"""diffusers' step caches through our denoising loop (tiny preset, float32 on the CPU, nothing mocked):
the work they skip counted in transformer blocks, bit-exact mid-chunk resume through a safetensors
file with every cache, the MagCache calibration file, the spec and the fingerprint."""

from __future__ import annotations

import json

import pytest
import torch
from render_helpers import SMALL, cli, file_hash, write_small_scene
from safetensors.torch import load_file, save_file
from test_denoise import run

from mirage_cli.backbone import load_backbone
from mirage_cli.base.options import BackboneOptions
from mirage_cli.denoise.loop import DenoiseState
from mirage_cli.denoise.step_cache import (
    CALIBRATING,
    calibration_ratios,
    count_block_computations,
    diffusers_config,
    use_step_cache,
)
from mirage_cli.spec.step_cache import StepCacheSettings

STEPS = 12


def tiny():
    return load_backbone(options=BackboneOptions(preset="tiny", device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def mag_ratios(backbone, prompts):
    """A real calibration pass of the tiny model (diffusers' MagCache in calibration mode)."""
    use_step_cache(backbone.transformer, diffusers_config(StepCacheSettings(CALIBRATING), STEPS))
    try:
        run(backbone, prompts, guidance=3.0, steps=STEPS)
        return calibration_ratios(backbone.transformer)
    finally:
        use_step_cache(backbone.transformer, None)


def settings_for(method: str, mag_ratios) -> StepCacheSettings:
    # knobs above the defaults: the tiny random model changes more per step than the real one
    return {
        "first-block": StepCacheSettings("first-block", threshold=0.6),
        "mag": StepCacheSettings("mag", threshold=0.5, ratios=tuple(mag_ratios["cond"])),
        "taylorseer": StepCacheSettings("taylorseer", interval=3),
    }[method]


METHODS = ["first-block", "mag", "taylorseer"]


def test_calibration_records_one_ratio_per_step_and_branch(mag_ratios):
    assert set(mag_ratios) == {"cond", "uncond"}
    assert all(len(r) == STEPS for r in mag_ratios.values()) and mag_ratios["cond"][0] == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_each_cache_skips_blocks(backbone, prompts, mag_ratios, method):
    blocks = len(backbone.transformer.blocks)
    with count_block_computations(backbone.transformer) as plain:
        reference = run(backbone, prompts, guidance=3.0, steps=STEPS)
    assert plain[0] == STEPS * 2 * blocks  # two guidance branches per step
    use_step_cache(backbone.transformer, diffusers_config(settings_for(method, mag_ratios), STEPS))
    try:
        with count_block_computations(backbone.transformer) as cached:
            result = run(backbone, prompts, guidance=3.0, steps=STEPS)
    finally:
        use_step_cache(backbone.transformer, None)
    assert cached[0] < 0.8 * plain[0], f"{method}: {cached[0]} of {plain[0]} block computations"
    assert not torch.equal(result.latents, reference.latents)  # skipping is approximate ...
    assert torch.isfinite(result.latents).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stop_at", [1, 4, 8])
def test_resume_mid_chunk_with_a_cache_is_bit_exact(backbone, prompts, mag_ratios, tmp_path, method, stop_at):
    settings = settings_for(method, mag_ratios)
    use_step_cache(backbone.transformer, diffusers_config(settings, STEPS))
    try:
        full = run(backbone, prompts, guidance=3.0, steps=STEPS)
        part = run(backbone, prompts, guidance=3.0, steps=STEPS, on_step=lambda i, state: i == stop_at)
    finally:
        use_step_cache(backbone.transformer, None)
    assert not part.completed and part.state.step == stop_at + 1 and part.state.cache is not None
    path = tmp_path / "state.safetensors"
    save_file({k: v.cpu() for k, v in part.state.to_tensors().items()}, str(path))

    fresh = tiny()  # another process, in effect: nothing of the first run's hooks survives
    use_step_cache(fresh.transformer, diffusers_config(settings, STEPS))
    cond, uncond = fresh.encode_prompt("a quiet room with a window", None)
    resumed = run(fresh, (cond, uncond), guidance=3.0, steps=STEPS, resume_state=DenoiseState.from_tensors(load_file(str(path))),
                  generator=torch.Generator().manual_seed(999))
    assert resumed.completed and torch.equal(resumed.latents, full.latents)


def test_a_state_without_cache_is_refused_by_a_cached_loop(backbone, prompts, mag_ratios):
    part = run(backbone, prompts, guidance=3.0, steps=STEPS, on_step=lambda i, state: i == 2)
    use_step_cache(backbone.transformer, diffusers_config(settings_for("first-block", mag_ratios), STEPS))
    try:
        with pytest.raises(ValueError, match="without a step cache"):
            run(backbone, prompts, guidance=3.0, steps=STEPS, resume_state=part.state)
    finally:
        use_step_cache(backbone.transformer, None)


def test_render_with_a_cache_resumes_and_the_fingerprint_holds_it(tmp_path):
    from render_helpers import Child, step_of

    scene = write_small_scene(tmp_path / "scene", step_cache={"method": "taylorseer", "interval": 2})
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    assert cli("render", scene, "--out", reference, "--memory", "latent", *SMALL).exit_code == 0
    child = Child(scene, run_dir, "denoise_step=0.5")
    child.wait_for(step_of(1))
    child.proc.send_signal(15)
    assert child.finish() == 75
    saved = [e for e in child.events if e["event"] == "checkpoint"]
    assert saved[-1]["mid_chunk_step"] >= 1  # stopped inside chunk 1, with the cache holding state
    assert cli("render", scene, "--out", run_dir, "--memory", "latent", *SMALL).exit_code == 0
    assert file_hash(run_dir / "video.mp4") == file_hash(reference / "video.mp4")
    config = json.loads((run_dir / "run.json").read_text())["config"]
    assert config["step_cache"] == {"method": "taylorseer", "threshold": None, "interval": 2, "calibration_sha256": None}
    other = cli("render", scene, "--out", run_dir, "--memory", "latent", *SMALL, "--cache", "none")
    assert other.exit_code == 2 and "different settings" in other.stderr and "step_cache" in other.stderr


def test_spec_problems(tmp_path):
    cases = [
        ({"method": "teacache"}, "step_cache.method: must be one of none, first-block, mag, taylorseer"),
        ({"method": "mag"}, "mirage calibrate-cache"),
        ({"method": "taylorseer", "threshold": 0.1}, "step_cache.threshold: is a knob of first-block and mag"),
        ({"method": "first-block", "threshold": 2}, "must be in (0, 1]"),
        ({"method": "mag", "calibration": "nowhere.json"}, "step_cache.calibration: " + str(tmp_path / "s4" / "nowhere.json")
         + ": file not found"),
        ({"method": "mag", "calibration": "/dev/zero"}, "step_cache.calibration: /dev/zero: is a device, expected a regular file"),
    ]
    for k, (section, message) in enumerate(cases):
        scene = write_small_scene(tmp_path / f"s{k}", step_cache=section)
        result = cli("validate", scene)
        assert result.exit_code == 2 and message in result.stderr, (section, result.stderr)


def test_calibrate_cache_then_bench_the_cache(tmp_path, small_scene):
    calibration = tmp_path / "mag.json"
    made = cli("calibrate-cache", small_scene, "--preset", "tiny", "--steps", "6", "--out", calibration)
    assert made.exit_code == 0, made.stderr
    content = json.loads(calibration.read_text())
    assert content["model"] == "preset:tiny" and content["resolution"] == "224x128" and len(content["ratios"]) == 6
    bench = cli("bench", small_scene, "--preset", "tiny", "--steps", "6", "--chunks", "1", "--repeat", "1", "--json",
                "--cache", "mag", "--cache-calibration", calibration, "--cache-threshold", "0.5")
    assert bench.exit_code == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert set(result["runs"]) == {"none", "mag"} and 0 < result["blocks_computed_share"] < 1
    assert result["change"]["max_abs"] > 0 and result["change"]["psnr_db"] > 20  # what the speed costs, measured
    moved = write_small_scene(tmp_path / "wide", resolution="256x128")
    refused = cli("render", moved, "--out", tmp_path / "run", *SMALL, "--steps", "6", "--cache", "mag", "--cache-calibration", calibration)
    assert refused.exit_code == 2 and "was measured for resolution 224x128, this render uses resolution 256x128" in refused.stderr
    assert f"run `mirage calibrate-cache {moved} --resolution 256x128 --out FILE`" in refused.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _calibration(path, **changes):
    content = {"format": "mirage-magcache-calibration", "version": 1, "model": "preset:tiny", "resolution": "224x128", "steps": 3,
               "ratios": [1.0, 0.99, 0.97]}
    content.update(changes)
    path.write_text(json.dumps({key: value for key, value in content.items() if value is not None}))  # None: not recorded
    return path


def test_read_calibration_checks_every_field(tmp_path):
    from mirage_cli.base.errors import InputError
    from mirage_cli.spec.step_cache import read_calibration

    good = read_calibration(_calibration(tmp_path / "good.json"))
    assert good.ratios == (1.0, 0.99, 0.97) and good.steps == 3 and good.model == "preset:tiny" and good.resolution == "224x128"
    assert read_calibration(_calibration(tmp_path / "bare.json", model=None, resolution=None)).model is None
    cases = [
        ({"ratios": [-5, -7], "steps": 2}, "ratios[0]: must be > 0"),
        ({"ratios": [True, False], "steps": 2}, "ratios[0]: expected a number, got bool True"),
        ({"ratios": [1.0, float("nan"), 1.0]}, "ratios[1]: must be finite, got nan"),
        ({"ratios": [1.0, 1.0]}, "steps: says 3 steps but the file holds 2 ratios"),
        ({"steps": 3.0}, "steps: expected the number of denoising steps (an integer), got float 3.0"),
        ({"format": "other"}, "format: is not a MagCache calibration"),
        ({"version": 2}, "version: is 2; this mirage reads version 1"),
        ({"seeds": 1}, "seeds: unknown key (did you mean 'seed'?)"),
    ]
    for changes, message in cases:
        with pytest.raises(InputError) as info:
            read_calibration(_calibration(tmp_path / "bad.json", **changes))
        (problem,) = info.value.problems
        assert problem.file == str(tmp_path / "bad.json") and message in str(problem), (changes, str(problem))
    deep = tmp_path / "deep.json"
    deep.write_text('{"ratios": ' + "[" * 200_000 + "]" * 200_000 + "}")  # RecursionError in the parser
    with pytest.raises(InputError, match="nested deeper than 64 levels"):
        read_calibration(deep)
    deep.write_text('{"ratios": ' + "[" * 100 + "]" * 100 + "}")  # parses: the depth is counted after
    with pytest.raises(InputError, match="nested deeper than 64 levels"):
        read_calibration(deep)


def test_a_calibration_must_fit_the_render(tmp_path):
    """Another step count (diffusers would stretch the curve over the steps without a word), another
    size or another model: refused by validate and by render, naming both values and the command."""
    from mirage_cli.spec.step_cache import StepCacheSettings, calibration_misfit, read_calibration

    measured = read_calibration(_calibration(tmp_path / "mag.json"))
    cache = StepCacheSettings("mag", threshold=0.06, calibration=measured.path, ratios=measured.ratios, measured=measured)
    assert calibration_misfit(cache, steps=3, resolution="224x128", model="preset:tiny") is None
    assert calibration_misfit(cache, steps=3, resolution="224x128") is None  # model not known yet
    misfit = calibration_misfit(cache, steps=2, resolution="256x128", model="someone/model", scene=tmp_path / "scene.yaml")
    assert misfit.field == "step_cache.calibration" and misfit.file == str(measured.path)
    assert misfit.message.startswith("was measured for 3 steps and resolution 224x128 and model 'preset:tiny', this render uses "
                                     "2 steps and resolution 256x128 and model 'someone/model': run `mirage calibrate-cache "
                                     f"{tmp_path / 'scene.yaml'} --steps 2 --resolution 256x128 --out FILE`")
    ten = _calibration(tmp_path / "ten.json", steps=10, ratios=[1.0] * 10)
    scene = write_small_scene(tmp_path / "scene", steps=3, step_cache={"method": "mag", "calibration": str(ten)})
    for args in (("validate", scene), ("render", scene, "--out", tmp_path / "run", *SMALL)):
        refused = cli(*args)
        assert refused.exit_code == 2 and "was measured for 10 steps, this render uses 3 steps" in refused.stderr, refused.stderr
        assert len([line for line in refused.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "run").exists()
    other_model = _calibration(tmp_path / "other.json", model="Wan-AI/Wan2.2-TI2V-5B-Diffusers")
    scene = write_small_scene(tmp_path / "scene2", steps=3, step_cache={"method": "mag", "calibration": str(other_model)})
    refused = cli("validate", scene, "--preset", "tiny")  # the model a render with these flags runs is compared too
    assert refused.exit_code == 2 and "this render uses model 'preset:tiny'" in refused.stderr
    assert cli("validate", scene).exit_code == 0
