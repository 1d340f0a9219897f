"""What changes pixels is fingerprinted; what cannot run here is refused before any weights load.

Real renders of the small scene through the real CLI. A checkpoint saved on a GPU cannot be made
here, so one test turns a real CPU mid-chunk checkpoint into what a CUDA one holds (a 16-byte
Philox generator state instead of the CPU's Mersenne Twister state) and reseals its manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from render_helpers import cli, render_args
from test_damaged_runs import newest

from mirage_cli.base.video import to_uint8_frames
from mirage_cli.rundir.checkpoint import manifest_checksum


@pytest.mark.parametrize("shape", [(3, 1, 2, 2), (3, 5, 16, 24), (3, 2, 7, 9)])
def test_uint8_conversion_of_a_tensor_matches_the_numpy_reference(shape):
    torch.manual_seed(0)
    pixels = torch.randn(shape) * 1.2  # beyond [-1, 1] too: clamped the same way
    pixels[0, 0, 0, 0] = 1.0
    pixels[1, 0, 0, 0] = -1.0
    assert np.array_equal(to_uint8_frames(pixels), to_uint8_frames(pixels.numpy()))


def test_vae_tiling_changes_the_fingerprint(tmp_path, small_scene, renders):
    run = tmp_path / "run"
    shutil.copytree(renders["latent"][0], run)
    result = cli(*render_args(small_scene, run), "--vae-tiling")
    assert result.exit_code == 2
    assert "different settings (vae_tiling)" in result.stderr and "--restart" in result.stderr


@pytest.mark.parametrize("backend", ["_native_efficient", "_native_cudnn", "flash", "xformers"])
def test_attention_backend_that_cannot_run_here_is_refused_before_loading(tmp_path, small_scene, backend, monkeypatch):
    from mirage_cli.render.session import RenderSession

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(RenderSession, "load_components", never)
    result = cli(*render_args(small_scene, tmp_path / "run"), "--device", "cpu", "--attention-backend", backend)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"error: attention-backend: attention backend {backend!r} cannot run on cpu")


def test_a_gpu_mid_chunk_checkpoint_does_not_resume_on_the_cpu(tmp_path, small_scene, stopped_run):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    ckpt = newest(run)
    denoise = load_file(ckpt / "denoise.safetensors")
    denoise["generator_state"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA Philox state (seed, offset)
    save_file(denoise, ckpt / "denoise.safetensors")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    data = (ckpt / "denoise.safetensors").read_bytes()
    manifest["files"]["denoise.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest["checksum"] = manifest_checksum(manifest)
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    result = cli(*render_args(small_scene, run), "--device", "cpu")
    assert result.exit_code == 2, result.stderr
    assert f"{ckpt.name} was saved on cuda" in result.stderr and "--device cuda" in result.stderr and str(ckpt) in result.stderr
