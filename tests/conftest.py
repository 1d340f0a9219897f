"""Shared test setup: offline, CPU only, deterministic."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def backbone():
    """The tiny preset's real Wan2.2 components (random weights), float32 on the CPU, one per test module."""
    from mirage_cli.backbone import load_backbone
    from mirage_cli.base.options import BackboneOptions

    return load_backbone(options=BackboneOptions(preset="tiny", device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def prompts(backbone):
    """(prompt, negative prompt) embeddings of one prompt under ``backbone``."""
    return backbone.encode_prompt("a quiet room with a window", None)


@pytest.fixture(scope="session")
def tiny_depth_dir(tmp_path_factory):
    """A tiny random DepthAnythingForDepthEstimation + processor written with save_pretrained.

    Real classes, random weights (no hub: the real checkpoints cannot be downloaded here).
    """
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        image_size=56, patch_size=14, out_features=["stage1", "stage2"], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, fusion_hidden_size=16, head_hidden_size=8,
        neck_hidden_sizes=[8, 16], reassemble_factors=[2, 1], depth_estimation_type="metric", max_depth=10,
    )
    d = tmp_path_factory.mktemp("tiny_depth")
    DepthAnythingForDepthEstimation(config).save_pretrained(d)
    DPTImageProcessor(size={"height": 56, "width": 56}).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """The example room, small (tests/render_helpers.py)."""
    from render_helpers import write_small_scene

    return write_small_scene(tmp_path_factory.mktemp("small_scene"))


@pytest.fixture(scope="session")
def renders(tmp_path_factory, small_scene):
    """One small render per memory mode, in-process through the real CLI: {mode: (run_dir, summary)}.

    Session scope: the render, resume and report tests read these instead of rendering again.
    """
    import json

    from render_helpers import SMALL, cli

    base = tmp_path_factory.mktemp("renders")
    out = {}
    for mode in ("latent", "rgb", "none"):
        run = base / mode
        result = cli("render", small_scene, "--out", run, "--memory", mode, "--json", *SMALL)
        assert result.exit_code == 0, result.stderr
        out[mode] = (run, json.loads(result.stdout))
    return out


@pytest.fixture(scope="session")
def stopped_run(tmp_path_factory, small_scene):
    """A small render stopped by SIGTERM inside its second chunk (render_helpers.stopped_render)."""
    from render_helpers import stopped_render

    return stopped_render(small_scene, tmp_path_factory.mktemp("stopped") / "run")


LONGEST_FILES_FIRST = ("test_eval.py", "test_vram.py", "test_batch.py", "test_resume.py", "test_stop_signals.py", "test_parallel.py")
"""``make test`` gives whole files to the cores (pytest-xdist ``--dist loadfile``, so a file's shared
fixtures are built once); the longest files start first so no core is left with one at the end."""


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A folder with ``vace.safetensors`` (1 VACE block, trained-like non-zero outputs) and ``lora.safetensors``
    (the tiny preset's 2 layers), in the official names, random values: the trained-conditioning renders' files."""
    from safetensors.torch import save_file
    from test_trained_weights import official_lora, write_vace

    folder = tmp_path_factory.mktemp("weights")
    write_vace(folder / "vace.safetensors", blocks=1, zero_after=False)
    save_file(official_lora(blocks=2), str(folder / "lora.safetensors"))
    return folder
