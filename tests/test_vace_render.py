"""Renders with trained conditioning (``conditioning.method: vace``) on the tiny preset, end to end:
the VACE and LoRA files are written here with the official code's names and shapes (random values:
no trained weights exist here); everything else is the real pipeline."""

from __future__ import annotations

import json
import signal

import pytest
from render_helpers import SMALL, Child, cli, file_hash, final_checkpoint_tensors, same_tensors, step_of, stopped_render, write_small_scene
from safetensors.torch import save_file
from test_trained_weights import write_vace


def vace_scene(folder, weights, **changes):
    conditioning = {"method": "vace", "vace": str(weights / "vace.safetensors"), "lora": str(weights / "lora.safetensors")}
    return write_small_scene(folder, conditioning=conditioning, **changes)


@pytest.mark.parametrize("memory", ["latent", "rgb"])
def test_a_vace_render_runs_and_says_what_it_used(tmp_path, weights, memory):
    scene = vace_scene(tmp_path / "scene", weights)
    result = cli("render", scene, "--out", tmp_path / "run", "--json", *SMALL, "--memory", memory)
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    recorded = report["config"]["conditioning"]
    assert recorded["method"] == "vace" and recorded["vace_sha256"] == file_hash(weights / "vace.safetensors")
    assert recorded["lora_sha256"] == file_hash(weights / "lora.safetensors") and recorded["lora_scale"] == 1.0
    # the latent memory is projected as the official code trains with (nearest cell); rgb memory has footprints only
    assert recorded["projection"] == {"latent": "nearest", "rgb": "footprint"}[memory]
    assert recorded["sigmas"] == "wan"  # the original Wan2.2 timestep grid, as the official inference
    assert report["config"]["conditioning_files"]["vace"] == str(weights / "vace.safetensors")
    shown = cli("inspect", tmp_path / "run")
    assert f"conditioning      vace (vace {weights / 'vace.safetensors'} sha256 {recorded['vace_sha256'][:12]}" in shown.stdout


def test_a_stopped_vace_render_resumes_to_the_same_bytes(tmp_path, weights):
    scene = vace_scene(tmp_path / "scene", weights)
    whole = tmp_path / "whole"
    assert cli("render", scene, "--out", whole, "--memory", "latent", *SMALL).exit_code == 0
    run = stopped_render(scene, tmp_path / "stopped")  # SIGTERM in chunk 2: a mid-chunk checkpoint
    assert cli("render", scene, "--out", run, "--memory", "latent", *SMALL).exit_code == 0
    assert file_hash(run / "video.mp4") == file_hash(whole / "video.mp4")
    assert same_tensors(final_checkpoint_tensors(run), final_checkpoint_tensors(whole))

    first = tmp_path / "stopped-in-the-first-chunk"  # mid-chunk before any history is recorded
    child = Child(scene, first, "denoise_step=0.5")
    child.wait_for(step_of(0))
    child.proc.send_signal(signal.SIGTERM)
    assert child.finish() == 75
    assert cli("render", scene, "--out", first, "--memory", "latent", *SMALL).exit_code == 0
    assert file_hash(first / "video.mp4") == file_hash(whole / "video.mp4")


def test_vace_inputs_are_checked_before_anything_renders(tmp_path, weights):
    scene = write_small_scene(tmp_path / "a")
    refused = cli("render", scene, "--out", tmp_path / "a-run", "--vace", weights / "vace.safetensors", *SMALL)
    assert refused.exit_code == 2 and "conditioning.vace: VACE weights are used by the trained methods only" in refused.stderr
    missing = cli("render", scene, "--out", tmp_path / "b-run", "--conditioning", "vace", *SMALL)
    assert missing.exit_code == 2 and "method vace needs the VACE weights" in missing.stderr
    bad = tmp_path / "bad.safetensors"
    write_vace(bad, blocks=1, drop=("vace_blocks.0.ffn.2.bias",))
    damaged = cli("render", scene, "--out", tmp_path / "c-run", "--conditioning", "vace", "--vace", bad, *SMALL)
    assert damaged.exit_code == 2 and "missing key: vace_blocks.0.ffn.net.2.bias" in damaged.stderr
    assert str(bad) in damaged.stderr and not (tmp_path / "c-run" / "segments").exists()
    none_memory = cli("render", scene, "--out", tmp_path / "d-run", "--conditioning", "vace", "--vace",
                      weights / "vace.safetensors", "--memory", "none", *SMALL)
    assert none_memory.exit_code == 2 and "use memory.mode latent or rgb" in none_memory.stderr


def test_chunk_0_has_no_references_and_the_next_chunk_has_the_official_history(tmp_path, weights, monkeypatch):
    """As the official inference (mirage_pipeline.py: no references while nothing is generated): chunk 0
    denoises without references or preceding frames; chunk 1 gets references from chunk 0's frames
    (the start frame among them) and its 2 preceding latent frames."""
    import mirage_cli.conditioning.recipes as recipes

    seen = []
    real = recipes.denoise_vace_chunk

    def recording(*args, references, preceding, **kwargs):
        seen.append((references, preceding))
        return real(*args, references=references, preceding=preceding, **kwargs)

    monkeypatch.setattr(recipes, "denoise_vace_chunk", recording)
    scene = vace_scene(tmp_path / "scene", weights)
    assert cli("render", scene, "--out", tmp_path / "run", "--memory", "latent", *SMALL).exit_code == 0
    assert len(seen) == 2
    assert seen[0] == (None, None)
    references, preceding = seen[1]
    assert references is not None and references.shape[2] >= 1 and preceding.shape[2] == 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_damaged_weight_values_end_with_exit_2_before_any_denoising(tmp_path, weights, value):
    from safetensors.torch import load_file

    bad = tmp_path / "vace.safetensors"
    tensors = load_file(str(weights / "vace.safetensors"))
    tensors["vace_blocks.0.after_proj.weight"].fill_(value)
    save_file(tensors, str(bad))
    scene = write_small_scene(tmp_path / "scene", conditioning={"method": "vace", "vace": str(bad)})
    result = cli("render", scene, "--out", tmp_path / "run", *SMALL)
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}") and "conditioning.vace" in line and "vace_blocks.0.after_proj.weight" in line
    assert not (tmp_path / "run" / "segments").exists() or not any((tmp_path / "run" / "segments").iterdir())


def test_changing_the_trained_weights_is_refused_on_resume(tmp_path, weights):
    scene = vace_scene(tmp_path / "scene", weights)
    run = stopped_render(scene, tmp_path / "run")
    changed = cli("render", scene, "--out", run, "--memory", "latent", "--lora-scale", "0.5", *SMALL)
    assert changed.exit_code == 2 and "conditioning" in changed.stderr


def test_a_lora_of_rank_0_is_refused_before_the_run_directory_exists(tmp_path, weights):
    from safetensors.torch import load_file

    lora = {k: v[:0] if "lora_A" in k else v[:, :0] for k, v in load_file(str(weights / "lora.safetensors")).items()}
    save_file(lora, str(tmp_path / "lora.safetensors"))
    scene = write_small_scene(tmp_path / "scene", conditioning={"method": "vace", "vace": str(weights / "vace.safetensors"),
                                                                 "lora": str(tmp_path / "lora.safetensors")})
    result = cli("render", scene, "--out", tmp_path / "run", *SMALL)
    (line,) = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and "conditioning.lora: wrong ranks:" in line and "rank 0: a LoRA needs rank 1 or more" in line
    assert not (tmp_path / "run").exists()  # no run directory, no crash file in it


def test_a_vace_render_under_the_few_step_sampler_resumes_to_the_same_bytes(tmp_path, weights):
    scene = vace_scene(tmp_path / "scene", weights, sampler="dmd")  # SMALL's 3 steps: the 3 timesteps
    whole = tmp_path / "whole"
    assert cli("render", scene, "--out", whole, "--memory", "latent", *SMALL).exit_code == 0
    config = json.loads((whole / "report.json").read_text())["config"]
    assert config["sampler"] == {"name": "dmd", "timesteps": [1000, 757, 522], "shift": 8.0} and config["guidance"] == 1.0
    run = stopped_render(scene, tmp_path / "stopped")  # SIGTERM in chunk 2: a mid-chunk checkpoint
    assert cli("render", scene, "--out", run, "--memory", "latent", *SMALL).exit_code == 0
    assert file_hash(run / "video.mp4") == file_hash(whole / "video.mp4")
    unipc = tmp_path / "unipc"
    assert cli("render", vace_scene(tmp_path / "unipc-scene", weights), "--out", unipc, "--memory", "latent", *SMALL).exit_code == 0
    assert file_hash(unipc / "video.mp4") != file_hash(whole / "video.mp4")
